//! The prober: one task per region probing every `health.interval` (with
//! ±10% jitter, so a fleet of sidecars does not probe in lockstep) and
//! reporting each result to the failover driver, which owns the
//! consecutive-count thresholds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::probe::Probe;
use crate::region::Region;
use crate::upstream::client::Upstream;

/// One probe's result, as the prober saw it; sent to whoever decides on
/// probes (the failover driver).
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub region: Region,
    pub success: bool,
    pub status: Option<u16>,
    /// Why it failed (connect refused, timeout, status 503...), no request data.
    pub error: Option<String>,
}

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
    reports: mpsc::Sender<ProbeReport>,
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
            // failway's own shortage (no socket to probe with) is no verdict
            // on the region: reporting it could fail over a healthy one.
            let report = (!result.local).then_some(ProbeReport {
                region,
                success: result.success,
                status: result.status,
                error: result.error,
            });
            if let Some(report) = report {
                if reports.send(report).await.is_err() {
                    // Nobody decides on probes any more.
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

/// The two probers, restartable when a reload changes what they probe.
pub struct Probers {
    handles: Vec<JoinHandle<()>>,
}

impl Probers {
    /// Starts one prober per region (none when `enabled` is false). The
    /// replica's probe carries the mapped values of `[[rewrite]]` headers.
    pub fn start(
        enabled: bool,
        cfg: &crate::config::HealthConfig,
        upstreams: &[Arc<Upstream>; 2],
        rewriter: &crate::rewrite::Rewriter,
        reports: &mpsc::Sender<ProbeReport>,
        stop: &watch::Receiver<bool>,
    ) -> Probers {
        let mut handles = Vec::new();
        if enabled {
            for region in Region::ALL {
                let mut headers = http::HeaderMap::new();
                for (name, value) in &cfg.headers {
                    let value = match region {
                        Region::Replica => rewriter
                            .replica_header_value(name, value)
                            .unwrap_or_else(|| value.clone()),
                        Region::Primary => value.clone(),
                    };
                    headers.append(name.clone(), value);
                }
                handles.push(spawn(
                    region,
                    upstreams[region.index()].clone(),
                    Probe::new(cfg, headers),
                    cfg.interval,
                    reports.clone(),
                    stop.clone(),
                ));
            }
        }
        Probers { handles }
    }

    pub fn stop(&mut self) {
        for h in self.handles.drain(..) {
            h.abort();
        }
    }
}

impl Drop for Probers {
    fn drop(&mut self) {
        self.stop();
    }
}
