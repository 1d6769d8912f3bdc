//! The body failway sends to the client, and the access log that rides on it.
//!
//! The access-log event is emitted when hyper drops the response body: after
//! the last byte was written, or when the client went away. So the duration
//! and byte counts it shows are the real ones, not the time to the head.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use super::conn::ConnTracker;
use super::stall::StreamStall;
use crate::classify::Class;
use crate::region::Region;
use crate::upstream::body::{BodyWatch, BoxError};

/// One request's access-log record; logged on drop.
pub struct AccessLog {
    pub method: http::Method,
    /// Logged as its path only: the query may carry identifiers.
    pub uri: http::Uri,
    pub correlation_id: http::HeaderValue,
    /// The client's address as the socket shows it.
    pub client: std::net::SocketAddr,
    /// `-` when no service matched.
    pub service: Arc<str>,
    pub class: Class,
    pub region: Option<Region>,
    /// The answering region's `host:port`, as configured.
    pub upstream: Option<http::uri::Authority>,
    /// Attempts sent upstream (0: failway answered itself).
    pub attempts: u32,
    pub status: u16,
    pub start: Instant,
    pub bytes_out: u64,
    pub request_body: Arc<BodyWatch>,
    pub conn: Arc<ConnTracker>,
    /// Whether the body reached its end (false: the client went away).
    pub complete: bool,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.conn.request_finished();
        tracing::info!(
            target: "failway::access",
            method = %self.method,
            path = self.uri.path(),
            client = %self.client,
            service = &*self.service,
            region = self.region.map_or("none", Region::as_str),
            upstream = self.upstream.as_ref().map_or("-", |a| a.as_str()),
            attempts = self.attempts,
            status = self.status,
            class = self.class.as_str(),
            duration_ms = millis(self.start.elapsed()),
            bytes_in = self.request_body.bytes(),
            bytes_out = self.bytes_out,
            correlation_id = self.correlation_id.to_str().unwrap_or("-"),
            complete = self.complete,
        );
    }
}

/// Milliseconds to the microsecond (`0.038`, not `0.037765999999999994`).
fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Upstream { #[pin] inner: hyper::body::Incoming },
        Local { #[pin] inner: Full<Bytes> },
    }
}

impl Kind {
    fn is_end_stream(&self) -> bool {
        match self {
            Kind::Upstream { inner } => inner.is_end_stream(),
            Kind::Local { inner } => inner.is_end_stream(),
        }
    }
}

pin_project! {
    /// A response body: streamed from the upstream, or made by failway.
    pub struct ResponseBody {
        #[pin]
        kind: Kind,
        log: Option<AccessLog>,
        // On h2: tells the stream's task whether hyper still asks for data.
        stall: Option<Arc<StreamStall>>,
    }
}

fn stream_stall() -> Option<Arc<StreamStall>> {
    let stall = StreamStall::current();
    // The head is out; the body is owed its first poll.
    if let Some(s) = &stall {
        s.yielded();
    }
    stall
}

impl ResponseBody {
    pub fn upstream(inner: hyper::body::Incoming, mut log: AccessLog) -> Self {
        log.complete = inner.is_end_stream();
        ResponseBody {
            kind: Kind::Upstream { inner },
            log: Some(log),
            stall: stream_stall(),
        }
    }

    pub fn local(inner: Full<Bytes>, mut log: Option<AccessLog>) -> Self {
        if let Some(log) = log.as_mut() {
            log.complete = inner.is_end_stream();
        }
        ResponseBody {
            kind: Kind::Local { inner },
            log,
            stall: stream_stall(),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(s) = this.stall.as_ref() {
            s.polled();
        }
        let res: Poll<Option<Result<Frame<Bytes>, BoxError>>> = match this.kind.as_mut().project() {
            KindProj::Upstream { inner } => inner.poll_frame(cx).map_err(Into::into),
            KindProj::Local { inner } => inner.poll_frame(cx).map_err(|never| match never {}),
        };
        if let (Some(s), Poll::Ready(Some(Ok(_)))) = (this.stall.as_ref(), &res) {
            s.yielded();
        }
        if let Some(log) = this.log.as_mut() {
            match &res {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        log.bytes_out += d.len() as u64;
                    }
                    // hyper stops polling once a Content-Length is
                    // satisfied, so the end shows here, not as `None`.
                    if this.kind.is_end_stream() {
                        log.complete = true;
                    }
                }
                Poll::Ready(None) => log.complete = true,
                _ => {}
            }
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.kind.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { inner } => inner.size_hint(),
            Kind::Local { inner } => inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_are_logged_in_milliseconds_with_three_decimals() {
        assert_eq!(
            super::millis(Duration::from_nanos(37_765_999)).to_string(),
            "37.766"
        );
        assert_eq!(
            super::millis(Duration::from_nanos(37_766)).to_string(),
            "0.038"
        );
        assert_eq!(
            super::millis(Duration::from_micros(1_052)).to_string(),
            "1.052"
        );
        assert_eq!(super::millis(Duration::ZERO).to_string(), "0");
    }
}
