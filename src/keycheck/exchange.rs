//! The Key Protect calls of a check, sent straight to a region's pooled
//! client (never through the proxy service, so they are no client traffic:
//! not in `failway_requests_total`, not retried, not routed by the mode):
//! `POST /api/v2/keys/{id}/actions/wrap` and `.../unwrap` in the official
//! shape (`{"plaintext", "aad"}` -> `{"ciphertext", "keyVersion": {"id"}}`),
//! and `GET /api/v2/keys/{id}/metadata` for the current version.
//!
//! Bodies carry key material: they are never logged, and an error keeps
//! only the status and Key Protect's reason code.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::upstream::body::UpstreamBody;
use crate::upstream::client::RequestBody;
use crate::upstream::client::Upstream;

/// Bodies of wrap, unwrap and metadata are small; a larger one is cut off.
const MAX_BODY: usize = 64 * 1024;

/// One region as the check speaks to it.
pub struct Side {
    pub upstream: std::sync::Arc<Upstream>,
    /// `bluemix-instance` for this region.
    pub instance: Option<HeaderValue>,
}

/// An answer: its status and JSON body (`Null` when not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// Key Protect's reason code of an error answer, if it gave one.
    pub fn error_code(&self) -> Option<String> {
        self.body["resources"][0]["reasons"][0]["code"]
            .as_str()
            .map(str::to_owned)
    }

    /// A base64 field of the first resource (or the top level), decoded.
    pub fn bytes_field(&self, name: &str) -> Option<Vec<u8>> {
        let v = self.body["resources"][0][name]
            .as_str()
            .or_else(|| self.body[name].as_str())?;
        STANDARD.decode(v).ok()
    }

    /// `keyVersion.id` of the first resource (or the top level).
    pub fn key_version(&self) -> Option<String> {
        let r = &self.body["resources"][0]["keyVersion"]["id"];
        r.as_str()
            .or_else(|| self.body["keyVersion"]["id"].as_str())
            .map(str::to_owned)
    }
}

/// The request could not be made or answered: the region is taken as down.
#[derive(Debug)]
pub struct Unreachable;

impl Side {
    pub async fn wrap(
        &self,
        key: &str,
        auth: Option<&HeaderValue>,
        plaintext: &[u8],
        aad: &str,
        timeout: Duration,
    ) -> Result<Answer, Unreachable> {
        let body = json!({"plaintext": STANDARD.encode(plaintext), "aad": [aad]});
        let path = format!("/api/v2/keys/{key}/actions/wrap");
        self.call(Method::POST, &path, auth, Some(body), timeout)
            .await
    }

    pub async fn unwrap(
        &self,
        key: &str,
        auth: Option<&HeaderValue>,
        ciphertext: &[u8],
        aad: &str,
        timeout: Duration,
    ) -> Result<Answer, Unreachable> {
        let body = json!({"ciphertext": STANDARD.encode(ciphertext), "aad": [aad]});
        let path = format!("/api/v2/keys/{key}/actions/unwrap");
        self.call(Method::POST, &path, auth, Some(body), timeout)
            .await
    }

    pub async fn metadata(
        &self,
        key: &str,
        auth: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Result<Answer, Unreachable> {
        let path = format!("/api/v2/keys/{key}/metadata");
        self.call(Method::GET, &path, auth, None, timeout).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Answer, Unreachable> {
        let req = self.request(method, path, auth, body)?;
        let exchange = async {
            let resp = self.upstream.request(req).await.map_err(|_| Unreachable)?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| Unreachable)?;
                if let Some(d) = frame.data_ref() {
                    buf.extend_from_slice(d);
                    if buf.len() > MAX_BODY {
                        break;
                    }
                }
            }
            let body = serde_json::from_slice(&buf).unwrap_or(Value::Null);
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Unreachable)?
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Option<Value>,
    ) -> Result<Request<RequestBody>, Unreachable> {
        let up = &self.upstream;
        let uri = Uri::builder()
            .scheme(up.scheme.clone())
            .authority(up.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| Unreachable)?;
        let data = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let mut req = Request::new(UpstreamBody::buffered(data, None));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(http::header::HOST, up.host.clone());
        h.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("failway-keycheck/", env!("CARGO_PKG_VERSION"))),
        );
        h.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(i) = &self.instance {
            h.insert("bluemix-instance", i.clone());
        }
        if let Some(a) = auth {
            h.insert(http::header::AUTHORIZATION, a.clone());
        }
        Ok(req)
    }
}
