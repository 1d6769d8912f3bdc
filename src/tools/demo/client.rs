//! The demo's HTTP client: Key Protect calls through failway (with the
//! `bluemix-instance` and bearer headers every call needs), and failway's
//! admin API (`/status`, operator actions).
//!
//! Each request has a deadline, so a hung step fails the demo instead of
//! stalling it. Bodies are collected whole: the demo's answers are small.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// How long one request may take before the step fails.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("invalid request to {url}: {source}")]
    Build {
        url: String,
        #[source]
        source: http::Error,
    },
    #[error("{method} {url}: no answer: {message}")]
    Failed {
        method: Method,
        url: String,
        message: String,
    },
    #[error("{method} {url}: no answer within {REQUEST_DEADLINE:?}")]
    Timeout { method: Method, url: String },
}

/// One collected answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The region failway forwarded to, or `none` for its own answers.
    pub fn region(&self) -> &str {
        self.header("failway-region").unwrap_or("none")
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client bound to one failway (proxy and admin URLs) and one instance.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    proxy: String,
    admin: String,
    instance: String,
    token: String,
}

impl Http {
    pub fn new(proxy: String, admin: String, instance: String, token: String) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            proxy,
            admin,
            instance,
            token,
        }
    }

    /// Sends one request and collects the answer.
    pub async fn send(
        &self,
        method: Method,
        url: String,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Reply, RequestError> {
        let mut req = Request::builder().method(method.clone()).uri(&url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|source| RequestError::Build {
                url: url.clone(),
                source,
            })?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(REQUEST_DEADLINE, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(message)) => Err(RequestError::Failed {
                method,
                url,
                message,
            }),
            Err(_) => Err(RequestError::Timeout { method, url }),
        }
    }

    /// A Key Protect call through failway; `path` starts with `/api/v2/`.
    pub async fn kp(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, RequestError> {
        let auth = format!("Bearer {}", self.token);
        let headers = [
            ("bluemix-instance", self.instance.as_str()),
            ("authorization", auth.as_str()),
            ("accept", "application/json"),
        ];
        self.send(method, format!("{}{path}", self.proxy), &headers, body)
            .await
    }

    /// `GET /status` of failway's admin API.
    pub async fn status(&self) -> Result<Reply, RequestError> {
        self.send(Method::GET, format!("{}/status", self.admin), &[], None)
            .await
    }

    /// `POST /admin/{action}` with a reason and `force`.
    pub async fn admin(
        &self,
        action: &str,
        reason: &str,
        force: bool,
    ) -> Result<Reply, RequestError> {
        let mut body = json!({ "reason": reason });
        if force {
            body["force"] = Value::Bool(true);
        }
        self.send(
            Method::POST,
            format!("{}/admin/{action}", self.admin),
            &[],
            Some(body),
        )
        .await
    }
}

/// The body of a create-key request for one key.
pub fn key_body(name: &str, root: bool) -> Value {
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": !root}]
    })
}
