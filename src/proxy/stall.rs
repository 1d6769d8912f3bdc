//! h2 streams whose client stopped reading: `proxy.response_idle_timeout`
//! per stream.
//!
//! On h2 a client can keep reading the connection (answering pings) while
//! never opening a stream's flow-control window: hyper then waits for
//! window and stops polling the response body, and the upstream connection
//! carrying it stays held. Connection-level write stalls are the
//! connection task's (`conn`); this is the stream's share. Each h2 stream
//! task hyper spawns runs under [`StreamExec`], which gives it a
//! [`StreamStall`] (a task-local the response body finds). The body marks
//! when it handed out a frame and waits to be polled again; when the task
//! yields with a frame owed for `response_idle_timeout`, the task is
//! dropped, which resets the stream (`CANCEL`) and drops the upstream
//! response with it.
//!
//! A timer exists only while a stream waits for window; a stream waiting
//! for its region (the body polled, nothing to hand out) is not stalled.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

tokio::task_local! {
    static STREAM: Arc<StreamStall>;
}

/// Whether an h2 stream's response body is owed a poll.
#[derive(Debug, Default)]
pub struct StreamStall {
    owed: AtomicBool,
}

impl StreamStall {
    /// The stall state of the h2 stream this task serves, if it is one.
    pub fn current() -> Option<Arc<StreamStall>> {
        STREAM.try_with(Arc::clone).ok()
    }

    /// The body was polled: whatever comes next, hyper asked for it.
    pub fn polled(&self) {
        self.owed.store(false, Ordering::Relaxed);
    }

    /// The body handed out its head or a frame and waits to be asked again.
    pub fn yielded(&self) {
        self.owed.store(true, Ordering::Relaxed);
    }

    fn owed(&self) -> bool {
        self.owed.load(Ordering::Relaxed)
    }
}

/// hyper's executor for h2 stream tasks: tokio's, each task watched.
#[derive(Debug, Clone, Copy)]
pub struct StreamExec {
    pub response_idle_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let state = Arc::new(StreamStall::default());
        tokio::spawn(Watched {
            fut: STREAM.scope(state.clone(), fut),
            state,
            timeout: self.response_idle_timeout,
            sleep: None,
        });
    }
}

pin_project! {
    struct Watched<F> {
        #[pin]
        fut: F,
        state: Arc<StreamStall>,
        timeout: Duration,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.fut.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if !this.state.owed() {
            this.sleep.set(None);
            return Poll::Pending;
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.timeout)));
        }
        let fired = this
            .sleep
            .as_pin_mut()
            .is_some_and(|sleep| sleep.poll(cx).is_ready());
        if fired {
            tracing::debug!(
                "h2 client took no response data for response_idle_timeout; resetting the stream"
            );
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;

    /// A stream task that hands out a frame, then waits for window that
    /// `window` opens (or never, when dropped).
    async fn stream(
        state_out: tokio::sync::oneshot::Sender<Arc<StreamStall>>,
        window: tokio::sync::oneshot::Receiver<()>,
    ) {
        let state = StreamStall::current().expect("runs as an h2 stream task");
        state.yielded();
        let _ = state_out.send(state.clone());
        let _ = window.await;
        state.polled();
        std::future::pending::<()>().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_owed_a_poll_for_the_timeout_is_dropped() {
        let exec = StreamExec {
            response_idle_timeout: Duration::from_secs(30),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (_window, window_rx) = tokio::sync::oneshot::channel::<()>();
        exec.execute(stream(tx, window_rx));
        let state = rx.await.unwrap();
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(Arc::strong_count(&state), 4, "still running");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(Arc::strong_count(&state), 1, "dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_for_its_region_is_left_alone() {
        let exec = StreamExec {
            response_idle_timeout: Duration::from_secs(30),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (window, window_rx) = tokio::sync::oneshot::channel::<()>();
        exec.execute(stream(tx, window_rx));
        let state = rx.await.unwrap();
        window.send(()).unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(Arc::strong_count(&state), 4, "still running");
    }
}
