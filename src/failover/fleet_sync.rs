//! Fleet mode in the failover driver: keeps the local [`Machine`] in step
//! with the shared etcd record (docs/design.md §1).
//!
//! The machine still decides what *would* happen; after every event the
//! driver calls [`Driver::reconcile`], which either gets the fleet to agree
//! (compare-and-swap on the record's epoch) or takes the change back:
//! - `primary -> failover_read_only` on this instance's own health verdict
//!   is proposed only once `fleet.failover_quorum` instances (itself
//!   included) report the primary down;
//! - an automatic failback is proposed only while no other instance reports
//!   the primary down;
//! - every change (deadline, failback, the latch) needs a live connection
//!   to etcd; without one the machine is put back to the last record seen,
//!   so an instance alone never enables writes nor fails back.
//!
//! Operator actions go to the record on their own path
//! (`fleet_command.rs`), never mixed with what this reconciling proposes.
//!
//! The first compare-and-swap wins; the others adopt the winner's record.
//! Records other instances store arrive through the watch and are adopted as
//! they come. Transitions are logged and counted when the fleet agrees, not
//! when the local machine first proposes them.
//!
//! What it deliberately does not do: talk to etcd beyond the [`Fleet`]
//! handle, or decide anything the pure machine does not already decide.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::driver::{Driver, WriteRefusal};
use super::machine::{Health, LatchChange, Mode, Refused, State, Transition, Trigger};
use crate::failover::fleet::{CasOutcome, Fleet, FleetError, FleetRecord, InstanceReport};

/// How often the driver looks at the lease and the record at the latest.
pub(super) const FLEET_EVERY: Duration = Duration::from_millis(200);

/// What the driver holds in fleet mode.
pub(super) struct FleetSync {
    pub fleet: Fleet,
    pub record_rx: watch::Receiver<Option<FleetRecord>>,
    /// The state the fleet last agreed on as this instance knows it; before
    /// any record was seen, the state this instance started from.
    pub base: State,
    /// The epoch of `base`; `None` before any record was seen.
    pub epoch: Option<u64>,
    pub quorum: u32,
    pub lease_ttl: Duration,
    /// The last local change was taken back: the driver then waits
    /// [`FLEET_EVERY`] before proposing again rather than at a deadline or
    /// hysteresis end that has already passed.
    pub held_back: bool,
    pub last_report: Option<InstanceReport>,
    pub reported_at: Option<Instant>,
}

/// Why a local change was not agreed by the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unagreed {
    /// Another instance changed the record first; its record was adopted.
    Lost,
    /// Not allowed now (no etcd, no quorum, an error): taken back.
    Reverted,
}

/// Why [`Driver::store`] did not store a record.
#[derive(Debug)]
pub(super) enum NotStored {
    /// Another instance changed the record first; its record was adopted.
    Lost,
    /// The key is gone; the next proposal creates it anew.
    Vanished,
    /// etcd could not be asked, or answered with an error.
    Failed(FleetError),
}

/// Resolves when the record `rx` follows changed; never without one.
pub(super) async fn record_changed(rx: Option<&mut watch::Receiver<Option<FleetRecord>>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

impl Driver {
    /// Brings the local machine and the shared record together; see the
    /// module docs. `Ok` when they agree (nothing to do, or this instance's
    /// change won).
    pub(super) async fn reconcile(&mut self) -> Result<(), Unagreed> {
        let result = self.reconcile_once().await;
        if let Some(f) = self.fleet.as_mut() {
            f.held_back = result == Err(Unagreed::Reverted);
        }
        result
    }

    async fn reconcile_once(&mut self) -> Result<(), Unagreed> {
        if self.follow_record() {
            return Err(Unagreed::Lost);
        }
        let Some(f) = self.fleet.as_ref() else {
            return Ok(());
        };
        if f.epoch.is_none() && f.record_rx.borrow().is_none() && f.fleet.connected() {
            // No record yet: this instance's state becomes the first one.
            let state = self.machine.state().clone();
            return self.propose(state, "first fleet record").await;
        }
        if self.machine.state() == &f.base {
            self.pending.clear();
            return Ok(());
        }
        if !f.fleet.connected() {
            tracing::debug!("fleet: etcd unreachable; keeping the last shared record");
            return self.revert();
        }
        let trigger = self.pending.last().map(|t| t.trigger);
        let auto_failover = f.base.mode == Mode::Primary
            && self.machine.mode() == Mode::FailoverReadOnly
            && matches!(trigger, Some(Trigger::HealthCheck | Trigger::Passive));
        let auto_failback = self.machine.mode() == Mode::Primary
            && f.base.mode.is_failover()
            && trigger == Some(Trigger::Failback);
        if auto_failover || auto_failback {
            let own = f.fleet.instance_id().to_owned();
            let (quorum, fleet) = (f.quorum, f.fleet.clone());
            let others_down = match fleet.instances().await {
                Ok(list) => list
                    .iter()
                    .filter(|r| r.instance_id != own && r.primary_down)
                    .count(),
                Err(e) => {
                    tracing::debug!(error = %e, "fleet: cannot list instances");
                    return self.revert();
                }
            };
            let down = u32::try_from(others_down)
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            if auto_failover && down < quorum {
                tracing::debug!(
                    down,
                    quorum,
                    "fleet: primary down here; waiting for the failover quorum"
                );
                return self.revert();
            }
            if auto_failback && others_down > 0 {
                tracing::debug!(
                    others_down,
                    "fleet: other instances still see the primary down; no failback"
                );
                return self.revert();
            }
        }
        let reason = match self.pending.last() {
            Some(t) => t.reason.clone(),
            None if self.machine.latch() && !f.base.replica_writes_latch => {
                "replica-writes latch set".to_owned()
            }
            None => "failover state changed".to_owned(),
        };
        let state = self.machine.state().clone();
        self.propose(state, &reason).await
    }

    /// Adopts the record the fleet stored since the last look, if any;
    /// `true` when that dropped a local change not yet proposed (it was made
    /// against a record that is no longer the truth).
    pub(super) fn follow_record(&mut self) -> bool {
        let Some(f) = self.fleet.as_mut() else {
            return false;
        };
        let seen = f.record_rx.borrow_and_update().clone();
        match seen {
            Some(record) if Some(record.epoch) != f.epoch => {
                let local_change = self.machine.state() != &f.base;
                self.adopt(record);
                local_change
            }
            _ => false,
        }
    }

    /// Compare-and-swap of `state` against the epoch of the base; a change
    /// not stored is taken back.
    async fn propose(&mut self, state: State, reason: &str) -> Result<(), Unagreed> {
        match self.store(state, reason).await {
            Ok(()) => Ok(()),
            Err(NotStored::Lost) => Err(Unagreed::Lost),
            Err(NotStored::Vanished) => self.revert(),
            Err(NotStored::Failed(e)) => {
                tracing::warn!(error = %e, "fleet: compare-and-swap failed; keeping the last shared record");
                self.revert()
            }
        }
    }

    /// Stores `state` as the next record if the stored epoch is still the
    /// base's; on a win the base becomes the new record and the pending
    /// transitions are logged and counted. The machine is left as it is on
    /// [`NotStored::Vanished`] and [`NotStored::Failed`]: taking the change
    /// back is the caller's.
    pub(super) async fn store(&mut self, state: State, reason: &str) -> Result<(), NotStored> {
        let Some(f) = self.fleet.as_ref() else {
            return Ok(());
        };
        let fleet = f.fleet.clone();
        let expected = f.epoch;
        match fleet
            .compare_and_swap(expected, &state, fleet.instance_id(), reason)
            .await
        {
            Ok(CasOutcome::Won(record)) => {
                for t in std::mem::take(&mut self.pending) {
                    self.log_transition(&t);
                }
                tracing::info!(
                    epoch = record.epoch,
                    mode = record.state.mode.as_str(),
                    "fleet record changed by this instance"
                );
                if let Some(f) = self.fleet.as_mut() {
                    f.epoch = Some(record.epoch);
                    f.base = record.state;
                }
                Ok(())
            }
            Ok(CasOutcome::Lost(Some(record))) => {
                self.adopt(record);
                Err(NotStored::Lost)
            }
            Ok(CasOutcome::Lost(None)) => {
                // The key vanished: propose anew from nothing next time.
                if let Some(f) = self.fleet.as_mut() {
                    f.epoch = None;
                }
                Err(NotStored::Vanished)
            }
            Err(e) => Err(NotStored::Failed(e)),
        }
    }

    /// Takes `record` as the truth.
    pub(super) fn adopt(&mut self, record: FleetRecord) {
        let from = self
            .fleet
            .as_ref()
            .map_or(self.machine.mode(), |f| f.base.mode);
        self.pending.clear();
        if record.state.mode != from {
            tracing::info!(
                from = from.as_str(),
                to = record.state.mode.as_str(),
                epoch = record.epoch,
                changed_by = %record.changed_by,
                reason = %record.reason,
                "following the fleet record"
            );
            let last: Option<&Transition> = record.state.transitions.back();
            if let Some(t) = last.filter(|t| t.to == record.state.mode) {
                let mut t = t.clone();
                t.from = from;
                self.metrics.transition(&t);
            }
        }
        self.machine.adopt(record.state.clone());
        if let Some(f) = self.fleet.as_mut() {
            f.epoch = Some(record.epoch);
            f.base = record.state;
        }
    }

    /// [`take_back`](Self::take_back), answering why.
    fn revert(&mut self) -> Result<(), Unagreed> {
        self.take_back();
        Err(Unagreed::Reverted)
    }

    /// Puts the machine back to the base, keeping its health observations.
    pub(super) fn take_back(&mut self) {
        if let Some(f) = self.fleet.as_ref() {
            let base = f.base.clone();
            self.machine.adopt(base);
        }
        self.pending.clear();
    }

    /// Fleet mode's [`Event::BeginWrite`](super::driver::Event): the latch
    /// goes into the shared record (and the local file) before the write may
    /// leave; no lease, no etcd or a lost race the fleet does not settle
    /// refuses it.
    pub(super) async fn begin_fleet_write(&mut self) -> Result<(), WriteRefusal> {
        for _ in 0..3 {
            let now = self.clock.now();
            if !self.fleet.as_ref().is_some_and(|f| f.fleet.lease_alive()) {
                return Err(WriteRefusal::Mode(self.machine.mode()));
            }
            match self.machine.begin_replica_write(now) {
                Err(Refused { mode }) => return Err(WriteRefusal::Mode(mode)),
                Ok(LatchChange::AlreadyPersisted) => return Ok(()),
                Ok(LatchChange::MustPersist) => {}
            }
            match self.reconcile().await {
                Ok(()) => {
                    let state = self.machine.state().clone();
                    // The shared record holds the latch; the local file only
                    // keeps this instance cautious without etcd.
                    if !self.save(&state).await {
                        tracing::warn!(
                            "replica-writes latch is in the fleet record but not in state.path"
                        );
                    }
                    self.machine.mark_persisted(&state);
                    if self.machine.latch_persisted() {
                        tracing::info!(
                            "replica-writes latch set fleet-wide: automatic failback is now refused"
                        );
                        return Ok(());
                    }
                }
                Err(Unagreed::Lost) => continue,
                Err(Unagreed::Reverted) => return Err(WriteRefusal::PersistFailed),
            }
        }
        Err(WriteRefusal::PersistFailed)
    }

    /// Puts this instance's report when it changed, and every third of the
    /// lease TTL (so `fleet status` shows fresh ages); never waits for it.
    pub(super) fn report_if_due(&mut self) {
        let primary_down = self.machine.primary_down();
        let replica_healthy = self.machine.replica_health() == Health::Healthy;
        let mode = self.machine.mode();
        let Some(f) = self.fleet.as_mut() else {
            return;
        };
        let report = InstanceReport {
            instance_id: f.fleet.instance_id().to_owned(),
            mode: mode.as_str().to_owned(),
            primary_down,
            replica_healthy,
            epoch_seen: f.epoch.unwrap_or(0),
            at_unix_ms: 0,
        };
        let every = f.lease_ttl / 3;
        let due = f.last_report.as_ref() != Some(&report)
            || f.reported_at.is_none_or(|at| at.elapsed() >= every);
        if !due {
            return;
        }
        f.last_report = Some(report.clone());
        f.reported_at = Some(Instant::now());
        let fleet = f.fleet.clone();
        tokio::spawn(async move {
            if let Err(e) = fleet.report(&report).await {
                tracing::debug!(error = %e, "fleet: report not stored yet");
            }
        });
    }
}
