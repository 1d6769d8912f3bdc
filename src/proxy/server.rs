//! The client-facing listener: accepts connections up to
//! `proxy.max_connections` (the excess is closed at once while existing
//! clients keep being served), serves HTTP/1.1 and h2c on each with every
//! hyper/h2 limit set explicitly, enforces the header-read, idle and
//! response-idle timeouts (a client that takes no response bytes for
//! `proxy.response_idle_timeout` is cut off; on h2 the stream, see
//! `stall`), and drains on shutdown (graceful close, h2 GOAWAY) within the
//! grace period.
//!
//! When accepting fails because failway is out of file descriptors (or
//! socket buffers, memory), the loop backs off, from 50 ms up to 1 s, and
//! warns once per episode: the connection waits in the listen backlog, and
//! the descriptors the admin listener keeps are not fought over.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use super::conn::{ConnTracker, TrackedIo};
use super::metrics::ListenerMetrics;
use super::protocol::{self, Builders, Protocol};
use super::{ConnInfo, Proxy};
use crate::tls::TlsAcceptor;
use crate::upstream::client::LocalKind;

/// Connection-level settings, from `[proxy]`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub response_idle_timeout: Duration,
    pub max_header_bytes: u64,
    pub max_headers: usize,
}

/// Accepting again after running out of descriptors: first wait, and most.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The accept loop and its connections.
pub struct Server {
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    tls: Option<TlsAcceptor>,
}

impl Server {
    pub fn new(
        listener: TcpListener,
        proxy: Arc<Proxy>,
        settings: ServerSettings,
        tls: Option<TlsAcceptor>,
    ) -> Server {
        Server {
            listener,
            proxy,
            settings,
            tls,
        }
    }

    /// Accepts until `drain` turns true, then waits for every connection to
    /// finish its in-flight requests (the caller bounds that wait).
    pub async fn run(self, mut drain: watch::Receiver<bool>) {
        let builder = Arc::new(Builders::new(&self.settings));
        let permits = Arc::new(Semaphore::new(self.settings.max_connections));
        // Each connection task holds a sender; all dropped = all done.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let metrics = self.proxy.metrics().clone();
        let mut starved = Starved::default();
        loop {
            tokio::select! {
                _ = drain.changed() => break,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => {
                            starved.over();
                            a
                        }
                        Err(e) => {
                            tokio::time::sleep(starved.backoff(&e, &metrics)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        metrics.connections_rejected.inc();
                        tracing::debug!(%peer, "max_connections reached; closing new connection");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let proxy = self.proxy.clone();
                    let builder = builder.clone();
                    let settings = self.settings.clone();
                    let drain = drain.clone();
                    let done = done_tx.clone();
                    let metrics = metrics.clone();
                    let tls = self.tls.clone();
                    let fut = async move {
                        metrics.connections_open.inc();
                        match tls {
                            None => serve_plain(stream, peer, proxy, &builder, &settings, drain).await,
                            // Boxed: a TLS connection's state is larger, and
                            // every plain connection's task would carry its size.
                            Some(acceptor) => Box::pin(serve_tls(acceptor, stream, peer, proxy, &builder, &settings, drain)).await,
                        }
                        metrics.connections_open.dec();
                        drop(permit);
                        drop(done);
                    };
                    tokio::spawn(fut);
                }
            }
        }
        drop(self.listener);
        drop(done_tx);
        let _ = done_rx.recv().await;
    }
}

/// The accept loop's state while accepting fails.
#[derive(Default)]
struct Starved {
    /// The wait before the next try while out of descriptors; zero when
    /// accepting works.
    wait: Duration,
}

impl Starved {
    /// How long to wait after `e`. Out of descriptors (or buffers,
    /// memory): warned at the first failure of a run, counted every time,
    /// waits doubling to a second. Other errors concern one connection.
    fn backoff(&mut self, e: &std::io::Error, metrics: &ListenerMetrics) -> Duration {
        let Some(kind) = LocalKind::of(e, true) else {
            tracing::warn!(error = %e, "accept failed");
            return Duration::from_millis(20);
        };
        metrics.count_local(kind);
        if self.wait.is_zero() {
            tracing::warn!(error = %e, kind = kind.as_str(), "cannot accept client connections: failway is out of its own resources; new clients wait in the listen backlog (retrying with backoff)");
            self.wait = ACCEPT_BACKOFF_FIRST;
        } else {
            self.wait = (self.wait * 2).min(ACCEPT_BACKOFF_MAX);
        }
        self.wait
    }

    /// A connection was accepted.
    fn over(&mut self) {
        if !self.wait.is_zero() {
            tracing::info!("accepting client connections again");
            self.wait = Duration::ZERO;
        }
    }
}

/// A plain-TCP client: the protocol from its first bytes, then served.
async fn serve_plain(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    builder: &Builders,
    settings: &ServerSettings,
    mut drain: watch::Receiver<bool>,
) {
    if *drain.borrow() {
        return;
    }
    // Before its first byte a client is idle, as between two requests; a
    // client whose first bytes are part of the h2 preface ("P") and no more
    // is cut at `header_read_timeout` (and then that again for its head).
    let protocol = tokio::select! {
        p = protocol::sniff(&stream, settings.header_read_timeout) => p,
        _ = tokio::time::sleep(settings.idle_timeout) => return,
        _ = drain.changed() => return,
    };
    let Some(protocol) = protocol else {
        tracing::debug!(%peer, "request head not received in time; closing");
        return;
    };
    serve_connection(
        stream, None, protocol, peer, proxy, builder, settings, drain,
    )
    .await
}

async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    builder: &Builders,
    settings: &ServerSettings,
    drain: watch::Receiver<bool>,
) {
    // A client that never finishes its handshake is cut off like a slow
    // request head.
    let handshake =
        tokio::time::timeout(settings.header_read_timeout, acceptor.accept(stream)).await;
    match handshake {
        Ok(Ok(tls_stream)) => {
            let sni = tls_stream.get_ref().1.server_name().map(Arc::from);
            let tls = Some(sni);
            // Over TLS, HTTP/2 only by ALPN (RFC 9113, section 3.3).
            let protocol = if crate::tls::negotiated_h2(&tls_stream) {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
            serve_connection(
                tls_stream, tls, protocol, peer, proxy, builder, settings, drain,
            )
            .await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// `tls`: for a TLS connection, the server name the client sent (SNI).
#[allow(clippy::too_many_arguments)]
async fn serve_connection<S>(
    stream: S,
    tls: Option<Option<Arc<str>>>,
    protocol: Protocol,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    builder: &Builders,
    settings: &ServerSettings,
    drain: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let tracker = ConnTracker::new();
    let info = ConnInfo {
        peer,
        peer_value: super::headers::ip_value(peer.ip()),
        tls: tls.is_some(),
        sni: tls.flatten(),
        tracker: tracker.clone(),
    };
    let io = TokioIo::new(TrackedIo::new(stream, tracker.clone()));
    // One reference count per request for the proxy and the connection's
    // details together.
    let shared = Arc::new((proxy, info));
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move {
            let (proxy, info) = &*shared;
            Ok::<_, Infallible>(proxy.handle(req, info).await)
        }
    });
    let watch = Watch {
        tracker: &tracker,
        peer,
        settings,
        drain,
    };
    match protocol {
        Protocol::Http1 => {
            let conn = builder.h1.serve_connection(io, svc);
            watch
                .drive(conn, http1::Connection::graceful_shutdown)
                .await
        }
        // Boxed: an HTTP/1.1 connection's task is not sized by HTTP/2's state.
        Protocol::Http2 => {
            let conn = builder.h2.serve_connection(io, svc);
            Box::pin(watch.drive(conn, http2::Connection::graceful_shutdown)).await
        }
    }
}

/// What drives a client connection to its end: its timeouts and the drain.
struct Watch<'a> {
    tracker: &'a ConnTracker,
    peer: SocketAddr,
    settings: &'a ServerSettings,
    drain: watch::Receiver<bool>,
}

impl Watch<'_> {
    /// Runs `conn` until it ends, a timeout cuts it, or the drain closes it
    /// gracefully (`shutdown`).
    async fn drive<C, F>(mut self, conn: C, shutdown: F)
    where
        C: std::future::Future<Output = Result<(), hyper::Error>>,
        F: Fn(std::pin::Pin<&mut C>),
    {
        let (tracker, peer, settings) = (self.tracker, self.peer, self.settings);
        tokio::pin!(conn);
        let mut closing = *self.drain.borrow();
        if closing {
            shutdown(conn.as_mut());
        }
        // One timer per connection, re-armed only when it fires, never per
        // request: it fires at least every `header_read_timeout` (or
        // `response_idle_timeout`, if shorter), so a request head that starts,
        // or a client that stops reading, is still cut at its exact deadline
        // (the first firing after it started re-arms the timer for that
        // deadline).
        let tick = settings
            .header_read_timeout
            .min(settings.response_idle_timeout);
        let sleep = tokio::time::sleep(tick.min(settings.idle_timeout));
        tokio::pin!(sleep);
        let drained = self.drain.changed();
        tokio::pin!(drained);
        loop {
            tokio::select! {
                // The connection first: it is what wakes this task on every request.
                biased;
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "client connection ended with an error");
                    }
                    return;
                }
                _ = &mut drained, if !closing => {
                    closing = true;
                    shutdown(conn.as_mut());
                }
                _ = &mut sleep => {
                    let now = tokio::time::Instant::now();
                    let head = tracker.head_deadline(settings.header_read_timeout);
                    if head.is_some_and(|d| d <= now) {
                        tracing::debug!(%peer, "request head not received in time; closing");
                        return;
                    }
                    // Dropping the connection drops the answer in flight, and
                    // the upstream connection it held.
                    let write = tracker.write_deadline(settings.response_idle_timeout);
                    if write.is_some_and(|d| d <= now) {
                        tracing::debug!(%peer, "client took no response bytes for response_idle_timeout; closing");
                        return;
                    }
                    let idle = tracker.idle_deadline(settings.idle_timeout);
                    if !closing && idle.is_some_and(|d| d <= now) {
                        closing = true;
                        shutdown(conn.as_mut());
                    }
                    let mut next = now + tick;
                    for d in [head, write].into_iter().flatten() {
                        next = next.min(d);
                    }
                    if let Some(i) = idle.filter(|_| !closing) {
                        next = next.min(i);
                    }
                    sleep.as_mut().reset(next);
                }
            }
        }
    }
}
