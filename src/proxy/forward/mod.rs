//! The request flow: refuse what must not be forwarded, ask `routing` where
//! the request goes, read the body up to the replay buffer, then run the
//! attempt loop: per-try timeout, the retry policy (`retry::decide`), budget,
//! backoff and `Retry-After`, and a read's move to the other region when its
//! region fails.
//!
//! Invariants: a write goes only where the mode sends it, and only after the
//! replica-writes latch is persisted when that is the replica; a write whose
//! bytes reached a server is never sent again.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;

mod attempt;

use self::attempt::{body_error, declared_length, failure_retry_after, FirstAnswer, Template};
use super::error::ProxyError;
use super::headers::{self, Provenance};
use super::refusal::Refusal;
use super::{ConnInfo, Dynamic, Proxy};
use crate::classify::Class;
use crate::failover::machine::Mode;
use crate::failover::BlockReason;
use crate::health::passive::Outcome;
use crate::region::Region;
use crate::retry::{self, Failure, Verdict, WaitDecision};
use crate::routing::{self, Route};
use crate::upstream::body::{self, BodyFailure, BodyWatch, Prefetched, UpstreamBody, Watched};
use crate::upstream::client::{RequestBody, UpstreamFailure};

enum BodySource {
    /// Fully read: every attempt sends a copy.
    Replayable(Bytes, Option<HeaderMap>),
    /// Streams past the buffer: one attempt only.
    Streaming(Option<(Bytes, Watched<Incoming>, Option<u64>)>),
}

impl BodySource {
    fn replayable(&self) -> bool {
        matches!(self, BodySource::Replayable(..))
    }

    fn take(&mut self) -> Option<RequestBody> {
        match self {
            BodySource::Replayable(data, trailers) => {
                Some(UpstreamBody::buffered(data.clone(), trailers.clone()))
            }
            BodySource::Streaming(s) => s
                .take()
                .map(|(prefix, rest, exact)| UpstreamBody::streaming(prefix, rest, exact)),
        }
    }
}

impl Proxy {
    // The request's parts, its body and what the handler already derived
    // (class, correlation id, body watch, connection): one flow, one call.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward(
        &self,
        d: &Dynamic,
        mut parts: http::request::Parts,
        body: Incoming,
        class: Class,
        correlation_id: &HeaderValue,
        watch: Arc<BodyWatch>,
        conn: &ConnInfo,
    ) -> Result<(Response<Incoming>, Region), Refusal> {
        let s = &d.settings;
        let arrived = Instant::now();
        let deadline = arrived + s.request_timeout;
        if parts.method == Method::CONNECT {
            return Err(ProxyError::NotImplemented("CONNECT").into());
        }
        if parts.headers.contains_key(header::UPGRADE)
            || parts.extensions.get::<hyper::ext::Protocol>().is_some()
        {
            return Err(ProxyError::NotImplemented("protocol upgrade").into());
        }
        headers::check_request(&parts.method, &parts.uri, &parts.headers, s.limits)?;
        let exact_len = declared_length(&parts.headers)?;
        if exact_len.is_some_and(|len| len > s.max_body) {
            return Err(ProxyError::BodyTooLarge { limit: s.max_body }.into());
        }

        // Where it goes. Refusals are answered before the body is read.
        let first = {
            let snap = self.failover.snapshot();
            match routing::route(class, &snap) {
                Route::Forward(r) => r,
                Route::BlockWrite => {
                    return Err(Refusal::WriteBlocked {
                        mode: snap.mode,
                        deadline: snap.read_only_deadline,
                        reason: if snap.writes_suspended {
                            BlockReason::FleetLeaseLost
                        } else {
                            BlockReason::ReadOnly
                        },
                        close: !body.is_end_stream(),
                    })
                }
                Route::WriteRegionDown(r) => {
                    self.failover
                        .metrics()
                        .write_blocked(BlockReason::RegionDown);
                    return Err(ProxyError::RegionDown(r.as_str()).into());
                }
                Route::Unavailable => return Err(ProxyError::NoHealthyRegion.into()),
            }
        };
        if first == Region::Replica && class == Class::Write {
            self.latch_before_replica_write(!body.is_end_stream())
                .await?;
        }

        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let placeholder = HeaderValue::from_static("");
        headers::prepare_request(
            &mut parts.headers,
            &Provenance {
                peer: conn.peer.ip(),
                peer_value: &conn.peer_value,
                peer_trusted: s.trusted_proxies.iter().any(|c| c.contains(conn.peer.ip())),
                downstream_tls: conn.tls,
                original_host: original_host.clone(),
                // Set per attempt: each region has its own.
                upstream_host: &placeholder,
                correlation_id,
            },
        );
        let template = Template {
            method: parts.method,
            path_and_query: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            headers: parts.headers,
            original_host,
        };

        let watched = Watched::new(body, s.max_body, s.body_idle_timeout, watch.clone());
        let buffer = s.buffer_body.min(s.max_body);
        let mut source =
            match tokio::time::timeout_at(deadline, body::prefetch(watched, buffer)).await {
                Ok(Ok(Prefetched::Complete { data, trailers })) => {
                    BodySource::Replayable(data, trailers)
                }
                Ok(Ok(Prefetched::Partial { prefix, rest })) => {
                    BodySource::Streaming(Some((prefix, rest, exact_len)))
                }
                Ok(Err(f)) => return Err(body_error(f, s.max_body).into()),
                Err(_) => return Err(ProxyError::BodyTimeout.into()),
            };

        self.budget.deposit(Instant::now().into_std());
        let mut rng = fastrand::Rng::new();
        let mut region = first;
        let mut first_answer: Option<FirstAnswer> = None;
        let mut attempt: u32 = 0;
        let mut replica_tried = false;
        loop {
            attempt += 1;
            let Some(req_body) = source.take() else {
                // A streamed body cannot be sent twice; the loop never asks.
                return Err(ProxyError::UpstreamReset.into());
            };
            // Misses are counted once per request, not once per attempt.
            let count_misses = region == Region::Replica && !replica_tried;
            replica_tried |= region == Region::Replica;
            let req = self.build(d, &template, region, req_body, count_misses)?;
            let up = &d.upstreams[region.index()];
            let attempt_deadline = deadline.min(Instant::now() + s.per_try_timeout);
            if region == Region::Replica && class == Class::Write && attempt == 1 {
                self.failover.metrics().writes_accepted_on_replica.inc();
            }
            let result = tokio::time::timeout_at(attempt_deadline, up.request(req)).await;

            // What happened, for the retry policy and passive health.
            let (failure, answer): (Failure, Result<Response<Incoming>, Refusal>) = match result {
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    self.failover
                        .record_outcome(region, Outcome::Status(status));
                    if !matches!(status, 429 | 502..=504) {
                        return self.finish(first_answer, region, first, resp);
                    }
                    let retry_after = resp
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| retry::retry_after::parse(v.as_bytes(), SystemTime::now()));
                    (Failure::Status(status, retry_after), Ok(resp))
                }
                Ok(Err(e)) => {
                    if let Some(f) = watch.failure() {
                        return Err(body_error(f, s.max_body).into());
                    }
                    let kind = UpstreamFailure::classify(&e);
                    let why = crate::upstream::client::error_chain(&e);
                    if kind == UpstreamFailure::TlsHandshake {
                        // A verification failure is a configuration problem
                        // an operator must see, with its reason.
                        tracing::warn!(region = region.as_str(), attempt, error = %why, "upstream TLS handshake failed");
                    } else {
                        tracing::debug!(region = region.as_str(), attempt, error = %why, ?kind, "upstream attempt failed");
                    }
                    let (failure, outcome) = match kind {
                        UpstreamFailure::ConnectRefused => {
                            (Failure::ConnectRefused, Outcome::ConnectError)
                        }
                        UpstreamFailure::ConnectTimeout => {
                            (Failure::ConnectTimeout, Outcome::Timeout)
                        }
                        UpstreamFailure::TlsHandshake => {
                            (Failure::TlsHandshake, Outcome::ConnectError)
                        }
                        UpstreamFailure::RefusedStream => (Failure::RefusedStream, Outcome::Reset),
                        UpstreamFailure::GoAway => (Failure::GoAwayNotProcessed, Outcome::Reset),
                        UpstreamFailure::Reset => (Failure::ResetAfterSend, Outcome::Reset),
                        UpstreamFailure::Malformed => {
                            (Failure::MalformedResponse, Outcome::Status(502))
                        }
                        UpstreamFailure::RequestBody => {
                            return Err(body_error(BodyFailure::Client, s.max_body).into())
                        }
                    };
                    self.failover.record_outcome(region, outcome);
                    (failure, Err(ProxyError::from_upstream(kind).into()))
                }
                Err(_) => {
                    if let Some(f) = watch.failure() {
                        return Err(body_error(f, s.max_body).into());
                    }
                    self.failover.record_outcome(region, Outcome::Timeout);
                    let e = if attempt_deadline >= deadline {
                        ProxyError::RequestTimeout
                    } else {
                        ProxyError::UpstreamTimeout
                    };
                    (Failure::TimeoutAfterSend, Err(e.into()))
                }
            };

            let verdict = retry::decide(class, &failure, source.replayable());
            let (reason, prefer_other) = match verdict {
                Verdict::Retry {
                    reason,
                    prefer_other_region,
                } => (reason, prefer_other_region),
                Verdict::DoNotRetry { outcome_unknown } => {
                    return self.give_up(answer, outcome_unknown, region, first_answer, first);
                }
            };
            if attempt >= s.max_attempts {
                return self.give_up(answer, false, region, first_answer, first);
            }
            // Where the next attempt goes. A read follows the mode when it
            // moved on meanwhile (a failover during a hung first attempt),
            // and may use the other region while the mode is still
            // `primary` and probes are still counting failures. A write
            // stays where the mode sent it.
            let next = if class == Class::Read {
                let snap = self.failover.snapshot();
                let other = region.other();
                match routing::route(class, &snap) {
                    Route::Forward(home) if home != region => home,
                    // The last attempt goes to the other region whatever
                    // the failure: a read has nothing to lose there.
                    _ if (prefer_other || attempt + 1 >= s.max_attempts)
                        && region == first
                        && snap.mode == Mode::Primary
                        && !snap.region(other).is_down() =>
                    {
                        other
                    }
                    _ => region,
                }
            } else {
                region
            };
            let backoff = s.backoff.delay(attempt - 1, &mut rng);
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Retry-After speaks for the region that sent it.
            let retry_after = failure_retry_after(&failure).filter(|_| next == region);
            let wait = match retry::decide_wait(backoff, retry_after, s.max_retry_after, remaining)
            {
                WaitDecision::Wait(w) => w,
                WaitDecision::GiveUp(why) => {
                    tracing::debug!(reason = why.as_str(), "not retrying");
                    return self.give_up(answer, false, region, first_answer, first);
                }
            };
            if !self.budget.try_withdraw(Instant::now().into_std()) {
                self.metrics.retry_budget_exhausted.inc();
                return self.give_up(answer, false, region, first_answer, first);
            }
            if first_answer.is_none() && next != first {
                first_answer = Some(match answer {
                    Ok(resp) => FirstAnswer::Response(resp),
                    Err(r) => FirstAnswer::Error(r),
                });
            } else {
                // Drain nothing: dropping an errored response closes its
                // connection, which is what a failing upstream deserves.
                drop(answer);
            }
            self.metrics.retry(next, reason);
            tracing::debug!(
                from = region.as_str(),
                to = next.as_str(),
                attempt,
                reason = reason.as_str(),
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            region = next;
            tokio::time::sleep(wait).await;
        }
    }
}
