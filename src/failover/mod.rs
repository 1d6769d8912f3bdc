//! Failover: the one-way `primary -> replica` decision (docs/design.md §1).
//!
//! [`machine`] is the pure state machine; [`driver`] is the task that owns it,
//! feeds it probe results, live-traffic signals, operator commands and the
//! clock, persists its state ([`persist`]) and publishes [`Snapshot`]s. The
//! [`Failover`] handle is what the rest of failway holds: the data path reads
//! the snapshot without locks, reports live outcomes, and asks before the
//! first write to the replica; the admin API sends operator commands.

mod audit;
mod command;
pub(crate) mod drill;
pub(crate) mod driver;
pub mod fleet;
mod fleet_command;
mod fleet_sync;
pub mod machine;
pub(crate) mod metrics;
pub mod persist;
mod shadow;
pub(crate) mod snapshot;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use prometheus::Registry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use self::driver::{CommandError, WriteRefusal};
use self::driver::{Driver, Event};
use self::machine::{Command, CommandOutcome, Conflict, Machine, Mode, Settings};
pub use self::metrics::{BlockReason, FailoverMetrics};
use self::persist::{PersistError, StateFile};
pub use self::snapshot::{RegionView, Snapshot};
use crate::config::{Config, FailbackMode, FailoverMode};
use crate::failover::fleet::{CasOutcome, Fleet, FleetError, FleetMetrics};
use crate::health::counter::HealthCounter;
/// What happened to a live request, as [`Failover::record_outcome`] takes it.
pub use crate::health::passive::Outcome;
use crate::health::passive::PassiveDetector;
pub use crate::health::ProbeReport;
use crate::region::Region;

/// Wall-clock time that follows tokio's clock, so paused-time tests move it
/// and a wall-clock step does not jump the read-only deadline mid-run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    mono: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            wall: SystemTime::now(),
            mono: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }
}

/// Live-traffic error ratios per region, recorded by the data path.
pub struct PassiveSignals {
    detectors: [Mutex<PassiveDetector>; 2],
    reported: [AtomicBool; 2],
    tx: mpsc::Sender<Event>,
}

impl PassiveSignals {
    fn new(p: &crate::config::PassiveHealthConfig, tx: mpsc::Sender<Event>) -> PassiveSignals {
        let detector = || {
            Mutex::new(PassiveDetector::new(
                p.window,
                p.min_requests,
                p.error_ratio,
            ))
        };
        PassiveSignals {
            detectors: [detector(), detector()],
            reported: [AtomicBool::new(false), AtomicBool::new(false)],
            tx,
        }
    }

    fn record(&self, region: Region, outcome: Outcome) {
        let now = tokio::time::Instant::now().into_std();
        let i = region.index();
        let down = {
            let Ok(mut d) = self.detectors[i].lock() else {
                return;
            };
            d.record(now, outcome);
            d.is_down(now)
        };
        if self.reported[i].swap(down, Ordering::Relaxed) != down {
            // A full channel only delays the signal: the driver re-reads the
            // detectors every second.
            let _ = self.tx.try_send(Event::Passive { region, down });
        }
    }

    /// Forgets what live traffic said of `region`: traffic moves to it now.
    fn reset(&self, region: Region) {
        let i = region.index();
        if let Ok(mut d) = self.detectors[i].lock() {
            d.reset();
        }
        self.reported[i].store(false, Ordering::Relaxed);
    }

    /// Reloaded `[health.passive]` limits; the windows keep their counts.
    fn reconfigure(&self, p: &crate::config::PassiveHealthConfig) {
        let now = tokio::time::Instant::now().into_std();
        for d in &self.detectors {
            if let Ok(mut d) = d.lock() {
                d.reconfigure(now, p.window, p.min_requests, p.error_ratio);
            }
        }
    }

    fn is_down(&self, region: Region) -> bool {
        let now = tokio::time::Instant::now().into_std();
        let i = region.index();
        let down = self.detectors[i]
            .lock()
            .map(|d| d.is_down(now))
            .unwrap_or(false);
        self.reported[i].store(down, Ordering::Relaxed);
        down
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error(transparent)]
    State(#[from] PersistError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// The handle to the failover engine.
#[derive(Clone)]
pub struct Failover {
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Marked changed after every published snapshot.
    changed: watch::Receiver<()>,
    tx: mpsc::Sender<Event>,
    /// The probers' results, on a channel of their own.
    probes: mpsc::Sender<ProbeReport>,
    passive: Arc<PassiveSignals>,
    metrics: FailoverMetrics,
    fleet: Option<Fleet>,
    /// Writes on their way to the replica hold it shared, from the check
    /// until the attempt ends; an operator command holds it alone, so no
    /// write checked before a command is sent after it.
    replica_writes: Arc<tokio::sync::RwLock<()>>,
}

/// Which service a failover engine decides for, and where its state goes.
pub struct Scope {
    /// `None`: the single-pair form.
    pub service: Option<String>,
    pub file: Option<StateFile>,
    /// Where transitions, drill events and operator actions are recorded.
    pub audit: crate::audit::Sink,
}

/// A write's right to be sent to the replica, held while it is sent.
pub struct ReplicaWrite {
    _gate: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// How long an operator command waits for writes already on their way to
/// the replica before it applies anyway (a hung replica must not block a
/// failback; the command is then logged with the count).
const COMMAND_WAITS_FOR_WRITES: std::time::Duration = std::time::Duration::from_secs(5);

fn settings(cfg: &Config) -> Settings {
    Settings {
        auto_failover: cfg.failover.mode == FailoverMode::Auto,
        read_only_window: cfg.failover.read_only_window,
        auto_failback: cfg.failover.failback == FailbackMode::Safe,
        failback_after: cfg.failover.failback_after,
    }
}

impl Failover {
    /// Loads the persisted state (a corrupt file is an error), checks the
    /// state file can be written (by writing it, at every start), and
    /// starts the driver task.
    ///
    /// With `[fleet]`, also connects to etcd and waits up to `lease_ttl` for
    /// the shared record, which then replaces the local state (or is created
    /// from it when absent). Without etcd, the instance starts from the local
    /// state and adopts the record once it sees it.
    pub async fn start(
        cfg: &Config,
        registry: &Registry,
        stop: watch::Receiver<bool>,
    ) -> Result<(Failover, JoinHandle<()>), FailoverError> {
        let scope = Scope {
            service: None,
            file: cfg.state.path.clone().map(StateFile::new),
            audit: crate::audit::Sink::none(),
        };
        Self::start_scoped(cfg, registry, stop, scope).await
    }

    /// [`start`](Self::start) for one service of the `[[service]]` form:
    /// its entry of the state file, its own fleet record.
    pub async fn start_scoped(
        cfg: &Config,
        registry: &Registry,
        stop: watch::Receiver<bool>,
        scope: Scope,
    ) -> Result<(Failover, JoinHandle<()>), FailoverError> {
        let clock = Clock::start();
        let metrics = FailoverMetrics::register(registry)?;
        let file = scope.file;
        let audit = scope.audit;
        let service = scope
            .service
            .clone()
            .unwrap_or_else(|| crate::config::DEFAULT_SERVICE.to_owned());
        let machine = match file.as_ref().map(StateFile::load).transpose()?.flatten() {
            Some(state) => {
                if let Some(f) = &file {
                    // Written back as loaded: a folder that cannot take the
                    // next change fails the start, not that change.
                    f.save_at_start(&state)?;
                }
                tracing::info!(
                    mode = state.mode.as_str(),
                    latch = state.replica_writes_latch,
                    deadline = ?state.read_only_deadline,
                    "failover state restored"
                );
                Machine::restore(settings(cfg), state)
            }
            None => {
                let m = Machine::new(settings(cfg), clock.now());
                if let Some(f) = &file {
                    // Fail at start, not at the first failover.
                    f.save_at_start(m.state())?;
                }
                m
            }
        };
        let (machine, fleet) = match &cfg.fleet {
            Some(fc) => {
                let mut fc = fc.clone();
                if let Some(name) = scope
                    .service
                    .filter(|n| n != crate::config::DEFAULT_SERVICE)
                {
                    fc.key = format!("{}/{name}", fc.key.trim_end_matches('/'));
                }
                let (machine, sync) = start_fleet(cfg, &fc, registry, &stop, machine).await?;
                (machine, Some(sync))
            }
            None => (machine, None),
        };
        let fleet_handle = fleet.as_ref().map(|f| f.fleet.clone());
        let persisted = file.as_ref().map(|_| machine.state().clone());
        let (tx, rx) = mpsc::channel(1024);
        let (probes, probes_rx) = mpsc::channel(64);
        let passive = Arc::new(PassiveSignals::new(&cfg.health.passive, tx.clone()));
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::initial(clock.now())));
        let (changed_tx, changed) = watch::channel(());
        let h = &cfg.health;
        let mut driver = Driver {
            counters: [
                HealthCounter::new(h.unhealthy_threshold, h.healthy_threshold),
                HealthCounter::new(h.unhealthy_threshold, h.healthy_threshold),
            ],
            regions: [RegionView::unknown(), RegionView::unknown()],
            serving: driver::serving_region(machine.mode()),
            file,
            persisted,
            snapshot: snapshot.clone(),
            changed: changed_tx,
            metrics: metrics.clone(),
            clock,
            passive: passive.clone(),
            fleet,
            pending: Vec::new(),
            state_checked_at: tokio::time::Instant::now(),
            state_file_ok: true,
            shadow: (cfg.failover.mode == FailoverMode::Shadow)
                .then(|| shadow::shadow_machine(machine.settings().to_owned(), clock.now())),
            audit,
            service,
            machine,
        };
        driver.publish();
        let task = tokio::spawn(driver.run(rx, probes_rx, stop));
        Ok((
            Failover {
                snapshot,
                changed,
                tx,
                probes,
                passive,
                metrics,
                replica_writes: Arc::new(tokio::sync::RwLock::new(())),
                fleet: fleet_handle,
            },
            task,
        ))
    }

    /// Applies reloaded `[failover]` and `[health]` thresholds. The state
    /// (mode, deadline, latch) is never reset by a reload, nor are the
    /// health counts: a reload must not hold off a failover.
    pub async fn reconfigure(&self, cfg: &Config) {
        self.passive.reconfigure(&cfg.health.passive);
        let event = Event::Reconfigure {
            settings: settings(cfg),
            thresholds: (cfg.health.unhealthy_threshold, cfg.health.healthy_threshold),
            shadow: cfg.failover.mode == FailoverMode::Shadow,
        };
        let _ = self.tx.send(event).await;
    }

    /// The current state; a lock-free read.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Changes once per published snapshot: wait on it, then read
    /// [`snapshot`](Self::snapshot).
    pub fn changes(&self) -> watch::Receiver<()> {
        self.changed.clone()
    }

    /// The current state, held past the next change (an `Arc` clone).
    pub fn snapshot_arc(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn metrics(&self) -> &FailoverMetrics {
        &self.metrics
    }

    /// Where the probers send their results.
    pub fn probe_reports(&self) -> mpsc::Sender<ProbeReport> {
        self.probes.clone()
    }

    /// Reports one probe result, as a prober does.
    pub async fn report_probe(&self, report: ProbeReport) {
        let _ = self.probes.send(report).await;
    }

    /// Reports what happened to a live request on `region`.
    pub fn record_outcome(&self, region: Region, outcome: Outcome) {
        self.passive.record(region, outcome);
        self.metrics.drills.tally.outcome(region, outcome);
    }

    /// Applies an operator command; answers once the new state is persisted.
    /// Writes already cleared for the replica are sent (or not) before it
    /// applies; later writes see its outcome.
    pub async fn command(
        &self,
        command: Command,
    ) -> Result<Result<CommandOutcome, Conflict>, CommandError> {
        self.command_recorded(command, None).await
    }

    /// [`command`](Self::command) with the operator action's audit line
    /// (source, correlation id, who), written with its outcome before the
    /// answer; without an audit file, the action is not recorded.
    pub async fn command_recorded(
        &self,
        command: Command,
        audit: Option<crate::audit::Record>,
    ) -> Result<Result<CommandOutcome, Conflict>, CommandError> {
        let gate =
            tokio::time::timeout(COMMAND_WAITS_FOR_WRITES, self.replica_writes.write()).await;
        if gate.is_err() {
            tracing::warn!(
                waited_ms = COMMAND_WAITS_FOR_WRITES.as_millis() as u64,
                "operator command applied while writes to the replica are still in flight"
            );
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Command {
                command,
                audit: audit.map(Box::new),
                reply,
            })
            .await
            .map_err(|_| CommandError::Stopped)?;
        rx.await.map_err(|_| CommandError::Stopped)?
    }

    /// Fleet mode's connection to etcd; `None` without `[fleet]`.
    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    /// Must succeed right before a write is sent to the replica: sets the
    /// replica-writes latch and persists it first (docs/design.md §1). The
    /// answer is held while the write is sent: operator commands wait.
    pub async fn begin_replica_write(&self) -> Result<ReplicaWrite, WriteRefusal> {
        let gate = self.replica_writes.clone().read_owned().await;
        {
            let snap = self.snapshot.load();
            if snap.mode == Mode::FailoverReadWrite && snap.latch_persisted {
                match &self.fleet {
                    None => return Ok(ReplicaWrite { _gate: gate }),
                    // Checked here too, not only in the snapshot: the lease
                    // may lapse between two snapshots.
                    Some(f) if f.lease_alive() && !snap.writes_suspended => {
                        return Ok(ReplicaWrite { _gate: gate })
                    }
                    Some(_) => return Err(WriteRefusal::Mode(snap.mode)),
                }
            }
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::BeginWrite { reply })
            .await
            .map_err(|_| WriteRefusal::Stopped)?;
        rx.await.map_err(|_| WriteRefusal::Stopped)??;
        Ok(ReplicaWrite { _gate: gate })
    }
}

/// Connects to etcd and settles which state the instance starts from.
async fn start_fleet(
    cfg: &Config,
    fc: &crate::config::FleetConfig,
    registry: &Registry,
    stop: &watch::Receiver<bool>,
    mut machine: Machine,
) -> Result<(Machine, fleet_sync::FleetSync), FailoverError> {
    let metrics = FleetMetrics::register(registry)?;
    let id = fc
        .instance_id
        .clone()
        .unwrap_or_else(|| crate::failover::fleet::default_instance_id(cfg.admin.listen.port()));
    let fleet = Fleet::start(fc, id, metrics, stop.clone()).await?;
    let mut synced = fleet.synced();
    // The guard `wait_for` returns must not be held: it blocks the watch.
    let synced_now = tokio::time::timeout(fc.lease_ttl, synced.wait_for(|s| *s))
        .await
        .is_ok_and(|r| r.is_ok());
    let mut epoch = None;
    if synced_now {
        let held = fleet.record().borrow().clone();
        let record = match held {
            Some(r) => Some(r),
            None => {
                let local = machine.state().clone();
                match fleet
                    .compare_and_swap(None, &local, fleet.instance_id(), "first fleet record")
                    .await
                {
                    Ok(CasOutcome::Won(r)) | Ok(CasOutcome::Lost(Some(r))) => Some(r),
                    Ok(CasOutcome::Lost(None)) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "fleet: cannot create the shared record yet");
                        None
                    }
                }
            }
        };
        if let Some(r) = record {
            tracing::info!(
                epoch = r.epoch,
                mode = r.state.mode.as_str(),
                latch = r.state.replica_writes_latch,
                "failover state taken from the fleet record"
            );
            machine = Machine::restore(settings(cfg), r.state);
            epoch = Some(r.epoch);
        }
    } else {
        tracing::warn!(
            "fleet: etcd not reachable at start; starting from the local state and following the shared record once reachable"
        );
    }
    let base = machine.state().clone();
    let record_rx = fleet.record();
    Ok((
        machine,
        fleet_sync::FleetSync {
            fleet,
            record_rx,
            base,
            epoch,
            quorum: fc.failover_quorum,
            lease_ttl: fc.lease_ttl,
            held_back: false,
            last_report: None,
            reported_at: None,
        },
    ))
}
