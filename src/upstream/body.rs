//! Request bodies on their way upstream.
//!
//! [`Watched`] enforces `proxy.max_request_body` while streaming (chunked
//! included) and `proxy.body_idle_timeout`, and records *why* it failed in a
//! shared [`BodyWatch`] so the data path can answer 413 or 408 instead of a
//! generic upstream error. [`prefetch`] reads up to `retry.buffer_body` before
//! anything is sent upstream: a small body is then complete (replayable, and a
//! framing error in it reaches the upstream as zero bytes); a larger one
//! continues as a stream after the buffered prefix ([`UpstreamBody`]).
//!
//! Bodies are never logged: wrap and unwrap carry key material.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyFailure {
    #[error("request body exceeds the size limit")]
    TooLarge,
    #[error("request body stalled")]
    Idle,
    /// Broken framing or the client went away.
    #[error("request body could not be read from the client")]
    Client,
}

/// Where a streaming request body stands, for telling a slow client from a
/// slow region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProgress {
    /// Read to its end (or it had none).
    Complete,
    /// The last read found nothing yet: failway waits for the client.
    WaitingOnClient,
    /// The last read returned data: the region has not asked for more.
    WaitingOnUpstream,
}

/// Shared between a body and the request handler that forwarded it.
#[derive(Debug, Default)]
pub struct BodyWatch {
    failure: AtomicU8,
    bytes: AtomicU64,
    /// 0 waiting on upstream, 1 waiting on client, 2 complete.
    progress: AtomicU8,
    complete: tokio::sync::Notify,
}

impl BodyWatch {
    fn fail(&self, f: BodyFailure) {
        let v = match f {
            BodyFailure::TooLarge => 1,
            BodyFailure::Idle => 2,
            BodyFailure::Client => 3,
        };
        let _ = self
            .failure
            .compare_exchange(0, v, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The first failure the body hit, if any.
    pub fn failure(&self) -> Option<BodyFailure> {
        match self.failure.load(Ordering::Relaxed) {
            1 => Some(BodyFailure::TooLarge),
            2 => Some(BodyFailure::Idle),
            3 => Some(BodyFailure::Client),
            _ => None,
        }
    }

    /// Body bytes read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn progress(&self) -> BodyProgress {
        match self.progress.load(Ordering::Acquire) {
            2 => BodyProgress::Complete,
            1 => BodyProgress::WaitingOnClient,
            _ => BodyProgress::WaitingOnUpstream,
        }
    }

    /// Marks the body as read to its end.
    pub fn mark_complete(&self) {
        self.progress.store(2, Ordering::Release);
        self.complete.notify_waiters();
    }

    /// Records whether the last read of the body found nothing yet.
    pub fn set_waiting_on_client(&self, waiting: bool) {
        let v = u8::from(waiting);
        // Never moves a complete body back.
        let _ = self
            .progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p != 2).then_some(v)
            });
    }

    /// Resolves once the body is complete.
    pub async fn completed(&self) {
        let notified = self.complete.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.progress() != BodyProgress::Complete {
            notified.await;
        }
    }
}

pin_project! {
    /// A client body with the size limit and idle timeout applied.
    pub struct Watched<B> {
        #[pin]
        inner: B,
        limit: u64,
        seen: u64,
        idle: Duration,
        // Created on the first wait only: most bodies arrive in one read, and
        // a boxed timer keeps the body `Unpin` as hyper's client wants.
        timer: Option<Pin<Box<Sleep>>>,
        watch: Arc<BodyWatch>,
    }
}

impl<B> Watched<B> {
    pub fn new(inner: B, limit: u64, idle: Duration, watch: Arc<BodyWatch>) -> Self {
        Watched {
            inner,
            limit,
            seen: 0,
            idle,
            timer: None,
            watch,
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    this.watch.bytes.store(*this.seen, Ordering::Relaxed);
                    if *this.seen > *this.limit {
                        this.watch.fail(BodyFailure::TooLarge);
                        return Poll::Ready(Some(Err(BodyFailure::TooLarge.into())));
                    }
                }
                if let Some(t) = this.timer.as_mut() {
                    t.as_mut().reset(Instant::now() + *this.idle);
                }
                if frame.is_trailers() || this.inner.as_ref().is_end_stream() {
                    this.watch.mark_complete();
                } else {
                    this.watch.set_waiting_on_client(false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => {
                // The client's error text is not kept: it could echo body bytes.
                this.watch.fail(BodyFailure::Client);
                Poll::Ready(Some(Err(BodyFailure::Client.into())))
            }
            Poll::Ready(None) => {
                this.watch.mark_complete();
                Poll::Ready(None)
            }
            Poll::Pending => match this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(*this.idle)))
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    this.watch.fail(BodyFailure::Idle);
                    Poll::Ready(Some(Err(BodyFailure::Idle.into())))
                }
                Poll::Pending => {
                    this.watch.set_waiting_on_client(true);
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body read up to the buffer size before forwarding.
pub enum Prefetched<B> {
    /// The whole body; it can be replayed.
    Complete {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// The first `prefix` bytes; the rest still streams from `rest`.
    Partial { prefix: Bytes, rest: B },
}

/// Reads `body` until it ends or more than `buffer` bytes arrived.
pub async fn prefetch<B>(
    mut body: Watched<B>,
    buffer: u64,
) -> Result<Prefetched<Watched<B>>, BodyFailure>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    let mut buf = BytesMut::new();
    let mut first: Option<Bytes> = None;
    if body.is_end_stream() {
        body.watch.mark_complete();
        return Ok(Prefetched::Complete {
            data: Bytes::new(),
            trailers: None,
        });
    }
    loop {
        match body.frame().await {
            None => {
                let data = match first.take() {
                    Some(b) if buf.is_empty() => b,
                    Some(b) => {
                        buf.extend_from_slice(&b);
                        buf.freeze()
                    }
                    None => buf.freeze(),
                };
                return Ok(Prefetched::Complete {
                    data,
                    trailers: None,
                });
            }
            Some(Err(_)) => return Err(body.watch.failure().unwrap_or(BodyFailure::Client)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => {
                    // Most bodies arrive as one chunk: keep it without copying.
                    if first.is_none() && buf.is_empty() {
                        first = Some(chunk);
                    } else {
                        if let Some(b) = first.take() {
                            buf.extend_from_slice(&b);
                        }
                        buf.extend_from_slice(&chunk);
                    }
                    let held = first.as_ref().map_or(buf.len(), Bytes::len) as u64;
                    if held > buffer {
                        let prefix = first.take().unwrap_or_else(|| buf.split().freeze());
                        return Ok(Prefetched::Partial { prefix, rest: body });
                    }
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    let data = match first.take() {
                        Some(b) => b,
                        None => buf.freeze(),
                    };
                    return Ok(Prefetched::Complete { data, trailers });
                }
            },
        }
    }
}

pin_project! {
    /// The body failway sends upstream.
    #[project = UpstreamBodyProj]
    pub enum UpstreamBody<B> {
        /// Fully buffered (replayable by cloning the `Bytes`).
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
        /// A buffered prefix, then the rest of the client's stream.
        Streaming { prefix: Option<Bytes>, #[pin] rest: B, exact: Option<u64> },
    }
}

impl<B> UpstreamBody<B> {
    pub fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        UpstreamBody::Buffered {
            data: if data.is_empty() { None } else { Some(data) },
            trailers,
        }
    }

    /// `exact` is the client's declared Content-Length, kept so the upstream
    /// request is sized the same way.
    pub fn streaming(prefix: Bytes, rest: B, exact: Option<u64>) -> Self {
        UpstreamBody::Streaming {
            prefix: Some(prefix),
            rest,
            exact,
        }
    }
}

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            UpstreamBodyProj::Buffered { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            UpstreamBodyProj::Streaming { prefix, rest, .. } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                rest.poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            UpstreamBody::Streaming { prefix, rest, .. } => {
                prefix.is_none() && rest.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            UpstreamBody::Streaming { exact: Some(n), .. } => SizeHint::with_exact(*n),
            UpstreamBody::Streaming { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body that yields the given chunks, one per poll.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn frames(chunks: &[&[u8]]) -> Frames {
        Frames(chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect())
    }

    #[tokio::test]
    async fn small_body_is_complete_and_large_one_partial() {
        let w = Arc::new(BodyWatch::default());
        let body = Watched::new(
            frames(&[b"ab", b"cd"]),
            100,
            Duration::from_secs(1),
            w.clone(),
        );
        match prefetch(body, 10).await.unwrap() {
            Prefetched::Complete { data, .. } => assert_eq!(&data[..], b"abcd"),
            Prefetched::Partial { .. } => panic!("expected complete"),
        }
        let body = Watched::new(
            frames(&[b"abcdef", b"ghijkl", b"mn"]),
            100,
            Duration::from_secs(1),
            w,
        );
        match prefetch(body, 8).await.unwrap() {
            Prefetched::Partial { prefix, rest } => {
                assert_eq!(&prefix[..], b"abcdefghijkl");
                let all = UpstreamBody::streaming(prefix, rest, None)
                    .collect()
                    .await
                    .unwrap();
                assert_eq!(&all.to_bytes()[..], b"abcdefghijklmn");
            }
            Prefetched::Complete { .. } => panic!("expected partial"),
        }
    }

    #[tokio::test]
    async fn limit_is_enforced_while_streaming() {
        let w = Arc::new(BodyWatch::default());
        let body = Watched::new(
            frames(&[b"abcdef", b"ghijkl"]),
            8,
            Duration::from_secs(1),
            w.clone(),
        );
        assert_eq!(prefetch(body, 100).await.err(), Some(BodyFailure::TooLarge));
        assert_eq!(w.failure(), Some(BodyFailure::TooLarge));
    }
}
