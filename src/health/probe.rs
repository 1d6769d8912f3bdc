//! One HTTP health probe of a region: `health.method` `health.path` with the
//! configured headers (and an `Authorization` read from
//! `health.authorization_file`, re-read when the file changes), bounded by
//! `health.timeout`, judged by `health.healthy_statuses`.
//!
//! Probes go through the region's pooled client, so a probe also keeps a
//! warm connection ready for traffic. The token is never logged; failure
//! reasons name only the status or the kind of error.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;

use crate::config::{HealthConfig, StatusRanges};
use crate::upstream::body::UpstreamBody;
use crate::upstream::client::{Upstream, UpstreamFailure};
use crate::watched_file::Cached;

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub success: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// failway could not make the probe (out of file descriptors, socket
    /// buffers or memory): it says nothing about the region.
    pub local: bool,
}

/// A probe's fixed parts for one region.
pub struct Probe {
    method: Method,
    path: http::uri::PathAndQuery,
    headers: HeaderMap,
    timeout: Duration,
    healthy: StatusRanges,
    token: Option<TokenFile>,
}

/// `health.authorization_file` (or another key's token file), read again
/// when it changes (Kubernetes rotates projected tokens in place). A bare
/// token is sent as `Bearer`. Errors name the key and the file, never the
/// token.
pub(crate) struct TokenFile {
    file: Cached<HeaderValue>,
    key: &'static str,
}

impl TokenFile {
    /// `key` is the config key that named `path`, for errors.
    pub(crate) fn new(path: std::path::PathBuf, key: &'static str) -> TokenFile {
        TokenFile {
            file: Cached::new(path),
            key,
        }
    }

    pub(crate) fn value(&self) -> Result<HeaderValue, String> {
        let key = self.key;
        self.file.get(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{key} {}: {e}", path.display()))?;
            let token = text.trim();
            let value = if token.contains(' ') {
                token.to_owned()
            } else {
                format!("Bearer {token}")
            };
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| format!("{key} {}: not a valid header value", path.display()))?;
            value.set_sensitive(true);
            Ok(value)
        })
    }
}

impl Probe {
    /// `headers` are the configured probe headers, already mapped for the
    /// region (the replica gets its own instance id).
    pub fn new(cfg: &HealthConfig, headers: HeaderMap) -> Probe {
        let path = cfg
            .path
            .parse()
            .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/"));
        Probe {
            method: cfg.method.clone(),
            path,
            headers,
            timeout: cfg.timeout,
            healthy: cfg.healthy_statuses.clone(),
            token: cfg
                .authorization_file
                .clone()
                .map(|path| TokenFile::new(path, "health.authorization_file")),
        }
    }

    pub async fn run(&self, up: &Upstream) -> ProbeResult {
        let fail = |error: String, status: Option<u16>| ProbeResult {
            success: false,
            status,
            error: Some(error),
            local: false,
        };
        let uri = match Uri::builder()
            .scheme(up.scheme.clone())
            .authority(up.authority.clone())
            .path_and_query(self.path.clone())
            .build()
        {
            Ok(u) => u,
            Err(e) => return fail(format!("invalid probe URI: {e}"), None),
        };
        let mut req = Request::new(UpstreamBody::buffered(Bytes::new(), None));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        headers.clone_from(&self.headers);
        headers.insert(http::header::HOST, up.host.clone());
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("failway-health/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(token) = &self.token {
            match token.value() {
                Ok(v) => {
                    headers.insert(http::header::AUTHORIZATION, v);
                }
                Err(e) => return fail(e, None),
            }
        }
        let exchange = async {
            let resp = up.request(req).await?;
            let status = resp.status().as_u16();
            // Read (a bounded amount of) the body so the connection is reusable.
            let mut body = resp.into_body();
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        read += f.data_ref().map_or(0, Bytes::len);
                        if read > 64 * 1024 {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            Ok::<u16, crate::upstream::client::UpstreamError>(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => fail(format!("timed out after {:?}", self.timeout), None),
            Ok(Err(e)) => {
                let kind = match UpstreamFailure::classify(&e) {
                    UpstreamFailure::LocalResources(k) => {
                        let why = format!("not probed: failway ran out of {}", k.as_str());
                        return ProbeResult {
                            local: true,
                            ..fail(why, None)
                        };
                    }
                    // Probes do not wait for a connection slot; kept apart
                    // from the region's faults all the same.
                    UpstreamFailure::Busy => {
                        return ProbeResult {
                            local: true,
                            ..fail("not probed: no connection free".to_owned(), None)
                        };
                    }
                    UpstreamFailure::ConnectRefused => "connection refused or failed",
                    UpstreamFailure::ConnectTimeout => "connect timed out",
                    UpstreamFailure::TlsHandshake => "TLS handshake failed",
                    UpstreamFailure::Reset
                    | UpstreamFailure::RefusedStream
                    | UpstreamFailure::GoAway => "connection reset or closed",
                    UpstreamFailure::Malformed => "malformed response",
                    UpstreamFailure::RequestBody => "request failed",
                };
                fail(kind.to_owned(), None)
            }
            Ok(Ok(status)) if self.healthy.contains(status) => ProbeResult {
                success: true,
                status: Some(status),
                error: None,
                local: false,
            },
            Ok(Ok(status)) => fail(
                format!("status {status} is not in healthy_statuses"),
                Some(status),
            ),
        }
    }
}
