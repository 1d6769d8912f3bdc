//! The one place where every error failway answers itself becomes an HTTP
//! response: [`ProxyError`] names what went wrong, [`ProxyError::status`] and
//! [`ProxyError::code`] map it to a status and a stable machine-readable code,
//! and [`render`] writes the body in the classification profile's error format
//! (docs/design.md §6): Key Protect's `application/vnd.ibm.kms.error+json` for the
//! `key-protect` profile, RFC 9457 `application/problem+json` otherwise.
//!
//! It does not decide *whether* something is an error (the data path does) and
//! never includes request data other than the correlation id: no path, no
//! header value, no body, since those may carry key material or tokens.

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::config::Profile;
use crate::health::passive::Outcome;
use crate::retry::Failure;
use crate::upstream::client::UpstreamFailure;

/// Where a failure came from, for logs and metrics (pingora's habit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something failway refuses.
    Downstream,
    /// The upstream region failed or misbehaved.
    Upstream,
    /// failway itself refused or could not serve (limits, shutdown).
    Internal,
}

/// Every error failway generates itself, as a closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the request is malformed: {0}")]
    BadRequest(&'static str),
    #[error("the request headers exceed {limit} bytes")]
    HeadersTooLarge { limit: u64 },
    #[error("the request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("the request body exceeds {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error(
        "the request body did not arrive in time (it stalled, or outlasted the request timeout)"
    )]
    BodyTimeout,
    #[error("{0} is not supported by this proxy")]
    NotImplemented(&'static str),
    #[error("the upstream region could not be reached")]
    UpstreamConnect,
    #[error("the upstream region did not answer in time")]
    UpstreamTimeout,
    #[error("the upstream region closed or reset the connection before answering")]
    UpstreamReset,
    #[error("the upstream region sent a malformed response")]
    UpstreamProtocol,
    #[error("the upstream region's TLS handshake failed")]
    UpstreamTls,
    #[error("the request did not complete within the request timeout")]
    RequestTimeout,
    #[error("no region is available to serve the request")]
    NoHealthyRegion,
    #[error("the {0} region is down, and writes in the current failover mode go only there")]
    RegionDown(&'static str),
    #[error("the proxy is shutting down")]
    ShuttingDown,
    #[error("the failover mode changed while the request arrived, and writes no longer go where it was routed; nothing was sent, it can be retried")]
    ModeChanged,
    #[error("every connection to the region that upstreams.*.max_connections allows stayed busy; nothing was sent, it can be retried")]
    UpstreamBusy,
    #[error("the proxy ran out of file descriptors, socket buffers or memory for a connection to the region; nothing was sent, it can be retried")]
    LocalResources,
}

/// What one failed upstream attempt means, for each party that asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// The region failed this attempt.
    Upstream {
        /// For the retry rules (`retry::decide`).
        failure: Failure,
        /// For passive health: what the region did.
        outcome: Outcome,
        /// For the client, when nothing else is tried.
        error: ProxyError,
    },
    /// The client's request body failed: nobody's fault upstream, never
    /// retried, never counted against a region.
    Client,
    /// failway's own limit or resources stopped the attempt before it was
    /// sent: answered with this error, never retried (a retry would meet
    /// the same shortage), never counted against a region.
    Local(ProxyError),
}

/// The one table from an upstream failure to its meaning.
pub fn judge(failure: UpstreamFailure) -> Judged {
    use UpstreamFailure as U;
    let (failure, outcome, error) = match failure {
        U::ConnectRefused => (
            Failure::ConnectRefused,
            Outcome::ConnectError,
            ProxyError::UpstreamConnect,
        ),
        U::ConnectTimeout => (
            Failure::ConnectTimeout,
            Outcome::Timeout,
            ProxyError::UpstreamTimeout,
        ),
        U::TlsHandshake => (
            Failure::TlsHandshake,
            Outcome::ConnectError,
            ProxyError::UpstreamTls,
        ),
        U::RefusedStream => (
            Failure::RefusedStream,
            Outcome::Reset,
            ProxyError::UpstreamReset,
        ),
        U::GoAway => (
            Failure::GoAwayNotProcessed,
            Outcome::Reset,
            ProxyError::UpstreamReset,
        ),
        U::Reset => (
            Failure::ResetAfterSend,
            Outcome::Reset,
            ProxyError::UpstreamReset,
        ),
        U::Malformed => (
            Failure::MalformedResponse,
            Outcome::Status(502),
            ProxyError::UpstreamProtocol,
        ),
        U::RequestBody => return Judged::Client,
        U::Busy => return Judged::Local(ProxyError::UpstreamBusy),
        U::LocalResources(_) => return Judged::Local(ProxyError::LocalResources),
    };
    Judged::Upstream {
        failure,
        outcome,
        error,
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge { .. } | ProxyError::TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::UpstreamConnect
            | ProxyError::UpstreamReset
            | ProxyError::UpstreamProtocol
            | ProxyError::UpstreamTls => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout | ProxyError::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoHealthyRegion
            | ProxyError::RegionDown(_)
            | ProxyError::ShuttingDown
            | ProxyError::ModeChanged
            | ProxyError::UpstreamBusy
            | ProxyError::LocalResources => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable code, documented in the README; clients and alerts match on it.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "FAILWAY_BAD_REQUEST_ERR",
            ProxyError::HeadersTooLarge { .. } => "FAILWAY_HEADERS_TOO_LARGE_ERR",
            ProxyError::TooManyHeaders { .. } => "FAILWAY_TOO_MANY_HEADERS_ERR",
            ProxyError::BodyTooLarge { .. } => "FAILWAY_BODY_TOO_LARGE_ERR",
            ProxyError::BodyTimeout => "FAILWAY_BODY_TIMEOUT_ERR",
            ProxyError::NotImplemented(_) => "FAILWAY_NOT_IMPLEMENTED_ERR",
            ProxyError::UpstreamConnect => "FAILWAY_UPSTREAM_CONNECT_ERR",
            ProxyError::UpstreamTimeout => "FAILWAY_UPSTREAM_TIMEOUT_ERR",
            ProxyError::UpstreamReset => "FAILWAY_UPSTREAM_RESET_ERR",
            ProxyError::UpstreamProtocol => "FAILWAY_UPSTREAM_PROTOCOL_ERR",
            ProxyError::UpstreamTls => "FAILWAY_UPSTREAM_TLS_ERR",
            ProxyError::RequestTimeout => "FAILWAY_REQUEST_TIMEOUT_ERR",
            ProxyError::NoHealthyRegion => "FAILWAY_NO_HEALTHY_REGION_ERR",
            ProxyError::RegionDown(_) => "FAILWAY_REGION_DOWN_ERR",
            ProxyError::ShuttingDown => "FAILWAY_SHUTTING_DOWN_ERR",
            ProxyError::ModeChanged => "FAILWAY_MODE_CHANGED_ERR",
            ProxyError::UpstreamBusy => "FAILWAY_UPSTREAM_BUSY_ERR",
            ProxyError::LocalResources => "FAILWAY_LOCAL_RESOURCES_ERR",
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::TooManyHeaders { .. }
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BodyTimeout
            | ProxyError::NotImplemented(_) => Origin::Downstream,
            ProxyError::UpstreamConnect
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamReset
            | ProxyError::UpstreamProtocol
            | ProxyError::UpstreamTls => Origin::Upstream,
            ProxyError::RequestTimeout
            | ProxyError::NoHealthyRegion
            | ProxyError::RegionDown(_)
            | ProxyError::ShuttingDown
            | ProxyError::ModeChanged
            | ProxyError::UpstreamBusy
            | ProxyError::LocalResources => Origin::Internal,
        }
    }

    /// Errors after which the client connection cannot be trusted to be in
    /// sync (unread or half-read body, broken framing): the response asks to
    /// close it.
    pub fn closes_connection(&self) -> bool {
        self.origin() == Origin::Downstream
    }
}

/// Extra details of a generated error that are not part of its kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct ErrorContext<'a> {
    /// The request's correlation id, echoed in the body and a header.
    pub correlation_id: Option<&'a str>,
}

pub const KP_ERROR_CONTENT_TYPE: &str = "application/vnd.ibm.kms.error+json";
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
const KP_MORE_INFO: &str = "https://cloud.ibm.com/apidocs/key-protect";

/// Renders `err` in `profile`'s error format.
pub fn render(profile: Profile, err: &ProxyError, ctx: ErrorContext<'_>) -> Response<Full<Bytes>> {
    let status = err.status();
    let message = err.to_string();
    render_parts(
        profile,
        status,
        err.code(),
        &message,
        ctx,
        err.closes_connection(),
    )
}

/// Renders any failway-generated error from its parts; the write-blocking
/// refusal uses it with its own code and message.
pub fn render_parts(
    profile: Profile,
    status: StatusCode,
    code: &str,
    message: &str,
    ctx: ErrorContext<'_>,
    close: bool,
) -> Response<Full<Bytes>> {
    let (content_type, body) = match profile {
        Profile::KeyProtect => (KP_ERROR_CONTENT_TYPE, kp_body(status, code, message, ctx)),
        Profile::HttpMethods => (
            PROBLEM_CONTENT_TYPE,
            problem_body(status, code, message, ctx),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(id) = ctx
        .correlation_id
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        headers.insert(super::headers::CORRELATION_ID, id);
    }
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn kp_body(status: StatusCode, code: &str, message: &str, ctx: ErrorContext<'_>) -> Vec<u8> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut body = serde_json::json!({
        "metadata": {
            "collectionType": KP_ERROR_CONTENT_TYPE,
            "collectionTotal": 1,
        },
        "resources": [{
            "errorMsg": format!("{reason}: {message}"),
            "reasons": [{
                "code": code,
                "message": message,
                "status": status.as_u16(),
                "moreInfo": KP_MORE_INFO,
            }],
        }],
        // The Python SDK 3.x reads only a top-level `message`.
        "message": message,
    });
    if let Some(id) = ctx.correlation_id {
        body["correlationId"] = serde_json::Value::from(id);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

fn problem_body(status: StatusCode, code: &str, message: &str, ctx: ErrorContext<'_>) -> Vec<u8> {
    let mut body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": message,
        "code": code,
    });
    if let Some(id) = ctx.correlation_id {
        body["correlation_id"] = serde_json::Value::from(id);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn key_protect_format_has_every_field_the_clients_read() {
        let resp = render(
            Profile::KeyProtect,
            &ProxyError::UpstreamConnect,
            ErrorContext {
                correlation_id: Some("abc-123"),
            },
        );
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.headers()[CONTENT_TYPE], KP_ERROR_CONTENT_TYPE);
        assert_eq!(resp.headers()["correlation-id"], "abc-123");
        let v = body_json(resp).await;
        assert_eq!(v["metadata"]["collectionType"], KP_ERROR_CONTENT_TYPE);
        assert_eq!(v["metadata"]["collectionTotal"], 1);
        let reason = &v["resources"][0]["reasons"][0];
        assert_eq!(reason["code"], "FAILWAY_UPSTREAM_CONNECT_ERR");
        assert_eq!(reason["status"], 502);
        assert!(v["resources"][0]["errorMsg"]
            .as_str()
            .unwrap()
            .starts_with("Bad Gateway: "));
        assert_eq!(v["message"], "the upstream region could not be reached");
        assert_eq!(v["correlationId"], "abc-123");
    }

    #[tokio::test]
    async fn problem_json_for_http_methods() {
        let resp = render(
            Profile::HttpMethods,
            &ProxyError::BodyTooLarge { limit: 10 },
            ErrorContext::default(),
        );
        assert_eq!(resp.status(), 413);
        assert_eq!(resp.headers()[CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
        assert_eq!(resp.headers()[CONNECTION], "close");
        let v = body_json(resp).await;
        assert_eq!(v["status"], 413);
        assert_eq!(v["code"], "FAILWAY_BODY_TOO_LARGE_ERR");
        assert_eq!(v["title"], "Payload Too Large");
    }
}
