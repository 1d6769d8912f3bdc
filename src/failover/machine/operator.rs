//! Operator commands (`POST /admin/failover`, `/admin/enable-writes`,
//! `/admin/failback`) and why the machine may refuse them.
//!
//! Repeating the current mode is a no-op; a transition that cannot apply
//! (enabling writes in `primary`) or that would be unsafe without explicit
//! confirmation (failing over to a replica judged down, failing back to a
//! primary judged down or over the replica-writes latch) is a [`Conflict`]
//! naming the current mode. `force` confirms the unsafe ones, never the
//! impossible one. Mapping to HTTP statuses is the admin API's job.

use std::time::{Duration, SystemTime};

use super::{Health, Machine, Mode, Transition, Trigger, MAX_REASON_BYTES};

/// An operator action (`POST /admin/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Failover {
        force: bool,
        reason: String,
    },
    /// `force` turns a drill under way into a real failover.
    EnableWrites {
        force: bool,
        reason: String,
    },
    Failback {
        force: bool,
        reason: String,
    },
    /// `POST /admin/drill`; `duration` already checked against `max_drill`.
    Drill {
        duration: Duration,
        reason: String,
        by: Option<String>,
    },
    /// `POST /admin/drill/stop`.
    StopDrill {
        reason: String,
    },
}

impl Command {
    /// The name of the action, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Failover { .. } => "failover",
            Command::EnableWrites { .. } => "enable-writes",
            Command::Failback { .. } => "failback",
            Command::Drill { .. } => "drill",
            Command::StopDrill { .. } => "drill-stop",
        }
    }

    /// The operator's reason.
    pub fn reason(&self) -> &str {
        match self {
            Command::Failover { reason, .. }
            | Command::EnableWrites { reason, .. }
            | Command::Failback { reason, .. }
            | Command::Drill { reason, .. }
            | Command::StopDrill { reason } => reason,
        }
    }

    /// Whether the operator confirmed an unsafe step.
    pub fn force(&self) -> bool {
        match self {
            Command::Failover { force, .. }
            | Command::EnableWrites { force, .. }
            | Command::Failback { force, .. } => *force,
            Command::Drill { .. } | Command::StopDrill { .. } => false,
        }
    }
}

/// The result of an accepted operator command (HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Changed(Transition),
    /// Already in the requested mode; nothing changed.
    NoOp,
    /// Already failed over (automatically); the mode stays, but the
    /// operator's hold now stops automatic failback. The state changed.
    HoldSet,
}

/// Why an operator command was refused (HTTP 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictKind {
    /// `enable-writes` while in `primary`.
    NotFailedOver,
    /// Failover to a replica judged down, without `force`.
    ReplicaDown,
    /// Failback to a primary judged down, without `force`.
    PrimaryDown,
    /// Failback over the replica-writes latch, without `force`.
    ReplicaWrites,
    /// A drill asked for outside `primary`.
    NotPrimary,
    /// A drill asked for with an operator hold set.
    OperatorHold,
    /// A drill asked for with the replica not healthy by its latest probes.
    ReplicaNotHealthy,
    /// `enable-writes` during a drill, without `force`.
    DrillActive,
    /// A failover or a drill asked for with `failover.mode = "shadow"`,
    /// which never routes away from the primary.
    ShadowMode,
}

impl ConflictKind {
    /// Stable code for the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::NotFailedOver => "not_failed_over",
            ConflictKind::ReplicaDown => "replica_down",
            ConflictKind::PrimaryDown => "primary_down",
            ConflictKind::ReplicaWrites => "replica_writes",
            ConflictKind::NotPrimary => "not_primary",
            ConflictKind::OperatorHold => "operator_hold",
            ConflictKind::ReplicaNotHealthy => "replica_not_healthy",
            ConflictKind::DrillActive => "drill_active",
            ConflictKind::ShadowMode => "shadow_mode",
        }
    }
}

/// An operator command that cannot apply in the current mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Conflict {
    pub current: Mode,
    pub kind: ConflictKind,
    pub message: String,
}

impl Machine {
    /// Applies an operator command.
    pub fn command(
        &mut self,
        command: Command,
        now: SystemTime,
    ) -> Result<CommandOutcome, Conflict> {
        match command {
            Command::Failover { force, reason } => {
                // The operator takes the drill over as a real failover.
                self.convert_drill(now);
                self.operator_failover(force, &reason, now)
            }
            Command::EnableWrites { force, reason } => {
                if self.state.drill.is_some() {
                    if !force {
                        return Err(self.conflict(
                            ConflictKind::DrillActive,
                            "a drill is under way; send force=true to turn it into a real failover with writes on the replica",
                        ));
                    }
                    self.convert_drill(now);
                }
                self.operator_enable_writes(&reason, now)
            }
            // Failing back during a drill is stopping it.
            Command::Failback { reason, .. } if self.state.drill.is_some() => {
                Ok(self.stop_drill(&reason, now))
            }
            Command::Failback { force, reason } => self.operator_failback(force, &reason, now),
            Command::Drill {
                duration,
                reason,
                by,
            } => self.start_drill(duration, &reason, by, now),
            Command::StopDrill { reason } => Ok(self.stop_drill(&reason, now)),
        }
    }

    fn operator_failover(
        &mut self,
        force: bool,
        reason: &str,
        now: SystemTime,
    ) -> Result<CommandOutcome, Conflict> {
        if self.state.mode.is_failover() {
            if self.state.operator_hold {
                return Ok(CommandOutcome::NoOp);
            }
            self.state.operator_hold = true;
            return Ok(CommandOutcome::HoldSet);
        }
        if self.replica == Health::Unhealthy && !force {
            return Err(self.conflict(
                ConflictKind::ReplicaDown,
                "the replica is judged down; send \"force\": true to fail over anyway",
            ));
        }
        let mut reason = operator_reason(reason, "operator failover");
        if self.replica == Health::Unhealthy {
            reason.push_str(" (forced: replica judged down)");
        }
        Ok(CommandOutcome::Changed(self.fail_over(
            Trigger::Operator,
            reason,
            now,
        )))
    }

    fn operator_enable_writes(
        &mut self,
        reason: &str,
        now: SystemTime,
    ) -> Result<CommandOutcome, Conflict> {
        match self.state.mode {
            Mode::Primary => Err(self.conflict(
                ConflictKind::NotFailedOver,
                "writes can only be enabled after a failover; the mode is primary",
            )),
            Mode::FailoverReadWrite => Ok(CommandOutcome::NoOp),
            Mode::FailoverReadOnly => {
                let reason = operator_reason(reason, "operator enabled writes");
                Ok(CommandOutcome::Changed(self.enable_writes(
                    Trigger::Operator,
                    reason,
                    now,
                )))
            }
        }
    }

    fn operator_failback(
        &mut self,
        force: bool,
        reason: &str,
        now: SystemTime,
    ) -> Result<CommandOutcome, Conflict> {
        if self.state.mode == Mode::Primary {
            return Ok(CommandOutcome::NoOp);
        }
        if self.state.replica_writes_latch && !force {
            return Err(self.conflict(
                ConflictKind::ReplicaWrites,
                "writes were accepted on the replica and never reach the primary; \
                 send \"force\": true to fail back anyway",
            ));
        }
        if self.primary_down() && !force {
            return Err(self.conflict(
                ConflictKind::PrimaryDown,
                "the primary is judged down; send \"force\": true to fail back anyway",
            ));
        }
        let mut reason = operator_reason(reason, "operator failback");
        let clears_latch = self.state.replica_writes_latch;
        if clears_latch {
            reason.push_str(" (forced: replica-writes latch cleared)");
        }
        if self.primary_down() {
            reason.push_str(" (forced: primary judged down)");
        }
        Ok(CommandOutcome::Changed(self.fail_back(
            Trigger::Operator,
            reason,
            clears_latch,
            now,
        )))
    }

    pub(super) fn conflict(&self, kind: ConflictKind, message: &str) -> Conflict {
        Conflict {
            current: self.state.mode,
            kind,
            message: format!("{message} (current mode: {})", self.state.mode),
        }
    }
}

/// The operator's reason, trimmed and capped, or `default` when empty.
pub(super) fn operator_reason(reason: &str, default: &str) -> String {
    let reason = reason.trim();
    if reason.is_empty() {
        return default.to_owned();
    }
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
