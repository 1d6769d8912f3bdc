//! The control port: fault switches, counters, and the replication inlet.
//!
//! | endpoint | does |
//! |---|---|
//! | `GET /faults` | the current switches as JSON |
//! | `POST /faults` | changes the switches named in the JSON body (`outage`, `hang`, `error_503` `{"retry_after": secs}` or `null`, `latency_ms`, `reset_after_bytes` or `null`) and returns them |
//! | `POST /faults/clear` | turns every fault off |
//! | `GET /stats` | request counters ([`super::Stats`]) |
//! | `POST /replicate` | stores a key pushed by this region's primary (internal) |
//!
//! It has no authentication: the simulator refuses to bind it anywhere but
//! loopback. Faults never apply here, so a region in an outage can still be
//! healed and still receives replication.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::api::json_response;
use super::faults::FaultControl;
use super::key::Key;
use super::region::Region;

const MAX_BODY: usize = 4 * 1024 * 1024;

/// Serves the control API until `shutdown` is true.
pub async fn serve(
    listener: TcpListener,
    region: Arc<Region>,
    faults: FaultControl,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.changed() => return,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    continue;
                }
            },
        };
        let (region, faults) = (region.clone(), faults.clone());
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let (region, faults) = (region.clone(), faults.clone());
                async move { Ok::<_, Infallible>(route(req, &region, &faults).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": message.to_string()}))
}

async fn route(
    req: hyper::Request<Incoming>,
    region: &Region,
    faults: &FaultControl,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let path = parts.uri.path();
    let path = path.strip_suffix('/').unwrap_or(path);
    match (&parts.method, path) {
        (&Method::GET, "/faults") => json_response(StatusCode::OK, &faults.current().to_json()),
        (&Method::POST, "/faults") => match faults.apply_json(&body) {
            Ok(now) => {
                tracing::info!(region = %region.name, faults = %now.to_json(), "faults changed");
                json_response(StatusCode::OK, &now.to_json())
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (&Method::POST, "/faults/clear") => {
            faults.clear();
            tracing::info!(region = %region.name, "faults cleared");
            json_response(StatusCode::OK, &faults.current().to_json())
        }
        (&Method::GET, "/stats") => {
            let stats = region.counters.snapshot();
            json_response(
                StatusCode::OK,
                &serde_json::to_value(stats).unwrap_or(Value::Null),
            )
        }
        (&Method::POST, "/replicate") => match serde_json::from_slice::<Key>(&body) {
            Ok(key) if !key.versions.is_empty() => {
                region.apply_replicated(key);
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            Ok(_) => error(StatusCode::BAD_REQUEST, "a key needs at least one version"),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (_, "/faults" | "/faults/clear" | "/stats" | "/replicate") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}
