//! `GET /events`: server-sent events for the console. An event `status`
//! carries the rendered services fragment each time a service publishes a
//! new failover snapshot (the failover driver's `watch` channel says
//! when), and an event `heartbeat` every [`HEARTBEAT`], so the page tells
//! a quiet stream from a lost one.
//!
//! At most [`MAX_STREAMS`] are open at once (503 past it): each holds an
//! admin connection, and the listener's connection cap must keep room for
//! `failway ctl` and kubelet. A stream ends after [`STREAM_AGE`], before
//! the admin connection's own age limit would cut it, and the browser
//! reconnects (`retry`) on a fresh connection.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::super::AdminState;

/// `/events` streams open at once.
pub const MAX_STREAMS: usize = 16;
/// A heartbeat event after this long without another.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A stream's lifetime; under the admin connection's `MAX_CONNECTION_AGE`.
pub const STREAM_AGE: Duration = Duration::from_secs(45);
/// What the browser waits before reconnecting, in milliseconds.
const RETRY_MS: u32 = 500;

pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// The cap on open streams.
pub struct Streams(Arc<Semaphore>);

impl Default for Streams {
    fn default() -> Self {
        Streams(Arc::new(Semaphore::new(MAX_STREAMS)))
    }
}

/// A body fed by a task through a channel; the task sees the receiver gone
/// (a closed connection) at its next send.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// One SSE event; every line of `data` becomes a `data:` line.
pub fn event(name: &str, data: &str) -> Bytes {
    let mut out = format!("event: {name}\n");
    for line in data.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    if data.is_empty() {
        out.push_str("data:\n");
    }
    out.push('\n');
    Bytes::from(out)
}

/// Answers `GET /events`.
pub fn open(state: Arc<AdminState>) -> Response<BoxBody> {
    let Ok(permit) = state.console.streams.0.clone().try_acquire_owned() else {
        let mut r = Response::new(
            Full::new(Bytes::from(format!(
                "too many open /events streams (at most {MAX_STREAMS})\n"
            )))
            .boxed_unsync(),
        );
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(feed(state, tx, permit));
    let mut r = Response::new(ChannelBody(rx).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Its own connection: a stream never shares the age of another request's.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    super::harden(&mut r);
    r
}

/// Any of `rxs` changed (or all senders are gone, as when services are
/// reloaded: the caller then subscribes again).
async fn any_change(rxs: &mut [watch::Receiver<()>]) {
    if rxs.is_empty() {
        return std::future::pending().await;
    }
    let waits = rxs.iter_mut().map(|rx| Box::pin(rx.changed()));
    first_of(waits).await;
}

/// Waits for the first of `futs` to finish.
async fn first_of<F: std::future::Future + Unpin>(futs: impl Iterator<Item = F>) {
    let mut futs: Vec<F> = futs.collect();
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if Pin::new(f).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

fn subscribe(state: &AdminState) -> Vec<watch::Receiver<()>> {
    state
        .proxy
        .routes()
        .services()
        .map(|s| s.failover().changes())
        .collect()
}

/// Sends the state now and at every change, heartbeats in between, until
/// the client goes or the stream is [`STREAM_AGE`] old.
async fn feed(state: Arc<AdminState>, tx: mpsc::Sender<Bytes>, _permit: OwnedSemaphorePermit) {
    let end = tokio::time::sleep(STREAM_AGE);
    tokio::pin!(end);
    let mut rxs = subscribe(&state);
    let mut last = String::new();
    if tx
        .send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
        .await
        .is_err()
    {
        return;
    }
    loop {
        // Draining: the stream ends, so the page says it lost the server
        // rather than showing a state that no longer changes.
        if !state.ready.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let doc = super::document(&state).await;
        let html = super::render::services(&doc, SystemTime::now());
        if html != last {
            if tx.send(event("status", &html)).await.is_err() {
                return;
            }
            last = html;
        }
        tokio::select! {
            _ = &mut end => return,
            _ = any_change(&mut rxs) => {
                if rxs.iter().any(|rx| rx.has_changed().is_err()) {
                    rxs = subscribe(&state);
                }
            }
            _ = tokio::time::sleep(HEARTBEAT) => {
                // Services replaced by a reload have new channels.
                rxs = subscribe(&state);
                if tx.send(event("heartbeat", "")).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::event;

    #[test]
    fn every_line_of_data_is_a_data_line() {
        assert_eq!(
            &event("status", "<p>\n</p>")[..],
            b"event: status\ndata: <p>\ndata: </p>\n\n"
        );
        assert_eq!(&event("heartbeat", "")[..], b"event: heartbeat\ndata:\n\n");
    }
}
