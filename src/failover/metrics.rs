//! The failover engine's Prometheus series (docs/design.md §7). State is exported
//! as labels on 0/1 gauges; a gauge with nothing to say (no read-only
//! deadline, a region never probed) is absent rather than 0.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::machine::{FailbackBlocked, Health, Mode, Transition};
use super::snapshot::Snapshot;
use crate::region::Region;

const MODES: [Mode; 3] = [
    Mode::Primary,
    Mode::FailoverReadOnly,
    Mode::FailoverReadWrite,
];
const BLOCKED: [FailbackBlocked; 3] = [
    FailbackBlocked::ReplicaWrites,
    FailbackBlocked::OperatorHold,
    FailbackBlocked::Manual,
];

/// Why a write was answered by failway instead of forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// `failover_read_only`.
    ReadOnly,
    /// The latch could not be persisted, so the write was not forwarded.
    StatePersistFailed,
    /// The region writes must go to is down.
    RegionDown,
    /// Fleet mode: this instance could not renew its etcd lease, so it stops
    /// forwarding writes until it follows the shared record again.
    FleetLeaseLost,
}

impl BlockReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::ReadOnly => "read_only",
            BlockReason::StatePersistFailed => "state_persist_failed",
            BlockReason::RegionDown => "region_down",
            BlockReason::FleetLeaseLost => "fleet_lease_lost",
        }
    }
}

#[derive(Clone)]
pub struct FailoverMetrics {
    registry: Registry,
    mode: IntGaugeVec,
    transitions: IntCounterVec,
    deadline: Gauge,
    failback_blocked: IntGaugeVec,
    region_healthy: IntGaugeVec,
    health_checks: IntCounterVec,
    writes_blocked: IntCounterVec,
    pub writes_accepted_on_replica: IntCounter,
    state_persist_errors: IntCounter,
    /// Whether `deadline` is currently registered.
    deadline_registered: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub drills: super::drill::DrillMetrics,
    pub shadow: super::shadow::ShadowMetrics,
}

impl FailoverMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<FailoverMetrics> {
        let mode = IntGaugeVec::new(
            Opts::new(
                "failway_mode",
                "1 for the failover mode failway is in, 0 for the others.",
            ),
            &["mode"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "failway_mode_transitions_total",
                "Mode transitions, by from, to and trigger (health_check, passive, read_only_window, operator, failback).",
            ),
            &["from", "to", "trigger"],
        )?;
        let deadline = Gauge::new(
            "failway_read_only_deadline_timestamp_seconds",
            "When writes get enabled on the replica (unix seconds); absent when no deadline is set.",
        )?;
        let failback_blocked = IntGaugeVec::new(
            Opts::new(
                "failway_failback_blocked",
                "1 when automatic failback is refused, by reason (replica_writes, operator_hold, manual).",
            ),
            &["reason"],
        )?;
        let region_healthy = IntGaugeVec::new(
            Opts::new(
                "failway_region_healthy",
                "1 when the region is judged healthy, 0 when down; absent before its first verdict.",
            ),
            &["region"],
        )?;
        let health_checks = IntCounterVec::new(
            Opts::new(
                "failway_health_checks_total",
                "Active health probes, by region and result (success, failure).",
            ),
            &["region", "result"],
        )?;
        let writes_blocked = IntCounterVec::new(
            Opts::new(
                "failway_writes_blocked_total",
                "Writes answered by failway and not forwarded, by reason.",
            ),
            &["reason"],
        )?;
        let writes_accepted_on_replica = IntCounter::new(
            "failway_writes_accepted_on_replica_total",
            "Writes forwarded to the replica (each sets the replica-writes latch).",
        )?;
        let state_persist_errors = IntCounter::new(
            "failway_state_persist_errors_total",
            "Failed writes of the state file (state.path); each is retried, and a write that needs the latch on disk is refused meanwhile.",
        )?;
        registry.register(Box::new(mode.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(failback_blocked.clone()))?;
        registry.register(Box::new(region_healthy.clone()))?;
        registry.register(Box::new(health_checks.clone()))?;
        registry.register(Box::new(writes_blocked.clone()))?;
        registry.register(Box::new(writes_accepted_on_replica.clone()))?;
        registry.register(Box::new(state_persist_errors.clone()))?;
        for r in ["read_only", "state_persist_failed", "region_down"] {
            writes_blocked.with_label_values(&[r]);
        }
        for r in Region::ALL {
            for res in ["success", "failure"] {
                health_checks.with_label_values(&[r.as_str(), res]);
            }
        }
        Ok(FailoverMetrics {
            registry: registry.clone(),
            mode,
            transitions,
            deadline,
            failback_blocked,
            region_healthy,
            health_checks,
            writes_blocked,
            writes_accepted_on_replica,
            state_persist_errors,
            deadline_registered: Default::default(),
            drills: super::drill::DrillMetrics::register(registry)?,
            shadow: super::shadow::ShadowMetrics::register(registry)?,
        })
    }

    /// Brings the state gauges in line with `snap`.
    pub fn publish(&self, snap: &Snapshot) {
        use std::sync::atomic::Ordering;
        for m in MODES {
            self.mode
                .with_label_values(&[m.as_str()])
                .set(i64::from(snap.mode == m));
        }
        for b in BLOCKED {
            self.failback_blocked
                .with_label_values(&[b.as_str()])
                .set(i64::from(snap.failback_blocked == Some(b)));
        }
        match snap.read_only_deadline {
            Some(d) => {
                let secs = d
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.deadline.set(secs);
                if !self.deadline_registered.swap(true, Ordering::Relaxed) {
                    let _ = self.registry.register(Box::new(self.deadline.clone()));
                }
            }
            None => {
                if self.deadline_registered.swap(false, Ordering::Relaxed) {
                    let _ = self.registry.unregister(Box::new(self.deadline.clone()));
                }
            }
        }
        for r in Region::ALL {
            let view = snap.region(r);
            match view.health {
                Health::Unknown if !view.passive_down => {
                    let _ = self.region_healthy.remove_label_values(&[r.as_str()]);
                }
                _ => self
                    .region_healthy
                    .with_label_values(&[r.as_str()])
                    .set(i64::from(!view.is_down())),
            }
        }
    }

    pub fn transition(&self, t: &Transition) {
        self.transitions
            .with_label_values(&[t.from.as_str(), t.to.as_str(), t.trigger.as_str()])
            .inc();
    }

    pub fn health_check(&self, region: Region, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.health_checks
            .with_label_values(&[region.as_str(), result])
            .inc();
    }

    /// A write of the state file failed.
    pub fn state_persist_error(&self) {
        self.state_persist_errors.inc();
    }

    pub fn write_blocked(&self, reason: BlockReason) {
        if reason == BlockReason::ReadOnly {
            self.drills.tally.write_refused();
        }
        self.writes_blocked
            .with_label_values(&[reason.as_str()])
            .inc();
    }
}
