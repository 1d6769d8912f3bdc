//! Per-connection bookkeeping for the client side: requests in flight, the
//! last activity, and when the head of the next HTTP/1 request started
//! arriving. The connection task reads it to enforce
//! `proxy.header_read_timeout` (a slowloris client is cut off) separately from
//! `proxy.idle_timeout` (an idle keep-alive connection is closed gracefully).
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection
//! idles between requests, which would cap the idle timeout at the header
//! timeout; so failway tracks both itself.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Shared between a connection's IO, its requests and its task.
#[derive(Debug)]
pub struct ConnTracker {
    base: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `base` (+1, so 0 means "not waiting for a head").
    head_started: AtomicU64,
    last_activity: AtomicU64,
    /// Set once the connection is known to speak h2 (no head timeout there:
    /// h2 has its own framing and pings).
    h2: AtomicBool,
    /// Set once the first bytes were seen.
    started: AtomicBool,
}

impl ConnTracker {
    pub fn new() -> Arc<ConnTracker> {
        let t = ConnTracker {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // A new connection must send its first head in time too.
            head_started: AtomicU64::new(1),
            last_activity: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            started: AtomicBool::new(false),
        };
        Arc::new(t)
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + std::time::Duration::from_millis(ms)
    }

    /// A request head was parsed and handed to the service.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// A response finished (or was abandoned).
    pub fn request_finished(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn on_read(&self, first_bytes: &[u8]) {
        if !self.started.swap(true, Ordering::Relaxed) && first_bytes.starts_with(b"PRI * HTTP/2") {
            self.h2.store(true, Ordering::Relaxed);
            self.head_started.store(0, Ordering::Relaxed);
        }
        if self.h2.load(Ordering::Relaxed) || self.in_flight.load(Ordering::Relaxed) != 0 {
            return;
        }
        if self.head_started.load(Ordering::Relaxed) == 0 {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// When the head now arriving must be complete, if one is arriving.
    pub fn head_deadline(&self, header_read_timeout: std::time::Duration) -> Option<Instant> {
        if self.in_flight() != 0 {
            return None;
        }
        match self.head_started.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.at(ms - 1) + header_read_timeout),
        }
    }

    /// When the connection counts as idle, if nothing is in flight.
    pub fn idle_deadline(&self, idle_timeout: std::time::Duration) -> Option<Instant> {
        if self.in_flight() != 0 {
            return None;
        }
        Some(self.at(self.last_activity.load(Ordering::Relaxed)) + idle_timeout)
    }
}

pin_project! {
    /// The client connection's IO, reporting reads to its [`ConnTracker`].
    pub struct TrackedIo<S> {
        #[pin]
        inner: S,
        tracker: Arc<ConnTracker>,
    }
}

impl<S> TrackedIo<S> {
    pub fn new(inner: S, tracker: Arc<ConnTracker>) -> Self {
        TrackedIo { inner, tracker }
    }
}

impl<S: AsyncRead> AsyncRead for TrackedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.tracker.on_read(&buf.filled()[before..]);
        }
        res
    }
}

impl<S: AsyncWrite> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
