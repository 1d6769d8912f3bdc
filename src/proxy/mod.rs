//! The data path: one hyper service that checks a request, asks `routing`
//! where it goes (or whether failway answers it itself), forwards it through
//! that region's pooled client with retries that never replay a write that
//! reached a server, and streams the answer back. Errors become responses in
//! one place ([`error`]).
//!
//! Submodules: `headers` (hygiene), `body` (limits, prefetch, replayable
//! prefix), `client` (per-region upstream clients), `forward` (routing and
//! the attempt loop), `refusal` (answers failway makes itself), `response`
//! (client-bound body + access log), `conn` (per-connection timers),
//! `stall` (h2 streams left unread), `server` (accept loop).

pub(crate) mod conn;
pub(crate) mod error;
mod forward;
pub mod headers;
pub mod metrics;
pub mod pick;
mod protocol;
mod refusal;
pub(crate) mod response;
pub(crate) mod server;
pub(crate) mod service;
mod stall;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use self::conn::ConnTracker;
use self::headers::HeadLimits;
use self::pick::Routes;
use self::refusal::Refusal;
use self::response::{AccessLog, ResponseBody};
use self::service::Service;
use crate::classify::Classifier;
use crate::config::{Cidr, Config, HostHeader, Profile};
use crate::proxy::metrics::ListenerMetrics;
use crate::retry::Backoff;
use crate::rewrite::Rewriter;
use crate::upstream::body::BodyWatch;
use crate::upstream::client::Upstream;
use arc_swap::ArcSwap;

/// Settings the data path reads on every request, derived once from config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub profile: Profile,
    pub limits: HeadLimits,
    pub max_body: u64,
    pub buffer_body: u64,
    pub body_idle_timeout: Duration,
    pub request_timeout: Duration,
    pub per_try_timeout: Duration,
    pub host_header: HostHeader,
    pub trusted_proxies: Vec<Cidr>,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub max_retry_after: Duration,
    pub blocked_write_status: http::StatusCode,
    pub blocked_retry_after: Duration,
    /// `failover.max_drill`: the longest drill an operator may start.
    pub max_drill: Duration,
    /// `Retry-After` on failway's own 503s (about one probe interval).
    pub unavailable_retry_after: Duration,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            profile: cfg.classify.profile,
            limits: HeadLimits {
                max_headers: cfg.proxy.max_headers,
                max_header_bytes: cfg.proxy.max_header_bytes.0,
            },
            max_body: cfg.proxy.max_request_body.0,
            buffer_body: cfg.retry.buffer_body.0,
            body_idle_timeout: cfg.proxy.body_idle_timeout,
            request_timeout: cfg.proxy.request_timeout,
            per_try_timeout: cfg.retry.per_try_timeout,
            host_header: cfg.proxy.host_header,
            trusted_proxies: cfg.proxy.trusted_proxies.clone(),
            max_attempts: cfg.retry.max_attempts.max(1),
            backoff: Backoff::new(cfg.retry.backoff_base, cfg.retry.backoff_max),
            max_retry_after: cfg.retry.max_retry_after,
            blocked_write_status: cfg.failover.blocked_write_status,
            blocked_retry_after: cfg.failover.blocked_retry_after,
            max_drill: cfg.failover.max_drill,
            unavailable_retry_after: cfg.health.interval.max(Duration::from_secs(1)),
        }
    }
}

/// What the service knows about the client connection a request came on.
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's address as an `X-Forwarded-For` element.
    pub peer_value: http::HeaderValue,
    pub tls: bool,
    /// The TLS server name the client asked for, if any.
    pub sni: Option<Arc<str>>,
    pub tracker: Arc<ConnTracker>,
}

/// The part of the proxy a configuration reload replaces as a whole; a
/// request keeps the one it started with until it finishes.
pub struct Dynamic {
    pub settings: Settings,
    pub classifier: Classifier,
    pub rewriter: Rewriter,
    pub upstreams: [Arc<Upstream>; 2],
}

/// The proxy service shared by every connection: the services it fronts
/// (swapped whole when a reload adds or removes one) and the listener's
/// metrics.
pub struct Proxy {
    routes: ArcSwap<Routes>,
    metrics: ListenerMetrics,
}

type Resp = Response<ResponseBody>;

impl Proxy {
    /// A proxy for `routes` (at least one service).
    pub fn new(routes: Routes, metrics: ListenerMetrics) -> Proxy {
        assert!(
            !routes.routes.is_empty(),
            "a proxy fronts at least one service"
        );
        Proxy {
            routes: ArcSwap::from_pointee(routes),
            metrics,
        }
    }

    /// The services now, in file order.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Puts a reload's services in place; requests in flight keep theirs.
    pub fn replace_routes(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<Arc<Service>> {
        self.routes.load().service(name).cloned()
    }

    pub fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }

    /// Serves one request; never fails (errors are responses).
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Resp {
        conn.tracker.request_started();
        // The access log and the latency histogram show real elapsed time;
        // the std clock is also the cheaper read on this path.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let routes = self.routes.load();
        let svc = match routes.pick(&parts, conn.sni.as_deref()) {
            Ok(svc) => svc.clone(),
            Err(why) => {
                let more_body = !http_body::Body::is_end_stream(&body);
                return self.unrouted(&parts, why, more_body, conn, start);
            }
        };
        drop(routes);
        let svc = &svc;
        let d = svc.dynamic();
        let correlation_id = headers::correlation_id(&parts.headers);
        let class = d
            .classifier
            .classify(&parts.method, parts.uri.path(), parts.uri.query())
            .class;
        let watch = Arc::new(BodyWatch::default());
        let mut log = AccessLog {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            correlation_id: correlation_id.clone(),
            client: conn.peer,
            service: svc.name_arc(),
            class,
            region: None,
            upstream: None,
            attempts: 0,
            status: 0,
            start,
            bytes_out: 0,
            request_body: watch.clone(),
            conn: conn.tracker.clone(),
            complete: false,
        };

        let attempts = std::sync::atomic::AtomicU32::new(0);
        // Boxed: the forwarding state is a few KiB, and hyper keeps room for
        // this future in every connection, idle or not.
        let inbound = forward::Inbound {
            parts,
            body,
            class,
            correlation_id: &correlation_id,
            watch,
            conn,
            attempts: &attempts,
        };
        // Every line the flow logs (retries, upstream failures) carries the
        // request's correlation id, as its access-log line does.
        let span = tracing::info_span!(
            "request",
            correlation_id = correlation_id.to_str().unwrap_or("-"),
            service = svc.name(),
        );
        let result = Box::pin(self.forward(svc, &d, inbound).instrument(span)).await;
        log.attempts = attempts.load(std::sync::atomic::Ordering::Relaxed);
        let (resp, region) = match result {
            Ok((mut resp, region)) => {
                headers::prepare_response(resp.headers_mut(), region.as_str());
                let (rparts, rbody) = resp.into_parts();
                log.region = Some(region);
                log.upstream = Some(d.upstreams[region.index()].authority.clone());
                log.status = rparts.status.as_u16();
                let resp = Response::from_parts(rparts, ResponseBody::upstream(rbody, log));
                (resp, Some(region))
            }
            Err(refusal) => {
                let local = self.render_refusal(svc, &d.settings, &refusal, &correlation_id);
                log.status = local.status().as_u16();
                let (p, b) = local.into_parts();
                (
                    Response::from_parts(p, ResponseBody::local(b, Some(log))),
                    None,
                )
            }
        };
        svc.metrics().record(
            region,
            class,
            resp.status().as_u16(),
            start.elapsed().as_secs_f64(),
        );
        resp
    }
}

impl From<error::ProxyError> for Refusal {
    fn from(e: error::ProxyError) -> Refusal {
        Refusal::Error {
            error: e,
            outcome_unknown: false,
        }
    }
}
