//! The failover driver: the one task that owns the [`Machine`], the health
//! counters and the state file. Probe results, passive signals, operator
//! commands and latch requests arrive as [`Event`]s; after each, the driver
//! applies every due transition, persists the state when it changed, and
//! publishes a new [`Snapshot`] that everyone else reads without locks.
//!
//! Deciding is here; obeying is in the data path (`routing`), which only
//! reads snapshots and asks the driver before the first write to the replica.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};

use super::machine::{
    Command, CommandOutcome, Conflict, LatchChange, Machine, Mode, Refused, State,
};
use super::metrics::FailoverMetrics;
use super::persist::StateFile;
use super::snapshot::{RegionView, Snapshot};
use super::Clock;
use crate::health::counter::HealthCounter;
use crate::health::ProbeReport;
use crate::region::Region;

/// Why an operator command could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the failover driver stopped")]
    Stopped,
    /// Fleet mode: etcd could not be reached (no connection, a broken one,
    /// or no answer in time); nothing changed on any instance.
    #[error("etcd unreachable: {0}; the shared fleet record was not changed")]
    EtcdUnreachable(String),
    /// Fleet mode: etcd was reached, but this instance's lease lapsed and is
    /// being renewed; nothing changed.
    #[error("this instance's etcd lease lapsed and is being renewed; the shared fleet record was not changed; send the action again shortly")]
    LeaseLapsed,
    /// Fleet mode: etcd answered, but the record could not be read or
    /// changed (an error etcd answered, an unreadable stored record, an
    /// epoch at its maximum); nothing changed.
    #[error("the shared fleet record could not be changed: {0}")]
    Etcd(String),
    /// Fleet mode: other instances changed the record first every time the
    /// action was applied anew; this action changed nothing.
    #[error("other instances changed the shared fleet record first, {0} times in a row; this action was not applied; send it again")]
    Contended(u32),
    /// The new state could not be written to `state.path`: the action was
    /// taken back, so nothing is in effect that a restart would forget.
    #[error("the new state could not be written to state.path (see failway's log); the action was not applied")]
    NotPersisted,
    /// `[audit] path` could not be written: the action was refused (or
    /// taken back) rather than carried out without a record.
    #[error("{0}; the action was not applied")]
    AuditUnwritable(String),
}

/// Why a write may not go to the replica.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    #[error("writes are not accepted in mode {0}")]
    Mode(Mode),
    #[error("the replica-writes latch could not be persisted")]
    PersistFailed,
    #[error("the failover driver stopped")]
    Stopped,
}

pub(super) enum Event {
    Probe(ProbeReport),
    Passive {
        region: Region,
        down: bool,
    },
    Command {
        command: Command,
        /// The operator action's audit line, completed with the outcome.
        audit: Option<Box<crate::audit::Record>>,
        reply: oneshot::Sender<Result<Result<CommandOutcome, Conflict>, CommandError>>,
    },
    BeginWrite {
        reply: oneshot::Sender<Result<(), WriteRefusal>>,
    },
    /// A configuration reload: new machine settings and probe thresholds,
    /// and whether `failover.mode` is `shadow`.
    Reconfigure {
        settings: super::machine::Settings,
        thresholds: (u32, u32),
        shadow: bool,
    },
}

/// How often the state file is compared with what was last written, so a
/// file deleted or replaced while failway runs is written again.
pub(super) const STATE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// The region traffic goes to in `mode`.
pub(super) fn serving_region(mode: Mode) -> Region {
    if mode.is_failover() {
        Region::Replica
    } else {
        Region::Primary
    }
}

pub(super) struct Driver {
    pub machine: Machine,
    pub counters: [HealthCounter; 2],
    pub regions: [RegionView; 2],
    /// The region the last published snapshot sends traffic to.
    pub serving: Region,
    pub file: Option<StateFile>,
    pub persisted: Option<State>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Told after every published change (the console's live stream).
    pub changed: tokio::sync::watch::Sender<()>,
    pub metrics: FailoverMetrics,
    pub clock: Clock,
    pub passive: Arc<super::PassiveSignals>,
    /// Fleet mode: the shared record this instance follows.
    pub fleet: Option<super::fleet_sync::FleetSync>,
    /// Fleet mode: transitions made locally and not yet agreed by the fleet;
    /// logged and counted only once the shared record carries them.
    pub pending: Vec<super::machine::Transition>,
    /// When the state file was last compared with what was written.
    pub state_checked_at: tokio::time::Instant,
    /// Whether it matched then (a mismatch is logged once, not every check).
    pub state_file_ok: bool,
    /// `failover.mode = "shadow"`: the machine whose decisions are only reported.
    pub shadow: Option<Machine>,
    /// The audit file and the hooks.
    pub audit: crate::audit::Sink,
    /// The service's name, for audit records.
    pub service: String,
}

impl Driver {
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        mut probes: mpsc::Receiver<ProbeReport>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.settle();
        // Not agreed: the machine is back on the shared record either way.
        let _ = self.reconcile().await;
        loop {
            let now = self.clock.now();
            // Fleet mode re-checks the lease and the record more often: a
            // lapsed lease must stop writes promptly.
            let every = if self.fleet.is_some() {
                super::fleet_sync::FLEET_EVERY
            } else {
                Duration::from_secs(1)
            };
            let held_back = self.fleet.as_ref().is_some_and(|f| f.held_back);
            let wake = self
                .machine
                .next_wakeup()
                // A change the fleet did not take is proposed again at the
                // next look, not in a tight loop on a past deadline.
                .filter(|_| !held_back)
                .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
                // Re-evaluate live-traffic signals now and then even when no
                // request arrives (a quiet window ages out).
                .map_or(every, |d| d.min(every));
            let mut record = self.fleet.as_ref().map(|f| f.record_rx.clone());
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev).await,
                    None => return,
                },
                report = probes.recv() => match report {
                    Some(report) => self.handle(Event::Probe(report)).await,
                    None => return,
                },
                _ = tokio::time::sleep(wake) => {}
                _ = stop.changed() => return,
                () = super::fleet_sync::record_changed(record.as_mut()) => {}
            }
            self.refresh_passive();
            self.settle();
            let _ = self.reconcile().await;
            self.persist_if_changed().await;
            self.check_state_file().await;
            self.publish();
            self.report_if_due();
        }
    }

    async fn handle(&mut self, ev: Event) {
        let now = self.clock.now();
        match ev {
            Event::Probe(report) => self.on_probe(report, now),
            Event::Passive { region, down } => self.apply_passive(region, down, now),
            Event::Reconfigure {
                settings,
                thresholds,
                shadow,
            } => {
                self.on_reconfigure(settings, thresholds);
                self.reconfigure_shadow(shadow, now);
            }
            Event::Command {
                command,
                audit,
                reply,
            } => {
                let answer = self.on_command(command, audit.map(|b| *b), now).await;
                let _ = reply.send(answer);
            }
            Event::BeginWrite { reply } if self.fleet.is_some() => {
                let answer = self.begin_fleet_write().await;
                self.publish();
                let _ = reply.send(answer);
            }
            Event::BeginWrite { reply } => {
                let answer = self.begin_replica_write(now).await;
                self.publish();
                let _ = reply.send(answer);
            }
        }
    }

    fn on_probe(&mut self, report: ProbeReport, now: SystemTime) {
        let i = report.region.index();
        self.metrics.health_check(report.region, report.success);
        let view = &mut self.regions[i];
        view.last_check = Some(now);
        view.last_status = report.status;
        view.last_error = report.error.clone();
        view.recent.push(report.success);
        let change = self.counters[i].record(report.success);
        let health = self.counters[i].health();
        view.health = health;
        if let Some(change) = change {
            tracing::info!(
                region = report.region.as_str(),
                from = change.from.as_str(),
                to = change.to.as_str(),
                last_error = report.error.as_deref().unwrap_or(""),
                "region health changed"
            );
        }
        let t = match report.region {
            Region::Primary => self.machine.observe_primary(health, now),
            Region::Replica => self.machine.observe_replica(health, now),
        };
        self.record(t);
        self.shadow_probe(report.region, health, now);
    }

    fn on_reconfigure(&mut self, settings: super::machine::Settings, thresholds: (u32, u32)) {
        if *self.machine.settings() != settings {
            tracing::info!(?settings, "failover settings reloaded");
            self.machine.set_settings(settings);
        }
        // The counts so far are kept: fresh counters would restart the
        // count of a failing region at every reload.
        for c in &mut self.counters {
            c.set_thresholds(thresholds.0, thresholds.1);
        }
    }

    /// Sets and persists the latch before a write leaves for the replica.
    async fn begin_replica_write(&mut self, now: SystemTime) -> Result<(), WriteRefusal> {
        match self.machine.begin_replica_write(now) {
            Err(Refused { mode }) => Err(WriteRefusal::Mode(mode)),
            Ok(LatchChange::AlreadyPersisted) => Ok(()),
            Ok(LatchChange::MustPersist) => {
                let state = self.machine.state().clone();
                if self.save(&state).await {
                    self.machine.mark_persisted(&state);
                    tracing::info!("replica-writes latch set: automatic failback is now refused");
                    self.audit_latch(true, now);
                    Ok(())
                } else {
                    Err(WriteRefusal::PersistFailed)
                }
            }
        }
    }

    fn apply_passive(&mut self, region: Region, down: bool, now: SystemTime) {
        let view = &mut self.regions[region.index()];
        if view.passive_down == down {
            return;
        }
        view.passive_down = down;
        tracing::info!(
            region = region.as_str(),
            down,
            "live-traffic error ratio {}",
            if down {
                "crossed the threshold"
            } else {
                "recovered"
            }
        );
        if region == Region::Primary {
            let t = self.machine.observe_primary_passive(down, now);
            self.record(t);
            self.shadow_passive(down, now);
        }
    }

    fn refresh_passive(&mut self) {
        let now = self.clock.now();
        for region in Region::ALL {
            let down = self.passive.is_down(region);
            self.apply_passive(region, down, now);
        }
    }

    /// Applies every transition that is due now.
    pub(super) fn settle(&mut self) {
        self.shadow_settle(self.clock.now());
        for _ in 0..8 {
            let now = self.clock.now();
            match self.machine.tick(now) {
                Some(t) => self.record(Some(t)),
                None => break,
            }
        }
    }

    pub(super) fn record(&mut self, t: Option<super::machine::Transition>) {
        if let Some(t) = t {
            if self.fleet.is_some() {
                // Logged and counted once the fleet agrees (`reconcile`).
                self.pending.push(t);
                return;
            }
            self.log_transition(&t);
        }
    }

    pub(super) fn log_transition(&self, t: &super::machine::Transition) {
        tracing::info!(
            from = t.from.as_str(),
            to = t.to.as_str(),
            trigger = t.trigger.as_str(),
            reason = %t.reason,
            latch_cleared = t.latch_cleared,
            "mode transition"
        );
        self.metrics.transition(t);
        self.audit_transition(t);
    }

    pub(super) async fn save(&mut self, state: &State) -> bool {
        let Some(file) = self.file.clone() else {
            // No state.path: nothing survives a restart, and nothing to fail.
            self.persisted = Some(state.clone());
            return true;
        };
        let owned = state.clone();
        let result = tokio::task::spawn_blocking(move || file.save(&owned)).await;
        match result {
            Ok(Ok(())) => {
                self.persisted = Some(state.clone());
                true
            }
            Ok(Err(e)) => {
                self.metrics.state_persist_error();
                tracing::error!("{e}");
                false
            }
            Err(e) => {
                self.metrics.state_persist_error();
                tracing::error!(error = %e, "state persistence task failed");
                false
            }
        }
    }

    /// Every [`STATE_CHECK_EVERY`]: when the state file is missing or not
    /// what was last written (deleted, replaced, restored from an old
    /// copy), writes it again, so a restart comes back in the current mode
    /// with the latch. A state not yet saved is retried by
    /// `persist_if_changed` instead.
    async fn check_state_file(&mut self) {
        let Some(file) = self.file.clone() else {
            return;
        };
        if self.state_checked_at.elapsed() < STATE_CHECK_EVERY {
            return;
        }
        self.state_checked_at = tokio::time::Instant::now();
        let state = self.machine.state().clone();
        if self.persisted.as_ref() != Some(&state) {
            return;
        }
        let (probe, reader) = (state.clone(), file.clone());
        let holds = tokio::task::spawn_blocking(move || reader.holds(&probe))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        if holds {
            self.state_file_ok = true;
            return;
        }
        if std::mem::replace(&mut self.state_file_ok, false) {
            tracing::warn!(
                path = %file.path().display(),
                "state.path is missing or differs from the state failway last wrote; writing it again"
            );
        }
        if self.save(&state).await {
            self.state_file_ok = true;
        }
    }

    /// Writes the state if it changed; false when that write failed.
    pub(super) async fn persist_if_changed(&mut self) -> bool {
        if self.persisted.as_ref() != Some(self.machine.state()) {
            let state = self.machine.state().clone();
            if !self.save(&state).await {
                return false;
            }
            self.machine.mark_persisted(&state);
        }
        true
    }

    /// Resets the live-traffic detector of the region traffic is about to
    /// move to (failover, failback, operator actions, a fleet record): what
    /// it recorded while not served from (requests in flight at an outage,
    /// reads retried on it) must not judge it down right after the switch.
    fn follow_serving_region(&mut self) {
        let serving = serving_region(self.machine.mode());
        if serving == self.serving {
            return;
        }
        self.serving = serving;
        self.passive.reset(serving);
        self.regions[serving.index()].passive_down = false;
        if serving == Region::Primary {
            self.machine.forget_primary_passive(self.clock.now());
        }
        tracing::debug!(
            region = serving.as_str(),
            "traffic moves to this region: its live-traffic counts start afresh"
        );
    }

    pub fn build_snapshot(&self) -> Snapshot {
        let m = &self.machine;
        let s = m.state();
        Snapshot {
            mode: m.mode(),
            since: m.since(),
            failed_over_at: s.failed_over_at,
            read_only_deadline: m.deadline(),
            latch: m.latch(),
            latch_persisted: m.latch_persisted(),
            operator_hold: m.operator_hold(),
            writes_suspended: m.mode() == Mode::FailoverReadWrite
                && self.fleet.as_ref().is_some_and(|f| !f.fleet.lease_alive()),
            failback_blocked: m.failback_blocked(),
            regions: self.regions.clone(),
            transitions: m.transitions().cloned().collect(),
            drill: m.drill().cloned(),
            shadow: self.shadow_mode(),
        }
    }

    pub fn publish(&mut self) {
        let was_drilling = self.snapshot.load().drill.is_some();
        self.observe_drill(was_drilling);
        self.follow_serving_region();
        let snap = self.build_snapshot();
        if **self.snapshot.load() != snap {
            self.metrics.publish(&snap);
            self.snapshot.store(Arc::new(snap));
            self.changed.send_replace(());
        }
    }
}
