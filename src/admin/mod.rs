//! The admin API (docs/design.md §6) on its own listener: `/livez`, `/readyz`,
//! `/metrics`, `/status`, `/fleet/instances` (fleet mode: what each instance
//! last reported), `/config` (the running configuration; admin listener
//! only, behind the token when one is set), the operator console (`/`,
//! `/events`: `console`), and the operator actions under `/admin/`. A second,
//! GET-only probe listener (`admin.probe_listen`) serves the read endpoints
//! to kubelet and Prometheus on the pod IP while operator actions stay on
//! the loopback admin listener.
//!
//! Separate from the proxy listener so operators reach it even when the data
//! path is saturated, and so it is never exposed by accident on the
//! client-facing address. Connections are capped and timed (`conn`);
//! requests pass through tower-http layers: the `Authorization` header
//! marked sensitive, a trace span per request, and a timeout on the whole
//! request. Operator actions are taken from local JSON clients and the
//! console's own page only, never from another web page (`guard`).

pub mod actions;
mod conn;
pub mod console;
mod drill;
mod guard;
mod history;
pub mod status;
pub mod tokens;

pub use conn::serve;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prometheus::Registry;

use self::actions::{Action, AdminToken};
use crate::proxy::Proxy;

/// What the admin endpoints read.
pub struct AdminState {
    pub registry: Registry,
    /// Set once every listener is bound and the drivers run; cleared when draining.
    pub ready: AtomicBool,
    /// The services (their failover engines, metrics and upstreams).
    pub proxy: Arc<Proxy>,
    pub token: Option<AdminToken>,
    /// `admin.tokens_file`: named tokens; the name is recorded as `by`.
    pub tokens: Option<tokens::AdminTokens>,
    /// The running configuration, for `GET /config`.
    pub reloader: Arc<crate::reload::Reloader>,
    /// The console's open `/events` streams.
    pub console: console::Console,
    /// The audit file and hooks (`GET /history`).
    pub audit: crate::audit::Sink,
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

/// Answers one request: `/events` streams, anything else is one answer.
async fn respond(
    state: Arc<AdminState>,
    listener: Listener,
    local: SocketAddr,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<console::events::BoxBody> {
    if req.uri().path() == "/events" {
        if req.method() != Method::GET {
            return method_not_allowed("GET").map(BodyExt::boxed_unsync);
        }
        return console::events::open(state);
    }
    route(&state, listener, local, peer, req)
        .await
        .map(BodyExt::boxed_unsync)
}

/// Answers one request that came on `listener`, bound to `local`.
async fn route(
    state: &AdminState,
    listener: Listener,
    local: SocketAddr,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/" | "/console.css" | "/console.js" | "/livez" | "/readyz" | "/metrics" | "/status"
        | "/fleet/instances" | "/config" | "/history"
            if !get =>
        {
            method_not_allowed("GET, HEAD")
        }
        "/" => console::page(state, listener).await,
        "/console.css" | "/console.js" => {
            console::asset(&path).unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n"))
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
            let routes = state.proxy.routes();
            let services: Vec<_> = routes.services().map(|s| s.registry().clone()).collect();
            let body = crate::metrics::encode_all(&state.registry, &services);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/status" => json(StatusCode::OK, &status::document(&state.proxy.routes())),
        "/config" if listener == Listener::Probe => text(
            StatusCode::NOT_FOUND,
            "the configuration is served on admin.listen only\n",
        ),
        "/config" => unauthorized(state, &req).unwrap_or_else(|| running_config(state)),
        "/history" if listener == Listener::Probe => text(
            StatusCode::NOT_FOUND,
            "the history is served on admin.listen only\n",
        ),
        "/history" => match unauthorized(state, &req) {
            Some(refusal) => refusal,
            None => {
                let (status, value) = history::history(state, req.uri().query()).await;
                json(status, &value)
            }
        },
        "/fleet/instances" => match service_named(&state.proxy, req.uri().query()) {
            Err((status, error)) => json(status, &error),
            Ok(svc) => fleet_instances(svc.failover()).await,
        },
        p => match Action::from_path(p) {
            Some(_) if listener == Listener::Probe => text(
                StatusCode::NOT_FOUND,
                "operator actions are served on admin.listen only\n",
            ),
            Some(_) if req.method() != Method::POST => method_not_allowed("POST"),
            Some(action) => operator_action(state, local, peer, req, action).await,
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

/// An operator action (`POST /admin/...`) from a local, authorized caller.
async fn operator_action(
    state: &AdminState,
    local: SocketAddr,
    peer: SocketAddr,
    req: Request<Incoming>,
    action: Action,
) -> Resp {
    if let Err((status, error)) = guard::check(req.uri(), req.headers(), local, state.has_token()) {
        return json(status, &error);
    }
    let by = match caller(state, &req) {
        Ok(by) => by,
        Err(Unauthorized) => return unauthorized_answer(),
    };
    let caller = actions::Caller {
        source: peer,
        correlation_id: crate::proxy::headers::correlation_id(req.headers())
            .to_str()
            .unwrap_or_default()
            .to_owned(),
        by,
    };
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
    let (status, value) = actions::run(&state.proxy.routes(), action, &body, &caller).await;
    json(status, &value)
}

impl AdminState {
    /// Whether operator actions need a token (`token_file` or `tokens_file`).
    pub fn has_token(&self) -> bool {
        self.token.is_some() || self.tokens.is_some()
    }
}

/// Who sends a request: the name of its token in `admin.tokens_file`
/// (`None` for `admin.token_file`'s, or without tokens), or the 401.
fn caller(state: &AdminState, req: &Request<Incoming>) -> Result<Option<String>, Unauthorized> {
    if let Some(tokens) = &state.tokens {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| actions::bearer_token(v.as_bytes()));
        if let Some(name) = given.and_then(|t| tokens.name_of(t)) {
            return Ok(Some(name));
        }
    }
    match &state.token {
        Some(token) if token.allows(req.headers()) => Ok(None),
        None if state.tokens.is_none() => Ok(None),
        _ => Err(Unauthorized),
    }
}

/// A request without a valid admin token.
struct Unauthorized;

/// The 401 for a request without a valid admin token, when one is configured.
fn unauthorized(state: &AdminState, req: &Request<Incoming>) -> Option<Resp> {
    caller(state, req).err().map(|_| unauthorized_answer())
}

fn unauthorized_answer() -> Resp {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "missing or invalid bearer token (admin.token_file or admin.tokens_file)"}),
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// `GET /config`: the effective configuration as `failway check` prints it
/// (probe header values redacted; token files are named, never read), under
/// a comment giving the time it was loaded.
fn running_config(state: &AdminState) -> Resp {
    let (config, loaded_at) = state.reloader.running();
    let body = format!(
        "# loaded_at = {}\n{}",
        humantime::format_rfc3339_seconds(loaded_at),
        config.to_effective_toml()
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/toml; charset=utf-8"),
    );
    r
}

/// `/fleet/instances` of one service's fleet record.
async fn fleet_instances(failover: &crate::failover::Failover) -> Response<Full<Bytes>> {
    match failover.fleet() {
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
    }
}

/// The service a GET names with `?service=NAME`; the only one when there
/// is one. Errors are the status and body to answer.
fn service_named(
    proxy: &Proxy,
    query: Option<&str>,
) -> Result<Arc<crate::proxy::service::Service>, (StatusCode, serde_json::Value)> {
    let named = crate::query::query_param(query, "service");
    actions::pick_service(&proxy.routes(), named.as_deref())
}
