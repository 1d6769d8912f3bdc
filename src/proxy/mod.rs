//! The data path: one hyper service that checks a request, picks its region,
//! forwards it through that region's pooled client and streams the answer
//! back. Errors become responses in one place ([`error`]).
//!
//! Submodules: `headers` (hygiene), `body` (limits, prefetch, replayable
//! prefix), `client` (per-region upstream clients), `response` (client-bound
//! body + access log), `conn` (per-connection timers), `server` (accept loop).

pub mod body;
pub mod client;
pub mod conn;
pub mod error;
pub mod headers;
pub mod response;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use self::body::{BodyFailure, BodyWatch, Prefetched, UpstreamBody, Watched};
use self::client::{Upstream, UpstreamFailure};
use self::conn::ConnTracker;
use self::error::{ErrorContext, ProxyError};
use self::headers::{HeadLimits, Provenance};
use self::response::{AccessLog, ResponseBody};
use crate::classify::{Class, Classifier};
use crate::config::{Cidr, Config, HostHeader, Profile};
use crate::metrics::ProxyMetrics;
use crate::routing::Region;

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
        }
    }
}

/// What the service knows about the client connection a request came on.
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    pub tracker: Arc<ConnTracker>,
}

/// The proxy service shared by every connection.
pub struct Proxy {
    settings: Settings,
    classifier: Classifier,
    upstreams: [Upstream; 2],
    metrics: ProxyMetrics,
}

type Resp = Response<ResponseBody>;

impl Proxy {
    pub fn new(
        settings: Settings,
        classifier: Classifier,
        upstreams: [Upstream; 2],
        metrics: ProxyMetrics,
    ) -> Proxy {
        Proxy {
            settings,
            classifier,
            upstreams,
            metrics,
        }
    }

    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// Serves one request; never fails (errors are responses).
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Resp {
        conn.tracker.request_started();
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let correlation_id = headers::correlation_id(&parts.headers);
        let class = self
            .classifier
            .classify(&parts.method, parts.uri.path(), parts.uri.query())
            .class;
        let watch = Arc::new(BodyWatch::default());
        let mut log = Box::new(AccessLog {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            correlation_id: correlation_id.clone(),
            class,
            region: None,
            status: 0,
            start,
            bytes_out: 0,
            request_body: watch.clone(),
            conn: conn.tracker.clone(),
            complete: false,
        });

        let result = self
            .forward(parts, body, class, &correlation_id, watch, conn)
            .await;
        let (resp, region) = match result {
            Ok((mut resp, region)) => {
                headers::prepare_response(resp.headers_mut(), region.as_str());
                let (rparts, rbody) = resp.into_parts();
                log.region = Some(region);
                log.status = rparts.status.as_u16();
                let resp = Response::from_parts(rparts, ResponseBody::upstream(rbody, log));
                (resp, Some(region))
            }
            Err(err) => {
                log_error(&err, &correlation_id);
                let local = error::render(
                    self.settings.profile,
                    &err,
                    ErrorContext {
                        correlation_id: correlation_id.to_str().ok(),
                    },
                );
                log.status = local.status().as_u16();
                let (p, b) = local.into_parts();
                (
                    Response::from_parts(p, ResponseBody::local(b, Some(log))),
                    None,
                )
            }
        };
        self.metrics.record(
            region,
            class,
            resp.status().as_u16(),
            start.elapsed().as_secs_f64(),
        );
        resp
    }

    async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: Incoming,
        _class: Class,
        correlation_id: &HeaderValue,
        watch: Arc<BodyWatch>,
        conn: &ConnInfo,
    ) -> Result<(Response<Incoming>, Region), ProxyError> {
        let s = &self.settings;
        if parts.method == http::Method::CONNECT {
            return Err(ProxyError::NotImplemented("CONNECT"));
        }
        if parts.headers.contains_key(header::UPGRADE)
            || parts.extensions.get::<hyper::ext::Protocol>().is_some()
        {
            return Err(ProxyError::NotImplemented("protocol upgrade"));
        }
        headers::check_request(&parts.method, &parts.uri, &parts.headers, s.limits)?;
        let exact_len = declared_length(&parts.headers)?;
        if exact_len.is_some_and(|len| len > s.max_body) {
            return Err(ProxyError::BodyTooLarge { limit: s.max_body });
        }

        // Every request goes to the primary until the failover engine routes.
        let region = Region::Primary;
        let up = &self.upstreams[region.index()];

        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(up.scheme.clone())
            .authority(up.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;

        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let upstream_host = match s.host_header {
            HostHeader::Upstream => up.host.clone(),
            HostHeader::Preserve => original_host.clone().unwrap_or_else(|| up.host.clone()),
        };
        headers::prepare_request(
            &mut parts.headers,
            &Provenance {
                peer: conn.peer.ip(),
                peer_trusted: s.trusted_proxies.iter().any(|c| c.contains(conn.peer.ip())),
                downstream_tls: conn.tls,
                original_host,
                upstream_host: &upstream_host,
                correlation_id,
            },
        );
        parts.uri = uri;
        // hyper-util's client speaks the upstream's version; the client's own
        // version must not leak into the upstream request.
        parts.version = http::Version::HTTP_11;

        let deadline = tokio::time::Instant::now() + s.request_timeout;
        let watched = Watched::new(body, s.max_body, s.body_idle_timeout, watch.clone());
        let buffer = s.buffer_body.min(s.max_body);
        let prefetched =
            match tokio::time::timeout_at(deadline, body::prefetch(watched, buffer)).await {
                Ok(Ok(p)) => p,
                Ok(Err(f)) => return Err(body_error(f, s.max_body)),
                Err(_) => return Err(ProxyError::BodyTimeout),
            };
        let upstream_body = match prefetched {
            Prefetched::Complete { data, trailers } => UpstreamBody::buffered(data, trailers),
            Prefetched::Partial { prefix, rest } => {
                UpstreamBody::streaming(prefix, rest, exact_len)
            }
        };

        let req = Request::from_parts(parts, upstream_body);
        let attempt_deadline = deadline.min(tokio::time::Instant::now() + s.per_try_timeout);
        match tokio::time::timeout_at(attempt_deadline, up.client.request(req)).await {
            Ok(Ok(resp)) => Ok((resp, region)),
            Ok(Err(e)) => {
                if let Some(f) = watch.failure() {
                    return Err(body_error(f, s.max_body));
                }
                let failure = UpstreamFailure::classify(&e);
                tracing::debug!(region = region.as_str(), error = %e, ?failure, "upstream attempt failed");
                Err(failure.to_proxy_error())
            }
            Err(_) => {
                if let Some(f) = watch.failure() {
                    return Err(body_error(f, s.max_body));
                }
                if attempt_deadline >= deadline {
                    Err(ProxyError::RequestTimeout)
                } else {
                    Err(ProxyError::UpstreamTimeout)
                }
            }
        }
    }
}

fn body_error(f: BodyFailure, limit: u64) -> ProxyError {
    match f {
        BodyFailure::TooLarge => ProxyError::BodyTooLarge { limit },
        BodyFailure::Idle => ProxyError::BodyTimeout,
        BodyFailure::Client => {
            ProxyError::BadRequest("the request body is malformed or was cut short")
        }
    }
}

/// The client's declared body length (hyper already refused conflicting ones).
fn declared_length(headers: &http::HeaderMap) -> Result<Option<u64>, ProxyError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or(ProxyError::BadRequest("Content-Length is not a number")),
    }
}

fn log_error(err: &ProxyError, correlation_id: &HeaderValue) {
    let cid = correlation_id.to_str().unwrap_or("-");
    match err.origin() {
        error::Origin::Upstream => {
            tracing::warn!(code = err.code(), correlation_id = cid, "{err}")
        }
        _ => tracing::debug!(code = err.code(), correlation_id = cid, "{err}"),
    }
}
