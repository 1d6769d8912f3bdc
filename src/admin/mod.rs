//! The admin API (DESIGN.md §6) on its own listener: `/livez`, `/readyz`,
//! `/metrics`, `/status`, `/fleet/instances` (fleet mode: what each instance
//! last reported), and the operator actions under `/admin/`. A second,
//! GET-only probe listener (`admin.probe_listen`) serves the read endpoints
//! to kubelet and Prometheus on the pod IP while operator actions stay on
//! the loopback admin listener.
//!
//! Separate from the proxy listener so operators reach it even when the data
//! path is saturated, and so it is never exposed by accident on the
//! client-facing address. Requests pass through tower-http layers: the
//! `Authorization` header marked sensitive, a trace span per request, and a
//! timeout on the whole request.

pub mod actions;
pub mod status;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use self::actions::{Action, AdminToken};
use crate::failover::Failover;

/// Bound on reading one admin request's head, and on answering it (its
/// body included).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the admin endpoints read.
pub struct AdminState {
    pub registry: Registry,
    /// Set once every listener is bound and the drivers run; cleared when draining.
    pub ready: AtomicBool,
    pub failover: Failover,
    pub token: Option<AdminToken>,
    /// The regions' upstream URLs, for `/status`.
    pub urls: [String; 2],
}

/// Which listener a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `admin.listen`: everything.
    Admin,
    /// `admin.probe_listen`: GET-only read endpoints.
    Probe,
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

async fn route(state: &AdminState, listener: Listener, req: Request<Incoming>) -> Resp {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/livez" | "/readyz" | "/metrics" | "/status" | "/fleet/instances" if !get => {
            method_not_allowed("GET, HEAD")
        }
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            // Ready means serving: config loaded, listeners bound, not
            // draining. Region health is deliberately not part of it, so a
            // regional outage never takes the sidecar out of its Service.
            if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let body = crate::metrics::encode(&state.registry);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/status" => {
            let mut doc = status::status_json(&state.failover.snapshot(), &state.urls);
            doc["fleet"] = match state.failover.fleet() {
                Some(f) => serde_json::to_value(f.status()).unwrap_or_default(),
                None => serde_json::Value::Null,
            };
            json(StatusCode::OK, &doc)
        }
        "/fleet/instances" => match state.failover.fleet() {
            None => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "fleet mode is off (no [fleet] section)"}),
            ),
            Some(f) => match f.instances().await {
                Ok(list) => json(
                    StatusCode::OK,
                    &serde_json::to_value(list).unwrap_or_default(),
                ),
                Err(e) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"error": e.to_string()}),
                ),
            },
        },
        p => match Action::from_path(p) {
            Some(_) if listener == Listener::Probe => text(
                StatusCode::NOT_FOUND,
                "operator actions are served on admin.listen only\n",
            ),
            Some(_) if req.method() != Method::POST => method_not_allowed("POST"),
            Some(action) => {
                if let Some(token) = &state.token {
                    if !token.allows(req.headers()) {
                        let mut r = json(
                            StatusCode::UNAUTHORIZED,
                            &serde_json::json!({"error": "missing or invalid bearer token (admin.token_file)"}),
                        );
                        r.headers_mut()
                            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                        return r;
                    }
                }
                let body = match Limited::new(req.into_body(), actions::MAX_BODY)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return json(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &serde_json::json!({"error": format!("the body exceeds {} bytes", actions::MAX_BODY)}),
                        )
                    }
                };
                let (status, value) = actions::run(&state.failover, action, &body).await;
                json(status, &value)
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

/// Serves one admin or probe listener until `drain` turns true.
pub async fn serve(
    listener: TcpListener,
    which: Listener,
    state: Arc<AdminState>,
    mut drain: watch::Receiver<bool>,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            _ = drain.changed() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let mut drain = drain.clone();
        tokio::spawn(async move {
            let svc = tower::ServiceBuilder::new()
                // Marked before anything records headers: a token never
                // reaches a trace.
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                ]))
                // Spans and events at debug: a 503 from /readyz while
                // draining is an answer, not a failure to log as an error.
                .layer(
                    TraceLayer::new_for_http()
                        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
                )
                // A request (its body included) that takes longer is
                // answered 408: a slow client cannot hold an operator
                // endpoint.
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                ))
                .service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, which, req).await) }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = drain.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
