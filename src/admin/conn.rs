//! Accepting and serving admin and probe connections within fixed bounds,
//! so a local client that opens many connections, or sends a body that never
//! finishes, cannot exhaust the process's file descriptors (which the proxy
//! shares) nor lock operators out for long:
//! - at most [`MAX_CONNECTIONS`] open per listener; past it a new connection
//!   is closed at once, as `proxy.max_connections` and Envoy's listener
//!   connection limit do. Each listener has its own cap, so a flood of the
//!   probe listener leaves the operator's listener alone, and the reverse;
//! - [`HEADER_READ_TIMEOUT`] to send each request head, which also bounds a
//!   keep-alive connection left idle;
//! - [`REQUEST_TIMEOUT`] for a request's body and its answer: past it the
//!   answer is 408 and the connection closes;
//! - [`MAX_CONNECTION_AGE`], then the connection is closed gracefully, which
//!   also ends one whose client stopped reading an answer.
//!
//! The bounds are fixed rather than configured: admin clients (`failway
//! ctl`, kubelet, Prometheus) make one request at a time, and the
//! open-file check at start-up keeps room for them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use super::{respond, AdminState, Listener};

/// Connections open at once on one admin or probe listener.
pub const MAX_CONNECTIONS: usize = 64;
/// Bound on sending one request head, and on a keep-alive connection's idle
/// time before the next one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one request's body and its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed (gracefully: the request in flight is answered)
/// once it is this old.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// Serves one admin or probe listener until `drain` turns true.
pub async fn serve(
    listener: TcpListener,
    which: Listener,
    state: Arc<AdminState>,
    mut drain: watch::Receiver<bool>,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "admin listener has no local address");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Warned once each time the cap fills, not once per refused connection.
    let mut full = false;
    loop {
        let (stream, peer) = tokio::select! {
            _ = drain.changed() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if !full {
                tracing::warn!(listener = ?which, max = MAX_CONNECTIONS, "admin connection limit reached; closing new connections until some finish");
                full = true;
            }
            tracing::debug!(%peer, "admin connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        full = false;
        tokio::spawn(connection(
            stream,
            peer,
            which,
            local,
            state.clone(),
            drain.clone(),
            permit,
        ));
    }
}

/// Serves one connection within the bounds above; `permit` is its place
/// under the cap.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    which: Listener,
    local: SocketAddr,
    state: Arc<AdminState>,
    mut drain: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let svc = tower::ServiceBuilder::new()
        // Marked before anything records headers: a token never reaches a
        // trace.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        // Spans and events at debug: a 503 from /readyz while draining is
        // an answer, not a failure to log as an error.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        // A 408 ends the connection: what is left of the body is not worth
        // waiting for, and the connection's place is freed.
        .map_response(|mut r: http::Response<_>| {
            if r.status() == StatusCode::REQUEST_TIMEOUT {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        })
        // A request (its body included) that takes longer is answered 408:
        // a slow client cannot hold an operator endpoint.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(respond(state, which, local, peer, req).await) }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    let age = tokio::time::sleep(MAX_CONNECTION_AGE);
    tokio::pin!(age);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = drain.changed() => {}
        _ = &mut age => {}
    }
    conn.as_mut().graceful_shutdown();
    // The request in flight has its own bound; this one covers a client
    // that no longer reads its answer.
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn).await;
}
