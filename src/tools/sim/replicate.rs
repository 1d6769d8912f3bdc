//! One-way replication from a primary simulator to a replica, the way Key
//! Protect's cross-region plan copies keys: same key ids, same material.
//!
//! Each change queues the whole key; one task sends the queue in order to
//! the replica's control port (`POST /replicate`), each item no earlier than
//! `lag` after its change. Going through the control port means a replica
//! whose public API is in an outage still receives everything. While the
//! replica cannot be reached or answers 5xx, the task retries the same item
//! with capped exponential backoff, so nothing is lost or reordered; a 4xx
//! (a replica that does not understand the message) is logged and skipped,
//! as retrying it could never succeed. Keys a replica receives are not
//! pushed on again, even if it has `--replicate-to` itself. The queue is
//! unbounded and in memory: a stopped primary forgets what it had not sent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::key::Key;
use super::region::{Counters, Region};

const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The sending side a primary's writes push into.
pub struct Replicator {
    tx: mpsc::UnboundedSender<(Instant, Key)>,
}

/// The receiving end, consumed by [`run`].
pub struct Feed {
    rx: mpsc::UnboundedReceiver<(Instant, Key)>,
}

pub fn channel() -> (Replicator, Feed) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Replicator { tx }, Feed { rx })
}

impl Replicator {
    pub fn push(&self, key: Key) {
        // The feed only goes away when the simulator stops.
        let _ = self.tx.send((Instant::now(), key));
    }
}

/// Sends the feed to `target` (the replica's control URL) until the
/// primary stops.
pub async fn run(mut feed: Feed, target: String, lag: Duration, region: Arc<Region>) {
    let url = format!("{}/replicate", target.trim_end_matches('/'));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    while let Some((changed_at, key)) = feed.rx.recv().await {
        tokio::time::sleep_until(changed_at + lag).await;
        let body = match serde_json::to_vec(&key) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(region = %region.name, error = %e, "cannot encode a key for replication");
                continue;
            }
        };
        let mut backoff = BACKOFF_FIRST;
        loop {
            match send(&client, &url, body.clone()).await {
                Ok(status) if status.is_success() => {
                    Counters::bump(&region.counters.replicated_out);
                    tracing::debug!(region = %region.name, key = %key.id, "replicated");
                    break;
                }
                Ok(status) if status.is_client_error() => {
                    tracing::error!(region = %region.name, key = %key.id, %status, "replica refused a key; skipped");
                    break;
                }
                Ok(status) => {
                    tracing::debug!(region = %region.name, %status, "replica failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e) => {
                    tracing::debug!(region = %region.name, error = %e, "replica unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// Why an attempt got no answer from the replica.
#[derive(Debug, Error)]
enum SendError {
    #[error("invalid replica URL: {0}")]
    Url(#[from] http::Error),
    #[error("{0}")]
    Connect(#[from] hyper_util::client::legacy::Error),
    #[error("timed out")]
    Timeout,
}

/// One attempt: the replica's status, or why there was none.
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    body: Bytes,
) -> Result<http::StatusCode, SendError> {
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    match tokio::time::timeout(SEND_TIMEOUT, client.request(req)).await {
        Ok(resp) => Ok(resp?.status()),
        Err(_) => Err(SendError::Timeout),
    }
}
