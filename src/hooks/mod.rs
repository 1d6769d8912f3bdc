//! `[[hooks]]`: a JSON POST per event (the same record as the audit line)
//! to each hook subscribed to it. Events wait in a bounded queue per hook
//! and a background task delivers them in order, each attempt bounded by
//! the hook's `timeout`, retried with exponential backoff and jitter up to
//! `max_attempts`. Offering an event never waits: when a hook's queue is
//! full (a receiver that hangs or keeps failing), the event is dropped for
//! that hook and counted, so no request and no decision ever waits on a
//! receiver.
//!
//! A hook's URL may carry a secret in its path or query (chat webhooks
//! do), and its headers file a token: logs name a hook by its index and
//! origin only, and header values are never logged.

mod deliver;
mod headers;

use std::time::Duration;

use bytes::Bytes;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;

use crate::config::{HookConfig, HookEvent};

/// Events a hook's queue holds before new ones are dropped.
pub const QUEUE: usize = 256;
/// The first retry's delay; doubled after each failed attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `failway_hook_deliveries_total{result}`: `delivered`, `retried` (an
/// attempt failed, another follows), `failed` (given up after
/// `max_attempts`), `dropped` (the queue was full).
#[derive(Clone)]
pub struct HookMetrics {
    deliveries: IntCounterVec,
}

impl HookMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<HookMetrics> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "failway_hook_deliveries_total",
                "Hook deliveries by result: delivered, retried (an attempt failed and another follows), failed (given up after max_attempts), dropped (the hook's queue was full).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        for result in ["delivered", "retried", "failed", "dropped"] {
            deliveries.with_label_values(&[result]);
        }
        Ok(HookMetrics { deliveries })
    }

    fn count(&self, result: &str) {
        self.deliveries.with_label_values(&[result]).inc();
    }
}

/// Why the hooks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hooks[{index}]: {source}")]
    Client {
        index: usize,
        #[source]
        source: crate::upstream::client::ClientError,
    },
}

struct Hook {
    events: Vec<HookEvent>,
    tx: mpsc::Sender<Bytes>,
    /// `hooks[N] (scheme://host:port)`, what logs call it.
    name: String,
}

/// The configured hooks; cheap to share behind an `Arc`.
pub struct Hooks {
    hooks: Vec<Hook>,
    metrics: HookMetrics,
}

impl Hooks {
    /// Starts one delivery task per hook (none without `[[hooks]]`).
    pub fn start(configs: &[HookConfig], metrics: HookMetrics) -> Result<Hooks, HookError> {
        let mut hooks = Vec::new();
        for (index, cfg) in configs.iter().enumerate() {
            let name = format!("hooks[{index}] ({})", crate::config::origin(&cfg.url));
            let client =
                deliver::client(cfg).map_err(|source| HookError::Client { index, source })?;
            let (tx, rx) = mpsc::channel(QUEUE);
            let task = deliver::Delivery {
                cfg: cfg.clone(),
                client,
                metrics: metrics.clone(),
                name: name.clone(),
            };
            tokio::spawn(task.run(rx));
            hooks.push(Hook {
                events: cfg.events.clone(),
                tx,
                name,
            });
        }
        Ok(Hooks { hooks, metrics })
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Queues `record` (an audit record as JSON) for every hook subscribed
    /// to `event`; never waits.
    pub fn offer(&self, event: HookEvent, record: &serde_json::Value) {
        let subscribed: Vec<&Hook> = self
            .hooks
            .iter()
            .filter(|h| h.events.contains(&event))
            .collect();
        if subscribed.is_empty() {
            return;
        }
        let body = Bytes::from(record.to_string());
        for hook in subscribed {
            if hook.tx.try_send(body.clone()).is_err() {
                self.metrics.count("dropped");
                tracing::warn!(
                    hook = %hook.name,
                    event = event.as_str(),
                    queue = QUEUE,
                    "hook queue full (the receiver is slow or failing): event dropped for this hook"
                );
            }
        }
    }
}

/// The delay before attempt `n + 1` (after `n` failed ones): exponential
/// with full jitter over its upper half, so receivers that come back are
/// not hit by every instance at once.
fn backoff(failed: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failed.saturating_sub(1).min(16));
    let cap = exp.min(BACKOFF_MAX);
    let half = cap / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests;
