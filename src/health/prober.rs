//! The prober: one task per region probing every `health.interval` (with
//! ±10% jitter, so a fleet of sidecars does not probe in lockstep) and
//! reporting each result to the failover driver, which owns the
//! consecutive-count thresholds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::probe::Probe;
use crate::failover::{Failover, ProbeReport};
use crate::proxy::client::Upstream;
use crate::routing::Region;

/// `interval` stretched or shrunk by up to 10%.
pub fn jittered(interval: Duration) -> Duration {
    let f = 0.9 + fastrand::f64() * 0.2;
    interval.mul_f64(f)
}

pub fn spawn(
    region: Region,
    upstream: Arc<Upstream>,
    probe: Probe,
    interval: Duration,
    failover: Failover,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Start at a random point of the first interval, then keep the pace.
        let first = interval.mul_f64(fastrand::f64() * 0.2);
        tokio::select! {
            _ = tokio::time::sleep(first) => {}
            _ = stop.changed() => return,
        }
        loop {
            // Fixed pace: a slow probe does not stretch the interval.
            let next = tokio::time::Instant::now() + jittered(interval);
            let result = tokio::select! {
                r = probe.run(&upstream) => r,
                _ = stop.changed() => return,
            };
            tracing::debug!(region = region.as_str(), success = result.success, status = ?result.status, error = ?result.error, "health probe");
            failover
                .report_probe(ProbeReport {
                    region,
                    success: result.success,
                    status: result.status,
                    error: result.error,
                })
                .await;
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => return,
            }
        }
    })
}
