//! What the driver does with drills: counts what the data path did during
//! one ([`DrillTally`]), and reports each drill event in one place
//! ([`DrillEvent`] through `Driver::drill_event`), so a log line, a metric
//! and any later sink see the same record.
//!
//! Deciding when a drill starts and ends is the machine's
//! (`machine::drill`); this module only observes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use prometheus::{IntCounterVec, Opts, Registry};

use super::driver::Driver;
use super::machine::{Drill, DrillEnd, DrillResult};
use crate::health::passive::Outcome;
use crate::region::Region;

/// Counts of the data path since the last drill started: the drill report.
#[derive(Debug, Default)]
pub struct DrillTally {
    replica_reads: AtomicU64,
    writes_refused: AtomicU64,
    errors: AtomicU64,
}

/// What a drill did, as reported at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrillReport {
    /// Requests the replica answered (writes are refused, so reads).
    pub replica_reads: u64,
    pub writes_refused: u64,
    /// Requests to the replica that failed (connect, timeout, reset, 502-504).
    pub errors: u64,
}

impl DrillTally {
    /// Counts a request's outcome; only the replica's matter to a drill.
    pub fn outcome(&self, region: Region, outcome: Outcome) {
        if region != Region::Replica {
            return;
        }
        let counter = if outcome.is_error() {
            &self.errors
        } else {
            &self.replica_reads
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn write_refused(&self) {
        self.writes_refused.fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) {
        for c in [&self.replica_reads, &self.writes_refused, &self.errors] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn report(&self) -> DrillReport {
        DrillReport {
            replica_reads: self.replica_reads.load(Ordering::Relaxed),
            writes_refused: self.writes_refused.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// `failway_drills_total{result}` and the tally, shared with the data path.
#[derive(Clone)]
pub struct DrillMetrics {
    drills: IntCounterVec,
    pub tally: Arc<DrillTally>,
}

impl DrillMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<DrillMetrics> {
        let drills = IntCounterVec::new(
            Opts::new(
                "failway_drills_total",
                "Drills, by result (completed, stopped, converted, aborted, refused).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(drills.clone()))?;
        for r in DrillResult::ALL {
            drills.with_label_values(&[r.as_str()]);
        }
        Ok(DrillMetrics {
            drills,
            tally: Arc::default(),
        })
    }

    /// A drill was asked for and refused (409).
    pub fn refused(&self) {
        self.drills
            .with_label_values(&[DrillResult::Refused.as_str()])
            .inc();
    }
}

/// Something a drill did, reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrillEvent {
    Started(Drill),
    Ended { end: DrillEnd, report: DrillReport },
}

impl Driver {
    /// Reports a drill that just started or ended, if any.
    pub(super) fn observe_drill(&mut self, was_drilling: bool) {
        if let Some(end) = self.machine.take_drill_end() {
            let report = self.metrics.drills.tally.report();
            self.drill_event(DrillEvent::Ended { end, report });
        }
        if !was_drilling {
            if let Some(drill) = self.machine.drill().cloned() {
                self.metrics.drills.tally.reset();
                self.drill_event(DrillEvent::Started(drill));
            }
        }
    }

    /// The one place drill events leave the driver.
    fn drill_event(&self, event: DrillEvent) {
        self.audit_drill(&event);
        match event {
            DrillEvent::Started(d) => tracing::info!(
                reason = %d.reason,
                by = d.by.as_deref().unwrap_or(""),
                ends_at = %humantime::format_rfc3339_seconds(d.ends_at),
                "drill started"
            ),
            DrillEvent::Ended { end, report } => {
                self.metrics
                    .drills
                    .drills
                    .with_label_values(&[end.result.as_str()])
                    .inc();
                tracing::info!(
                    result = end.result.as_str(),
                    reason = %end.drill.reason,
                    by = end.drill.by.as_deref().unwrap_or(""),
                    lasted_ms = lasted_ms(end.drill.started, end.at),
                    replica_reads = report.replica_reads,
                    writes_refused = report.writes_refused,
                    errors = report.errors,
                    "drill report"
                );
            }
        }
    }
}

fn lasted_ms(from: SystemTime, to: SystemTime) -> u64 {
    to.duration_since(from)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
