//! The request flow, as named steps: `admit` (what failway never forwards),
//! `first_region` (`routing::route`, and the refusals answered before the
//! body is read), the latch before a write leaves for the replica,
//! `template` (the headers every attempt starts from), `read_body` (up to
//! the replay buffer), then the attempt loop (`attempts`: send, judge,
//! decide, choose, wait) and the answer rule (`answer`).
//!
//! Invariants: a write goes only where the mode sends it, and only after the
//! replica-writes latch is persisted when that is the replica; a write whose
//! bytes reached a server is never sent again.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;

mod answer;
mod attempt;
mod attempts;

use self::attempt::{body_error, declared_length, Template};
use self::attempts::{AttemptError, Plan, Upstreams};
use super::error::ProxyError;
use super::headers::{self, Provenance};
use super::refusal::Refusal;
use super::service::Service;
use super::{ConnInfo, Dynamic, Proxy};
use crate::classify::Class;
use crate::failover::{BlockReason, ReplicaWrite, Snapshot};
use crate::health::passive::Outcome;
use crate::region::Region;
use crate::routing::{self, Route};
use crate::upstream::body::{
    self, BodyFailure, BodyProgress, BodyWatch, Prefetched, UpstreamBody, Watched,
};
use crate::upstream::client::{RequestBody, Ticket, UpstreamFailure};
use crate::upstream::pool::FreshAfterIdle;

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

/// A request as the handler hands it over: its parts and body, and what
/// the handler already derived.
pub(super) struct Inbound<'a> {
    pub parts: http::request::Parts,
    pub body: Incoming,
    pub class: Class,
    pub correlation_id: &'a HeaderValue,
    pub watch: Arc<BodyWatch>,
    pub conn: &'a ConnInfo,
    /// Attempts sent upstream, for the access log.
    pub attempts: &'a AtomicU32,
}

impl Proxy {
    pub(super) async fn forward(
        &self,
        svc: &Service,
        d: &Dynamic,
        req: Inbound<'_>,
    ) -> Result<(Response<Incoming>, Region), Refusal> {
        let s = &d.settings;
        let deadline = Instant::now() + s.request_timeout;
        let Inbound {
            parts,
            body,
            class,
            correlation_id,
            watch,
            conn,
            attempts,
        } = req;
        let exact_len = admit(d, &parts)?;
        let more_body = !body.is_end_stream();
        // Refused before the body is read; checked again as each write
        // attempt is sent (`Regions::clear_write`).
        let first = first_region(svc, class, more_body)?;
        let template = template(d, parts, conn, correlation_id);
        let mut source = read_body(d, body, exact_len, &watch, deadline).await?;
        let upstreams = Regions {
            proxy: self,
            svc,
            d,
            template: &template,
            class,
            watch: &watch,
            replica_tried: AtomicBool::new(false),
            attempts,
        };
        let plan = Plan {
            class,
            first,
            deadline,
            per_try_timeout: s.per_try_timeout,
            max_attempts: s.max_attempts,
            backoff: &s.backoff,
            max_retry_after: s.max_retry_after,
            max_body: s.max_body,
            budget: svc.budget(),
            metrics: svc.metrics(),
        };
        let mut rng = fastrand::Rng::new();
        attempts::run(&upstreams, &plan, &mut source, &mut rng).await
    }
}

/// Where the request goes first; the refusals `routing` decides are
/// answered here, before the body is read (`more_body`: the connection then
/// closes).
#[inline(always)]
fn first_region(svc: &Service, class: Class, more_body: bool) -> Result<Region, Refusal> {
    let snap = svc.failover().snapshot();
    match routing::route(class, &snap) {
        Route::Forward(r) => Ok(r),
        Route::BlockWrite => Err(Refusal::WriteBlocked {
            mode: snap.mode,
            deadline: snap.read_only_deadline,
            reason: if snap.writes_suspended {
                BlockReason::FleetLeaseLost
            } else {
                BlockReason::ReadOnly
            },
            close: more_body,
        }),
        Route::WriteRegionDown(r) => {
            svc.failover()
                .metrics()
                .write_blocked(BlockReason::RegionDown);
            Err(ProxyError::RegionDown(r.as_str()).into())
        }
        Route::Unavailable => Err(ProxyError::NoHealthyRegion.into()),
    }
}

/// What failway never forwards (CONNECT, upgrades, bad or oversized heads
/// and bodies); returns the declared body length.
#[inline(always)]
fn admit(d: &Dynamic, parts: &http::request::Parts) -> Result<Option<u64>, Refusal> {
    let s = &d.settings;
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
    Ok(exact_len)
}

/// The request every attempt is built from: hop-by-hop headers gone,
/// forwarding headers added (`Host` is set per attempt: each region has
/// its own).
#[inline(always)]
fn template(
    d: &Dynamic,
    mut parts: http::request::Parts,
    conn: &ConnInfo,
    correlation_id: &HeaderValue,
) -> Template {
    let s = &d.settings;
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
            upstream_host: &placeholder,
            correlation_id,
        },
    );
    Template {
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        headers: parts.headers,
        original_host,
    }
}

/// Reads the body up to the replay buffer (`retry.buffer_body`): all of a
/// small one, so every attempt can send it; the start of a larger one,
/// which then streams once.
async fn read_body(
    d: &Dynamic,
    body: Incoming,
    exact_len: Option<u64>,
    watch: &Arc<BodyWatch>,
    deadline: Instant,
) -> Result<BodySource, Refusal> {
    let s = &d.settings;
    let watched = Watched::new(body, s.max_body, s.body_idle_timeout, watch.clone());
    let buffer = s.buffer_body.min(s.max_body);
    match tokio::time::timeout_at(deadline, body::prefetch(watched, buffer)).await {
        Ok(Ok(Prefetched::Complete { data, trailers })) => {
            Ok(BodySource::Replayable(data, trailers))
        }
        Ok(Ok(Prefetched::Partial { prefix, rest })) => {
            Ok(BodySource::Streaming(Some((prefix, rest, exact_len))))
        }
        Ok(Err(f)) => Err(body_error(f, s.max_body).into()),
        Err(_) => Err(ProxyError::BodyTimeout.into()),
    }
}

impl Regions<'_> {
    /// A write's right to be sent to `region`, checked as it is sent (its
    /// body may have taken long to arrive): the mode must still send writes
    /// there, and for the replica the latch is set and persisted first.
    async fn clear_write(&self, region: Region) -> Result<Option<ReplicaWrite>, Refusal> {
        if self.class != Class::Write {
            return Ok(None);
        }
        let unread = self.watch.progress() != BodyProgress::Complete;
        if first_region(self.svc, Class::Write, unread)? != region {
            return Err(ProxyError::ModeChanged.into());
        }
        if region == Region::Replica {
            return self.svc.latch_before_replica_write(unread).await.map(Some);
        }
        Ok(None)
    }
}

/// The two regions through the proxy's clients, for the attempt loop.
struct Regions<'a> {
    proxy: &'a Proxy,
    svc: &'a Service,
    d: &'a Dynamic,
    template: &'a Template,
    class: Class,
    watch: &'a BodyWatch,
    /// Rewrite misses are counted once per request, not once per attempt.
    replica_tried: AtomicBool,
    attempts: &'a AtomicU32,
}

impl Upstreams for Regions<'_> {
    type Body = Incoming;
    type Ticket = Ticket;

    async fn reserve(&self, region: Region, deadline: Instant) -> Result<Ticket, AttemptError> {
        let up = &self.d.upstreams[region.index()];
        up.reserve(self.class == Class::Write, deadline)
            .await
            .map_err(|e| AttemptError::Upstream(UpstreamFailure::classify(&e)))
    }

    async fn send(
        &self,
        region: Region,
        attempt: u32,
        body: RequestBody,
        ticket: Ticket,
    ) -> Result<Response<Incoming>, AttemptError> {
        let count_misses =
            region == Region::Replica && !self.replica_tried.swap(true, Ordering::Relaxed);
        let mut req = self
            .proxy
            .build(
                self.svc.metrics(),
                self.d,
                self.template,
                region,
                body,
                count_misses,
            )
            .map_err(AttemptError::Refused)?;
        // Held until the attempt ends: an operator command waits for it.
        let _cleared = self
            .clear_write(region)
            .await
            .map_err(AttemptError::Refused)?;
        if self.class == Class::Write {
            req.extensions_mut().insert(FreshAfterIdle);
        }
        if region == Region::Replica && self.class == Class::Write && attempt == 1 {
            self.svc
                .failover()
                .metrics()
                .writes_accepted_on_replica
                .inc();
        }
        let up = &self.d.upstreams[region.index()];
        self.attempts.fetch_add(1, Ordering::Relaxed);
        up.send(ticket, req).await.map_err(|e| {
            let kind = UpstreamFailure::classify(&e);
            if self.watch.failure().is_none() {
                let why = crate::upstream::client::error_chain(&e);
                if kind == UpstreamFailure::TlsHandshake {
                    // A verification failure is a configuration problem an
                    // operator must see, with its reason.
                    tracing::warn!(region = region.as_str(), attempt, error = %why, "upstream TLS handshake failed");
                } else {
                    tracing::debug!(region = region.as_str(), attempt, error = %why, ?kind, "upstream attempt failed");
                }
            }
            AttemptError::Upstream(kind)
        })
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.svc.failover().snapshot_arc()
    }

    fn record_outcome(&self, region: Region, outcome: Outcome) {
        self.svc.failover().record_outcome(region, outcome);
    }

    fn body_failure(&self) -> Option<BodyFailure> {
        self.watch.failure()
    }

    fn body_progress(&self) -> BodyProgress {
        self.watch.progress()
    }

    async fn body_completed(&self) {
        self.watch.completed().await;
    }
}
