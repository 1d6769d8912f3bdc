//! Drills: a rehearsed failover that comes back by itself (`POST /admin/drill`).
//!
//! A drill is a `failover_read_only` entered with trigger `drill` and no
//! read-only deadline: writes stay refused for the whole drill, so a
//! rehearsal never lets a write reach the replica and never sets the latch.
//! It ends on its own at [`Drill::ends_at`] with a failback once the primary
//! is healthy, or earlier when stopped. A real primary failure during the
//! drill, an operator failover or a forced `enable-writes` turns it into a
//! real failover ([`DrillResult::Converted`]); a replica judged down ends it
//! at once with a failback ([`DrillResult::Aborted`]).
//!
//! How a drill ended is kept for the owner to take
//! ([`Machine::take_drill_end`]), so the report, metrics and logs are made
//! in one place, outside this pure core.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::operator::{operator_reason, ConflictKind};
use super::state::{to_millis_precision, unix_ms};
use super::{CommandOutcome, Conflict, Health, Machine, Mode, Trigger};

/// A drill under way (persisted with the state, shared through the fleet record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    #[serde(rename = "started_unix_ms", with = "unix_ms")]
    pub started: SystemTime,
    #[serde(rename = "ends_at_unix_ms", with = "unix_ms")]
    pub ends_at: SystemTime,
    pub reason: String,
    /// The operator who started it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// How a drill ended (`failway_drills_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrillResult {
    /// Ended at `ends_at` with a failback.
    Completed,
    /// Stopped early by an operator, with a failback.
    Stopped,
    /// Turned into a real failover: no failback at the end.
    Converted,
    /// The replica was judged down: failed back at once.
    Aborted,
    /// Never started (a precondition failed).
    Refused,
}

impl DrillResult {
    pub const ALL: [DrillResult; 5] = [
        DrillResult::Completed,
        DrillResult::Stopped,
        DrillResult::Converted,
        DrillResult::Aborted,
        DrillResult::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DrillResult::Completed => "completed",
            DrillResult::Stopped => "stopped",
            DrillResult::Converted => "converted",
            DrillResult::Aborted => "aborted",
            DrillResult::Refused => "refused",
        }
    }
}

/// A drill that ended, and at what time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillEnd {
    pub drill: Drill,
    pub result: DrillResult,
    pub at: SystemTime,
}

impl Machine {
    /// The drill under way, if any.
    pub fn drill(&self) -> Option<&Drill> {
        self.state.drill.as_ref()
    }

    /// How the last drill ended, once: the owner reports it.
    pub fn take_drill_end(&mut self) -> Option<DrillEnd> {
        self.drill_end.take()
    }

    /// Starts a drill of `duration` (the caller has checked it against
    /// `failover.max_drill`): only from `primary`, with the replica healthy
    /// and no operator hold.
    pub(super) fn start_drill(
        &mut self,
        duration: Duration,
        reason: &str,
        by: Option<String>,
        now: SystemTime,
    ) -> Result<CommandOutcome, Conflict> {
        if self.state.mode != Mode::Primary {
            return Err(self.conflict(ConflictKind::NotPrimary, "a drill starts only from primary"));
        }
        if self.state.operator_hold {
            return Err(self.conflict(
                ConflictKind::OperatorHold,
                "an operator hold is set; fail back first",
            ));
        }
        if self.replica != Health::Healthy {
            return Err(self.conflict(
                ConflictKind::ReplicaNotHealthy,
                "a drill needs the replica healthy by its latest probes",
            ));
        }
        let started = to_millis_precision(now);
        let ends_at = to_millis_precision(started.checked_add(duration).unwrap_or(started));
        let reason = operator_reason(reason, "drill");
        let t = self.fail_over(Trigger::Drill, format!("drill: {reason}"), now);
        // The read-only window does not run during a drill.
        self.state.read_only_deadline = None;
        self.state.drill = Some(Drill {
            started,
            ends_at,
            reason,
            by,
        });
        Ok(CommandOutcome::Changed(t))
    }

    /// Ends the drill early with a failback; a no-op without a drill.
    pub(super) fn stop_drill(&mut self, reason: &str, now: SystemTime) -> CommandOutcome {
        if self.state.drill.is_none() {
            return CommandOutcome::NoOp;
        }
        let reason = operator_reason(reason, "drill stopped");
        let t = self.end_drill_with_failback(DrillResult::Stopped, reason, now);
        CommandOutcome::Changed(t)
    }

    /// The drill becomes a real failover from `now`: the read-only window
    /// starts, and section 1 of the design applies as to any failover.
    pub(super) fn convert_drill(&mut self, now: SystemTime) {
        let Some(drill) = self.state.drill.take() else {
            return;
        };
        let at = to_millis_precision(now);
        self.state.failed_over_at = Some(at);
        self.state.read_only_deadline = self
            .settings
            .read_only_window
            .and_then(|w| at.checked_add(w))
            .map(to_millis_precision);
        self.drill_end = Some(DrillEnd {
            drill,
            result: DrillResult::Converted,
            at,
        });
    }

    /// What the clock and the health signals do to a drill under way.
    pub(super) fn evaluate_drill(&mut self, now: SystemTime) -> Option<super::Transition> {
        let drill = self.state.drill.as_ref()?;
        if self.primary_down() {
            self.convert_drill(now);
            return None;
        }
        if self.replica == Health::Unhealthy {
            let reason = "drill aborted: the replica is judged down".to_owned();
            return Some(self.end_drill_with_failback(DrillResult::Aborted, reason, now));
        }
        let primary_healthy = self.primary == Health::Healthy && !self.primary_passive_down;
        if now >= drill.ends_at && primary_healthy {
            let reason = "drill completed".to_owned();
            return Some(self.end_drill_with_failback(DrillResult::Completed, reason, now));
        }
        None
    }

    fn end_drill_with_failback(
        &mut self,
        result: DrillResult,
        reason: String,
        now: SystemTime,
    ) -> super::Transition {
        let t = self.fail_back(Trigger::Drill, reason, false, now);
        if let Some(drill) = self.state.drill.take() {
            self.drill_end = Some(DrillEnd {
                drill,
                result,
                at: t.at,
            });
        }
        t
    }
}
