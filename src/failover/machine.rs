//! The one-way failover state machine (docs/design.md §1), pure.
//!
//! Replication goes primary -> replica only, so the machine is built around
//! one fact: once a write was accepted on the replica, going back to the
//! primary loses it. Hence:
//! - `primary -> failover_read_only` automatically only when
//!   [`Settings::auto_failover`], the primary is judged down (probes or live
//!   traffic) and the replica is [`Health::Healthy`]. An `Unknown` replica
//!   (never probed successfully) is no target; with both regions down the
//!   machine stays where it is.
//! - `failover_read_only -> failover_read_write` when the read-only deadline
//!   passes (fixed at failover time, operator failovers included; `None` =
//!   `"never"`) or an operator enables writes.
//! - `failover_* -> primary` automatically only when
//!   [`Settings::auto_failback`], no operator hold, the replica-writes latch is
//!   clear, and the primary has been healthy (probes `Healthy` and live
//!   traffic not failing) without a break for `failback_after`. The clock for
//!   that starts when the primary is *seen* healthy, so even
//!   `failback_after = 0` needs one healthy verdict after the outage; a
//!   primary flapping faster than `failback_after` never gets failed back to.
//!
//! Contract with the data path ([`Machine::begin_replica_write`]): before a
//! write is forwarded to the replica the latch must be set **and persisted**.
//! While the call answers [`LatchChange::MustPersist`], the owner writes
//! [`Machine::state`] to disk, reports it with [`Machine::mark_persisted`],
//! and only then forwards; if writing fails, it refuses the write. The latch
//! stays set in memory either way: a latch believed set without a write is
//! only over-cautious.
//!
//! Time is wall-clock [`SystemTime`] passed in by the caller, because the
//! deadline is persisted and must mean the same instant after a restart. A
//! clock stepping backwards delays the deadline and the failback; it never
//! brings them forward. Each call makes at most one transition; after one,
//! the owner calls [`Machine::tick`] again until it returns `None` (a zero
//! read-only window enables writes right after the failover).
//!
//! The machine does no I/O, keeps no clock, and knows nothing of HTTP or
//! metrics: the owner persists [`State`], maps [`Conflict`] to 409 and labels
//! metrics with the `as_str` names.

use std::time::{Duration, SystemTime};

pub use crate::health::counter::Health;

mod drill;
mod operator;
mod state;
pub use drill::{Drill, DrillEnd, DrillResult};
pub use operator::{Command, CommandOutcome, Conflict, ConflictKind};
use state::to_millis_precision;
pub use state::{
    Mode, State, StateError, Transition, Trigger, MAX_REASON_BYTES, MAX_TRANSITIONS, STATE_VERSION,
};

/// Why automatic failback will not happen (`failway_failback_blocked{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailbackBlocked {
    /// A write was accepted on the replica; only a forced failback goes back.
    ReplicaWrites,
    /// An operator failed over and has not failed back.
    OperatorHold,
    /// `failback = "manual"`.
    Manual,
}

impl FailbackBlocked {
    pub fn as_str(self) -> &'static str {
        match self {
            FailbackBlocked::ReplicaWrites => "replica_writes",
            FailbackBlocked::OperatorHold => "operator_hold",
            FailbackBlocked::Manual => "manual",
        }
    }
}

/// The `[failover]` settings the machine obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `mode = "auto"`.
    pub auto_failover: bool,
    /// `None` = `"never"`: only an operator enables writes.
    pub read_only_window: Option<Duration>,
    /// `failback = "safe"`.
    pub auto_failback: bool,
    pub failback_after: Duration,
}

impl Default for Settings {
    /// The documented defaults: auto, `6h`, safe, `5m`.
    fn default() -> Self {
        Settings {
            auto_failover: true,
            read_only_window: Some(Duration::from_secs(6 * 3600)),
            auto_failback: true,
            failback_after: Duration::from_secs(300),
        }
    }
}

/// What the data path must do before forwarding a write to the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchChange {
    /// The latch is set and on disk: forward.
    AlreadyPersisted,
    /// The latch is set but not yet known to be on disk: persist
    /// [`Machine::state`], call [`Machine::mark_persisted`], then forward;
    /// refuse the write if persisting fails.
    MustPersist,
}

/// Writes are not forwarded to the replica in this mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("writes are not accepted on the replica in mode {mode}")]
pub struct Refused {
    pub mode: Mode,
}

/// The failover decision: persisted [`State`] plus what the health signals
/// currently say (not persisted: after a restart, regions are probed anew).
#[derive(Debug, Clone)]
pub struct Machine {
    settings: Settings,
    state: State,
    primary: Health,
    replica: Health,
    primary_passive_down: bool,
    /// Since when the primary has been healthy without a break.
    primary_healthy_since: Option<SystemTime>,
    /// Whether a set latch is known to be on disk.
    latch_persisted: bool,
    /// How the last drill ended, until the owner takes it.
    drill_end: Option<DrillEnd>,
}

impl Machine {
    /// A fresh start in `primary`, both regions `Unknown`.
    pub fn new(settings: Settings, now: SystemTime) -> Self {
        Self::restore(settings, State::initial(now))
    }

    /// Resumes from a persisted state. The mode, deadline, latch and hold are
    /// kept as they were: a deadline already past enables writes at the next
    /// [`tick`](Self::tick), and the deadline is not recomputed from the
    /// (possibly changed) window. Region health starts `Unknown`.
    pub fn restore(settings: Settings, mut state: State) -> Self {
        while state.transitions.len() > MAX_TRANSITIONS {
            state.transitions.pop_front();
        }
        let latch_persisted = state.replica_writes_latch;
        Machine {
            settings,
            state,
            primary: Health::Unknown,
            replica: Health::Unknown,
            primary_passive_down: false,
            primary_healthy_since: None,
            latch_persisted,
            drill_end: None,
        }
    }

    /// Takes `state` as the truth (fleet mode: the shared record), keeping
    /// what the health signals say. Unlike [`restore`](Self::restore) no
    /// observation is lost, so a failback hysteresis already running goes on;
    /// no transition is evaluated until the next call that evaluates. A latch
    /// in `state` counts as persisted: the record it came from is stored.
    pub fn adopt(&mut self, mut state: State) {
        while state.transitions.len() > MAX_TRANSITIONS {
            state.transitions.pop_front();
        }
        self.latch_persisted = state.replica_writes_latch;
        self.state = state;
    }

    /// New settings (config reload); they apply from the next event. A
    /// deadline already set is kept.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The latch is set and known to be on disk.
    pub fn latch_persisted(&self) -> bool {
        self.state.replica_writes_latch && self.latch_persisted
    }

    /// What to persist.
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn mode(&self) -> Mode {
        self.state.mode
    }

    /// When the current mode was entered.
    pub fn since(&self) -> SystemTime {
        self.state.since
    }

    /// Whether a write may have reached the replica (the replica-writes latch).
    pub fn latch(&self) -> bool {
        self.state.replica_writes_latch
    }

    /// When writes will be enabled on their own, if in `failover_read_only`
    /// with a window.
    pub fn deadline(&self) -> Option<SystemTime> {
        match self.state.mode {
            Mode::FailoverReadOnly => self.state.read_only_deadline,
            _ => None,
        }
    }

    pub fn operator_hold(&self) -> bool {
        self.state.operator_hold
    }

    /// Recent transitions, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = &Transition> {
        self.state.transitions.iter()
    }

    pub fn primary_health(&self) -> Health {
        self.primary
    }

    pub fn replica_health(&self) -> Health {
        self.replica
    }

    pub fn primary_passive_down(&self) -> bool {
        self.primary_passive_down
    }

    /// Whether the primary is judged down, by probes or by live traffic.
    pub fn primary_down(&self) -> bool {
        self.primary == Health::Unhealthy || self.primary_passive_down
    }

    /// Since when the primary has been healthy without a break, if it is.
    pub fn primary_healthy_since(&self) -> Option<SystemTime> {
        self.primary_healthy_since
    }

    /// Why automatic failback is ruled out, if it is (only in a failover
    /// mode). One reason at a time, the one that needs the most to lift:
    /// replica writes, then an operator hold, then manual failback.
    pub fn failback_blocked(&self) -> Option<FailbackBlocked> {
        if !self.state.mode.is_failover() {
            None
        } else if self.state.replica_writes_latch {
            Some(FailbackBlocked::ReplicaWrites)
        } else if self.state.operator_hold {
            Some(FailbackBlocked::OperatorHold)
        } else if !self.settings.auto_failback {
            Some(FailbackBlocked::Manual)
        } else {
            None
        }
    }

    /// The next time at which [`tick`](Self::tick) may change the mode with
    /// no other input: the read-only deadline or the end of the failback
    /// hysteresis. `None` when only an event can.
    pub fn next_wakeup(&self) -> Option<SystemTime> {
        let failback = self
            .primary_healthy_since
            .filter(|_| self.state.mode.is_failover() && self.failback_blocked().is_none())
            // A hysteresis too long for the clock never ends.
            .and_then(|since| since.checked_add(self.settings.failback_after));
        // Past its end, a drill waits for a healthy primary: a probe, not
        // the clock, ends it then.
        let drill_end = self
            .state
            .drill
            .as_ref()
            .filter(|_| self.primary == Health::Healthy && !self.primary_passive_down)
            .map(|d| d.ends_at);
        [self.deadline(), failback, drill_end]
            .into_iter()
            .flatten()
            .min()
    }

    /// The primary's probe verdict changed (or was repeated) at `now`.
    pub fn observe_primary(&mut self, health: Health, now: SystemTime) -> Option<Transition> {
        self.primary = health;
        self.update_primary_healthy_since(now);
        self.evaluate(now)
    }

    /// The replica's probe verdict changed (or was repeated) at `now`.
    pub fn observe_replica(&mut self, health: Health, now: SystemTime) -> Option<Transition> {
        self.replica = health;
        self.evaluate(now)
    }

    /// Live traffic judges the primary down (`true`) or not any more. The
    /// owner reports the detector's verdict as it changes; a stale `true`
    /// keeps the primary judged down.
    pub fn observe_primary_passive(&mut self, down: bool, now: SystemTime) -> Option<Transition> {
        self.primary_passive_down = down;
        self.update_primary_healthy_since(now);
        self.evaluate(now)
    }

    /// Forgets the live-traffic verdict on the primary (its detector was
    /// reset as traffic moved back to it). Evaluates nothing: a verdict
    /// dropped can only keep the machine where it is.
    pub fn forget_primary_passive(&mut self, now: SystemTime) {
        self.primary_passive_down = false;
        self.update_primary_healthy_since(now);
    }

    /// The clock moved: the read-only deadline and the failback hysteresis.
    pub fn tick(&mut self, now: SystemTime) -> Option<Transition> {
        self.evaluate(now)
    }

    /// Called by the data path before forwarding a write to the replica; see
    /// the module docs for the persistence contract.
    pub fn begin_replica_write(&mut self, now: SystemTime) -> Result<LatchChange, Refused> {
        if self.state.mode != Mode::FailoverReadWrite {
            return Err(Refused {
                mode: self.state.mode,
            });
        }
        if !self.state.replica_writes_latch {
            self.state.replica_writes_latch = true;
            self.state.latch_set_at = Some(to_millis_precision(now));
            self.latch_persisted = false;
        }
        Ok(if self.latch_persisted {
            LatchChange::AlreadyPersisted
        } else {
            LatchChange::MustPersist
        })
    }

    /// The owner durably wrote `persisted` (a copy of [`state`](Self::state)
    /// taken before writing). A latch it carries counts as on disk.
    pub fn mark_persisted(&mut self, persisted: &State) {
        if persisted.replica_writes_latch && self.state.replica_writes_latch {
            self.latch_persisted = true;
        }
    }

    fn update_primary_healthy_since(&mut self, now: SystemTime) {
        let healthy = self.primary == Health::Healthy && !self.primary_passive_down;
        self.primary_healthy_since = match (healthy, self.primary_healthy_since) {
            (true, None) => Some(now),
            (true, since) => since,
            (false, _) => None,
        };
    }

    fn failback_due(&self, now: SystemTime) -> bool {
        self.failback_blocked().is_none()
            && self.primary_healthy_since.is_some_and(|since| {
                now.duration_since(since)
                    .is_ok_and(|healthy_for| healthy_for >= self.settings.failback_after)
            })
    }

    fn evaluate(&mut self, now: SystemTime) -> Option<Transition> {
        match self.state.mode {
            Mode::Primary => {
                if !self.settings.auto_failover || self.replica != Health::Healthy {
                    return None;
                }
                let (trigger, reason) = if self.primary == Health::Unhealthy {
                    (Trigger::HealthCheck, "primary failed its health checks")
                } else if self.primary_passive_down {
                    (Trigger::Passive, "primary failing live requests")
                } else {
                    return None;
                };
                let reason = format!("{reason}; replica healthy");
                Some(self.fail_over(trigger, reason, now))
            }
            Mode::FailoverReadOnly | Mode::FailoverReadWrite if self.state.drill.is_some() => {
                self.evaluate_drill(now)
            }
            Mode::FailoverReadOnly | Mode::FailoverReadWrite => {
                if self.failback_due(now) {
                    let reason = format!(
                        "primary healthy for {}s; no writes accepted on the replica",
                        self.settings.failback_after.as_secs()
                    );
                    return Some(self.fail_back(Trigger::Failback, reason, false, now));
                }
                let deadline_passed = self.deadline().is_some_and(|deadline| now >= deadline);
                deadline_passed.then(|| {
                    let reason = "read-only window elapsed".to_owned();
                    self.enable_writes(Trigger::ReadOnlyWindow, reason, now)
                })
            }
        }
    }

    pub(super) fn fail_over(
        &mut self,
        trigger: Trigger,
        reason: String,
        now: SystemTime,
    ) -> Transition {
        let at = to_millis_precision(now);
        self.state.failed_over_at = Some(at);
        // A window too large for the clock never ends.
        self.state.read_only_deadline = self
            .settings
            .read_only_window
            .and_then(|window| at.checked_add(window))
            .map(to_millis_precision);
        self.state.operator_hold = trigger == Trigger::Operator;
        self.enter(Mode::FailoverReadOnly, trigger, reason, false, at)
    }

    pub(super) fn enable_writes(
        &mut self,
        trigger: Trigger,
        reason: String,
        now: SystemTime,
    ) -> Transition {
        self.state.read_only_deadline = None;
        let at = to_millis_precision(now);
        self.enter(Mode::FailoverReadWrite, trigger, reason, false, at)
    }

    pub(super) fn fail_back(
        &mut self,
        trigger: Trigger,
        reason: String,
        latch_cleared: bool,
        now: SystemTime,
    ) -> Transition {
        self.state.failed_over_at = None;
        self.state.read_only_deadline = None;
        self.state.operator_hold = false;
        self.state.replica_writes_latch = false;
        self.state.latch_set_at = None;
        self.latch_persisted = false;
        let at = to_millis_precision(now);
        self.enter(Mode::Primary, trigger, reason, latch_cleared, at)
    }

    /// Names who made the latest transition (an operator's token name).
    pub fn name_last_transition(&mut self, by: &str) {
        if let Some(t) = self.state.transitions.back_mut() {
            t.by = Some(by.to_owned());
        }
    }

    fn enter(
        &mut self,
        to: Mode,
        trigger: Trigger,
        reason: String,
        latch_cleared: bool,
        at: SystemTime,
    ) -> Transition {
        let transition = Transition {
            from: self.state.mode,
            to,
            trigger,
            reason,
            at,
            latch_cleared,
            by: None,
        };
        self.state.mode = to;
        self.state.since = at;
        self.state.push_transition(transition.clone());
        transition
    }
}

#[cfg(test)]
mod drill_tests;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
