//! Per-connection bookkeeping for the client side: requests in flight, the
//! last activity, when the head of the next HTTP/1 request started
//! arriving, and since when writes to the client have been stuck. The
//! connection task reads it to enforce `proxy.header_read_timeout` (a
//! slowloris client is cut off) separately from `proxy.idle_timeout` (an
//! idle keep-alive connection is closed gracefully), and
//! `proxy.response_idle_timeout` (a client that stopped reading is cut off,
//! so the upstream connection its answer holds is freed).
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection
//! idles between requests, which would cap the idle timeout at the header
//! timeout; so failway tracks both itself. [`HeadScan`] follows the request
//! stream as it is read, so a head that arrived in the same read as the
//! request before it (pipelining) is timed too: hyper then parses it from
//! its buffer, with no read to see.

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
    /// Cleared when [`HeadScan`] cannot follow the stream (a chunked
    /// body): heads are then timed from the reads between requests.
    scanning: AtomicBool,
    /// Milliseconds since `base` (+1) when a write to the client last
    /// found it not reading; 0 while writes go through.
    write_stalled: AtomicU64,
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
            scanning: AtomicBool::new(true),
            write_stalled: AtomicU64::new(0),
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
        if !self.scanning.load(Ordering::Relaxed) {
            self.head_started.store(0, Ordering::Relaxed);
        }
    }

    /// The first byte of a head arrived (the scan saw it).
    fn head_begins(&self) {
        if self.head_started.load(Ordering::Relaxed) == 0 {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// A head is complete (the scan saw its end).
    fn head_complete(&self) {
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
        if self.h2.load(Ordering::Relaxed)
            || self.scanning.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::Relaxed) != 0
        {
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
            // A pipelined head waited behind the response before it.
            ms => {
                let last = self.last_activity.load(Ordering::Relaxed);
                Some(self.at((ms - 1).max(last)) + header_read_timeout)
            }
        }
    }

    /// A write to the client did not go through (Pending) or did.
    fn on_write(&self, blocked: bool) {
        let stalled = self.write_stalled.load(Ordering::Relaxed);
        if blocked && stalled == 0 {
            self.write_stalled
                .store(self.now_ms() + 1, Ordering::Relaxed);
        } else if !blocked && stalled != 0 {
            self.write_stalled.store(0, Ordering::Relaxed);
        }
    }

    /// When the client, not reading what failway writes, is to be cut off.
    pub fn write_deadline(&self, response_idle_timeout: std::time::Duration) -> Option<Instant> {
        match self.write_stalled.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.at(ms - 1) + response_idle_timeout),
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

/// Where an HTTP/1 request stream stands, followed byte by byte through
/// heads and by length through bodies.
#[derive(Debug)]
enum HeadScan {
    /// In a head. `started`: a byte other than CR or LF came (a stray CRLF
    /// between requests is no head); `line` holds the start of the current
    /// line, enough for the framing headers' names and values.
    Head {
        started: bool,
        line: Vec<u8>,
        length: u64,
    },
    Body {
        left: u64,
    },
    /// A chunked body or framing the scan does not follow.
    Lost,
}

/// How much of a header line the scan keeps.
const LINE_KEPT: usize = 64;

impl HeadScan {
    fn head() -> HeadScan {
        HeadScan::Head {
            started: false,
            line: Vec::new(),
            length: 0,
        }
    }

    fn feed(&mut self, mut data: &[u8], tracker: &ConnTracker) {
        while !data.is_empty() {
            match self {
                HeadScan::Lost => return,
                HeadScan::Body { left } => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        *self = HeadScan::head();
                    }
                }
                HeadScan::Head {
                    started,
                    line,
                    length,
                } => {
                    if !*started {
                        // A stray CRLF between requests is no head.
                        let skip = data
                            .iter()
                            .position(|&b| b != b'\r' && b != b'\n')
                            .unwrap_or(data.len());
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                        *started = true;
                        tracker.head_begins();
                    }
                    // A line at a time rather than a byte at a time: a head
                    // arrives in one read as a rule.
                    let Some(end) = data.iter().position(|&b| b == b'\n') else {
                        keep(line, data);
                        return;
                    };
                    keep(line, &data[..end]);
                    data = &data[end + 1..];
                    let text = line.strip_suffix(b"\r").unwrap_or(line);
                    if text.is_empty() {
                        tracker.head_complete();
                        if *length == 0 {
                            // The next head reuses the line's buffer.
                            *started = false;
                            line.clear();
                        } else {
                            *self = HeadScan::Body { left: *length };
                        }
                        continue;
                    }
                    match framing(text) {
                        Framing::Other => {}
                        Framing::Length(n) => *length = n,
                        Framing::Unknown => {
                            *self = HeadScan::Lost;
                            tracker.scanning.store(false, Ordering::Relaxed);
                            return;
                        }
                    }
                    line.clear();
                }
            }
        }
    }
}

/// Appends `part` of a header line to `line`, up to [`LINE_KEPT`] bytes
/// and a `~` marking a cut line.
fn keep(line: &mut Vec<u8>, part: &[u8]) {
    if line.len() > LINE_KEPT {
        return;
    }
    let room = LINE_KEPT - line.len();
    if part.len() <= room {
        line.extend_from_slice(part);
    } else {
        line.extend_from_slice(&part[..room]);
        line.push(b'~');
    }
}

enum Framing {
    Other,
    Length(u64),
    /// `Transfer-Encoding`, or a `Content-Length` the scan cannot read.
    Unknown,
}

/// What a header line says about the body's framing.
fn framing(line: &[u8]) -> Framing {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Framing::Other;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.eq_ignore_ascii_case(b"transfer-encoding") {
        return Framing::Unknown;
    }
    if !name.eq_ignore_ascii_case(b"content-length") {
        return Framing::Other;
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(Framing::Unknown, Framing::Length)
}

pin_project! {
    /// The client connection's IO, reporting reads to its [`ConnTracker`].
    pub struct TrackedIo<S> {
        #[pin]
        inner: S,
        tracker: Arc<ConnTracker>,
        scan: HeadScan,
    }
}

impl<S> TrackedIo<S> {
    pub fn new(inner: S, tracker: Arc<ConnTracker>) -> Self {
        TrackedIo {
            inner,
            tracker,
            scan: HeadScan::head(),
        }
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
            let read = &buf.filled()[before..];
            this.tracker.on_read(read);
            if !this.tracker.h2.load(Ordering::Relaxed) {
                this.scan.feed(read, this.tracker);
            }
        }
        res
    }
}

/// A write that could take nothing starts (or continues) a stall; one that
/// took bytes ends it.
fn track_write(tracker: &ConnTracker, res: &Poll<io::Result<usize>>) {
    match res {
        Poll::Pending => tracker.on_write(true),
        Poll::Ready(Ok(n)) if *n > 0 => tracker.on_write(false),
        Poll::Ready(_) => {}
    }
}

impl<S: AsyncWrite> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        track_write(this.tracker, &res);
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = this.inner.poll_flush(cx);
        match res {
            Poll::Pending => this.tracker.on_write(true),
            Poll::Ready(Ok(())) => this.tracker.on_write(false),
            Poll::Ready(Err(_)) => {}
        }
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        track_write(this.tracker, &res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reads` one after another; returns whether a head is arriving
    /// (its timer running) after each, and the scan's last state.
    fn scan(reads: &[&[u8]]) -> (Vec<bool>, HeadScan) {
        let t = ConnTracker::new();
        t.head_complete();
        let mut s = HeadScan::head();
        let mut arriving = Vec::new();
        for r in reads {
            s.feed(r, &t);
            arriving.push(t.head_started.load(Ordering::Relaxed) != 0);
        }
        (arriving, s)
    }

    #[test]
    fn a_whole_request_leaves_no_head_arriving() {
        let (a, s) = scan(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"]);
        assert_eq!(a, [false]);
        assert!(matches!(s, HeadScan::Head { started: false, .. }));
    }

    #[test]
    fn the_start_of_a_pipelined_head_is_seen_behind_a_body() {
        let (a, _) = scan(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HT"]);
        assert_eq!(a, [true]);
        let (a, _) = scan(&[
            b"POST / HTTP/1.1\r\ncontent-length:  3 \r\n\r\nab",
            b"c",
            b"\r\n",
            b"G",
        ]);
        assert_eq!(a, [false, false, false, true], "a stray CRLF is no head");
    }

    #[test]
    fn heads_and_lengths_split_across_reads_are_followed() {
        let (a, s) = scan(&[
            b"GET / HTTP/1.1\r\nHo",
            b"st: a\r\nContent-Le",
            b"ngth: 2\r\n\r",
            b"\nh",
        ]);
        assert_eq!(a, [true, true, true, false]);
        assert!(matches!(s, HeadScan::Body { left: 1 }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_stall_is_timed_from_its_first_blocked_write() {
        let t = ConnTracker::new();
        let timeout = std::time::Duration::from_secs(30);
        assert_eq!(t.write_deadline(timeout), None);
        t.on_write(true);
        let started = Instant::now();
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        t.on_write(true);
        assert_eq!(t.write_deadline(timeout), Some(started + timeout));
        t.on_write(false);
        assert_eq!(t.write_deadline(timeout), None);
    }

    #[test]
    fn a_chunked_or_unreadable_length_stops_the_scan() {
        for head in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n",
        ] {
            let (_, s) = scan(&[head]);
            assert!(matches!(s, HeadScan::Lost));
        }
    }
}
