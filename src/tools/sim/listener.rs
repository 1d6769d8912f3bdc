//! The public API listener and the faults that act on it.
//!
//! An outage closes the listening socket (new connections are refused, not
//! left pending) and drops every open connection; when it ends the socket
//! is bound again on the same port. Per request, in this order: the body is
//! read, the request is counted, `latency` is waited, a `hang` holds the
//! request until the hang is lifted (then it is answered normally), a 503
//! fault answers in Key Protect's error format, and otherwise the API
//! answers. `reset_after` caps each response at N bytes and then resets the
//! connection (RST, via `SO_LINGER` 0), the way a dying load balancer cuts a
//! reply short. HTTP/1.1 only.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::api::{self, Resp};
use super::error::ApiError;
use super::faults::FaultControl;
use super::region::Region;

const MAX_BODY: usize = 1024 * 1024;
const REBIND_EVERY: Duration = Duration::from_millis(20);
/// No reset armed.
const UNLIMITED: usize = usize::MAX;

/// Serves the API on `listener` (bound to `addr`) until `shutdown` is true.
pub async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    region: Arc<Region>,
    faults: FaultControl,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut switches = faults.subscribe();
    let mut listener = Some(listener);
    let mut conns = JoinSet::new();
    loop {
        let outage = switches.borrow_and_update().outage;
        match (outage, listener.take()) {
            (true, old) => {
                if old.is_some() {
                    tracing::info!(region = %region.name, "outage: API listener closed");
                }
                drop(old);
                conns.abort_all();
                tokio::select! {
                    _ = shutdown.changed() => return,
                    r = switches.changed() => if r.is_err() { return },
                }
            }
            (false, None) => match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(region = %region.name, %addr, "outage over: API listener bound again");
                    listener = Some(l);
                }
                Err(e) => {
                    tracing::warn!(region = %region.name, %addr, error = %e, "cannot bind the API port again; retrying");
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(REBIND_EVERY) => {}
                    }
                }
            },
            (false, Some(l)) => {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    r = switches.changed() => if r.is_err() { return },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    accepted = l.accept() => match accepted {
                        Ok((stream, _)) => {
                            conns.spawn(serve_conn(stream, region.clone(), faults.clone()));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "API accept failed");
                            tokio::time::sleep(REBIND_EVERY).await;
                        }
                    },
                }
                listener = Some(l);
            }
        }
    }
}

async fn serve_conn(stream: TcpStream, region: Arc<Region>, faults: FaultControl) {
    let _ = stream.set_nodelay(true);
    let budget = Arc::new(AtomicUsize::new(UNLIMITED));
    let io = ResetAfter {
        inner: stream,
        budget: budget.clone(),
    };
    let name = region.name.clone();
    let svc = service_fn(move |req| {
        let (region, faults, budget) = (region.clone(), faults.clone(), budget.clone());
        async move { Ok::<_, Infallible>(respond(req, &region, &faults, &budget).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::debug!(region = %name, error = %e, "API connection ended");
    }
}

async fn respond(
    req: hyper::Request<Incoming>,
    region: &Region,
    faults: &FaultControl,
    budget: &AtomicUsize,
) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return ApiError::bad_body("The request body is too large or was cut off")
                .into_response()
        }
    };
    let class = api::classify(&parts);
    region.counters.count(class);
    let mut switches = faults.subscribe();
    let now = switches.borrow_and_update().clone();
    budget.store(now.reset_after.unwrap_or(UNLIMITED), Ordering::SeqCst);
    if !now.latency.is_zero() {
        tokio::time::sleep(now.latency).await;
    }
    if switches.borrow().hang {
        // Held until the hang is lifted; the connection's end drops it.
        let _ = switches.wait_for(|f| !f.hang).await;
    }
    if let Some(retry_after) = faults.current().error_503 {
        return ApiError::unavailable(retry_after).into_response();
    }
    api::handle(region, class, &parts, &body)
}

/// A connection that lets at most `budget` more response bytes out, then
/// fails every read and write after switching to `SO_LINGER` 0, so hyper
/// drops it and the kernel sends RST instead of FIN.
struct ResetAfter {
    inner: TcpStream,
    budget: Arc<AtomicUsize>,
}

impl ResetAfter {
    fn reset(&self) -> io::Error {
        let _ = self.inner.set_zero_linger();
        io::Error::new(io::ErrorKind::ConnectionReset, "simulated reset")
    }
}

impl AsyncRead for ResetAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.budget.load(Ordering::SeqCst) == 0 {
            return Poll::Ready(Err(self.reset()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetAfter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let budget = self.budget.load(Ordering::SeqCst);
        if budget == 0 {
            return Poll::Ready(Err(self.reset()));
        }
        let n = buf.len().min(budget);
        let written = Pin::new(&mut self.inner).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(k)) = written {
            if budget != UNLIMITED {
                self.budget.fetch_sub(k, Ordering::SeqCst);
            }
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
