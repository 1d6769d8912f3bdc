//! Answers failway makes itself instead of forwarding: errors
//! ([`ProxyError`]) and refused writes. Rendered in the profile's error
//! format with the headers docs/design.md §6 specifies (`failway-mode`,
//! `failway-writes-enabled-at`, `Retry-After` only with 503/429,
//! `failway-outcome: unknown`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::error::{self, ErrorContext, ProxyError};
use super::headers::{FAILWAY_MODE, FAILWAY_OUTCOME};
use super::pick::Unrouted;
use super::response::{AccessLog, ResponseBody};
use super::service::Service;
use super::{ConnInfo, Proxy, Settings};
use crate::failover::machine::Mode;
use crate::failover::BlockReason;

const FAILWAY_WRITES_ENABLED_AT: HeaderName = HeaderName::from_static("failway-writes-enabled-at");

/// Why failway answers a request itself.
#[derive(Debug, Clone)]
pub enum Refusal {
    Error {
        error: ProxyError,
        /// A write's bytes reached the upstream and no trustworthy answer
        /// came back: it may or may not have been applied.
        outcome_unknown: bool,
    },
    WriteBlocked {
        mode: Mode,
        deadline: Option<SystemTime>,
        reason: BlockReason,
        /// The request body was not read: the connection must close.
        close: bool,
    },
}

/// The refusal of a write during a drill: it says so, and when it ends.
fn drill_message(ends_at: Option<std::time::SystemTime>) -> String {
    let when = ends_at.map_or_else(String::new, |t| {
        format!(
            " The drill ends at {}.",
            humantime::format_rfc3339_seconds(t)
        )
    });
    format!(
        "A failover drill is under way: the service rehearses read-only failover to its replica region, so writes are refused and were not applied. Reads keep working.{when}"
    )
}

fn seconds(d: Duration) -> HeaderValue {
    HeaderValue::from(d.as_secs_f64().ceil().max(1.0) as u64)
}

impl Proxy {
    pub(super) fn render_refusal(
        &self,
        svc: &Service,
        s: &Settings,
        refusal: &Refusal,
        correlation_id: &HeaderValue,
    ) -> Response<Full<Bytes>> {
        let ctx = ErrorContext {
            correlation_id: correlation_id.to_str().ok(),
        };
        match refusal {
            Refusal::Error {
                error,
                outcome_unknown,
            } => {
                let cid = ctx.correlation_id.unwrap_or("-");
                match error.origin() {
                    error::Origin::Upstream => {
                        tracing::warn!(
                            code = error.code(),
                            correlation_id = cid,
                            outcome_unknown,
                            "{error}"
                        )
                    }
                    _ => tracing::debug!(code = error.code(), correlation_id = cid, "{error}"),
                }
                let mut resp = error::render(s.profile, error, ctx);
                if *outcome_unknown {
                    resp.headers_mut()
                        .insert(FAILWAY_OUTCOME, HeaderValue::from_static("unknown"));
                }
                if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
                    resp.headers_mut()
                        .insert(RETRY_AFTER, seconds(s.unavailable_retry_after));
                }
                resp
            }
            Refusal::WriteBlocked {
                mode,
                deadline,
                reason,
                close,
            } => {
                svc.failover().metrics().write_blocked(*reason);
                let (status, code, message) = match reason {
                    BlockReason::StatePersistFailed => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "FAILWAY_STATE_PERSIST_ERR",
                        "The write was not forwarded: failway could not persist the replica-writes latch. Reads keep working.".to_owned(),
                    ),
                    BlockReason::ReadOnly if svc.failover().snapshot().drill.is_some() => {
                        let ends_at = svc.failover().snapshot().drill.as_ref().map(|d| d.ends_at);
                        (s.blocked_write_status, "FAILWAY_READ_ONLY_FAILOVER_ERR", drill_message(ends_at))
                    }
                    _ => {
                        let when = match deadline {
                            Some(d) => format!(
                                "Writes are expected back at {} (earlier if an operator enables them).",
                                humantime::format_rfc3339_seconds(*d)
                            ),
                            None => "Writes come back when an operator enables them.".to_owned(),
                        };
                        (
                            s.blocked_write_status,
                            "FAILWAY_READ_ONLY_FAILOVER_ERR",
                            format!(
                                "The service is in read-only failover to its replica region: writes are refused and were not applied. Reads keep working. {when}"
                            ),
                        )
                    }
                };
                let mut resp = error::render_parts(s.profile, status, code, &message, ctx, *close);
                let h = resp.headers_mut();
                h.insert(FAILWAY_MODE, HeaderValue::from_static(mode.as_str()));
                if let Some(d) = deadline {
                    if let Ok(v) =
                        HeaderValue::from_str(&humantime::format_rfc3339_seconds(*d).to_string())
                    {
                        h.insert(FAILWAY_WRITES_ENABLED_AT, v);
                    }
                }
                if matches!(status.as_u16(), 429 | 503) {
                    h.insert(RETRY_AFTER, seconds(s.blocked_retry_after));
                }
                if *close {
                    h.insert(CONNECTION, HeaderValue::from_static("close"));
                }
                tracing::debug!(
                    correlation_id = ctx.correlation_id.unwrap_or("-"),
                    mode = mode.as_str(),
                    reason = reason.as_str(),
                    "write refused"
                );
                resp
            }
        }
    }
}

impl Proxy {
    /// The answer to a request no service takes: 404 `FAILWAY_NO_SERVICE`,
    /// or 421 when TLS named another service; problem+json (no service, so
    /// no profile), never forwarded, counted only as unrouted.
    pub(super) fn unrouted(
        &self,
        parts: &http::request::Parts,
        why: Unrouted,
        more_body: bool,
        conn: &ConnInfo,
        start: std::time::Instant,
    ) -> Response<ResponseBody> {
        self.metrics().unrouted.inc();
        let correlation_id = super::headers::correlation_id(&parts.headers);
        let (status, code, message) = match why {
            Unrouted::NoService => (
                StatusCode::NOT_FOUND,
                "FAILWAY_NO_SERVICE",
                "no service of this gateway takes this host and path; the request was not forwarded",
            ),
            Unrouted::Misdirected => (
                StatusCode::MISDIRECTED_REQUEST,
                "FAILWAY_MISDIRECTED_REQUEST",
                "the TLS server name and the Host header belong to different services; the request was not forwarded",
            ),
        };
        let ctx = ErrorContext {
            correlation_id: correlation_id.to_str().ok(),
        };
        let resp = error::render_parts(
            crate::classify::Profile::HttpMethods,
            status,
            code,
            message,
            ctx,
            more_body,
        );
        let log = AccessLog {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            correlation_id: correlation_id.clone(),
            client: conn.peer,
            service: Arc::from("-"),
            class: crate::classify::Class::Read,
            region: None,
            upstream: None,
            attempts: 0,
            status: status.as_u16(),
            start,
            bytes_out: 0,
            request_body: Default::default(),
            conn: conn.tracker.clone(),
            complete: false,
        };
        let (p, b) = resp.into_parts();
        Response::from_parts(p, ResponseBody::local(b, Some(log)))
    }
}
