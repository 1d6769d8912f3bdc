//! Model-based property test of the machine: random sequences of probe
//! verdicts, live-traffic verdicts, operator commands, writes bound for the
//! replica, state-file outages, restarts, reloads and clock steps are run
//! against the machine (driven as the driver drives it: settle with `tick`,
//! persist what changed) and against a reference model written from
//! docs/design.md §1. After every step the two must agree, and the safety rules
//! are checked on the machine directly, so a wrong model cannot hide them:
//! - no write is let through outside `failover_read_write`, and none before
//!   the latch is on disk;
//! - the latch is cleared only by a forced operator failback (a restart
//!   may only drop a latch that no forwarded write depends on);
//! - no automatic failback while the latch is set or an operator holds;
//! - the read-only deadline is fixed when a failover starts and never moves
//!   for that failover (reloads and restarts included);
//! - `next_wakeup` says when `tick` would act, and settling terminates.
//!
//! The machine has no drill concept; drills are left out.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::UNIX_EPOCH;

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Primary,
    Replica,
}

/// One thing that happens to the driver.
#[derive(Debug, Clone)]
enum Op {
    Probe(Side, Health),
    /// The live-traffic detector's verdict on the primary.
    Passive(bool),
    Failover {
        force: bool,
    },
    EnableWrites,
    Failback {
        force: bool,
    },
    /// A write is about to leave for the replica.
    Write,
    /// The clock moves on by this many milliseconds.
    Advance(u64),
    /// The wall clock steps back by this many milliseconds.
    ClockBack(u64),
    /// The state file can (`true`) or cannot be written from now on.
    Disk(bool),
    /// failway restarts from what is on disk.
    Restart,
    /// A config reload.
    Reload(Settings),
}

fn health() -> impl Strategy<Value = Health> {
    prop_oneof![
        3 => Just(Health::Healthy),
        3 => Just(Health::Unhealthy),
        1 => Just(Health::Unknown),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    let window = prop_oneof![
        Just(None),
        Just(Some(Duration::ZERO)),
        Just(Some(Duration::from_secs(1))),
        Just(Some(Duration::from_secs(30))),
        Just(Some(6 * HOUR)),
        Just(Some(Duration::MAX)),
    ];
    let failback_after = prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_millis(400)),
        Just(Duration::from_secs(5)),
        Just(Duration::from_secs(300)),
    ];
    (
        prop::bool::weighted(0.85),
        window,
        prop::bool::weighted(0.75),
        failback_after,
    )
        .prop_map(
            |(auto_failover, read_only_window, auto_failback, failback_after)| Settings {
                auto_failover,
                read_only_window,
                auto_failback,
                failback_after,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let step = prop_oneof![
        4 => 1..=500u64,
        3 => 500..=10_000u64,
        // Past a 6 h window, and past every failback_after.
        1 => 3_600_000..=8 * 3_600_000u64,
    ];
    prop_oneof![
        8 => health().prop_map(|h| Op::Probe(Side::Primary, h)),
        // Mostly healthy: a replica judged down rules failover out.
        3 => prop_oneof![3 => Just(Health::Healthy), 1 => health()]
            .prop_map(|h| Op::Probe(Side::Replica, h)),
        2 => any::<bool>().prop_map(Op::Passive),
        // Rarer: each one sets a hold that only an operator lifts.
        1 => any::<bool>().prop_map(|force| Op::Failover { force }),
        1 => Just(Op::EnableWrites),
        2 => any::<bool>().prop_map(|force| Op::Failback { force }),
        4 => Just(Op::Write),
        6 => step.prop_map(Op::Advance),
        1 => (1..=5_000u64).prop_map(Op::ClockBack),
        1 => any::<bool>().prop_map(Op::Disk),
        1 => Just(Op::Restart),
        1 => settings().prop_map(Op::Reload),
    ]
}

/// What an operator command came to, without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Changed,
    NoOp,
    HoldSet,
    Conflict(ConflictKind),
}

fn outcome(r: &Result<CommandOutcome, Conflict>) -> Outcome {
    match r {
        Ok(CommandOutcome::Changed(_)) => Outcome::Changed,
        Ok(CommandOutcome::NoOp) => Outcome::NoOp,
        Ok(CommandOutcome::HoldSet) => Outcome::HoldSet,
        Err(c) => Outcome::Conflict(c.kind),
    }
}

/// docs/design.md §1 as plainly as it reads. Times are whole milliseconds, as
/// the machine stores them.
#[derive(Debug, Clone)]
struct Model {
    settings: Settings,
    mode: Mode,
    failed_over_at: Option<SystemTime>,
    deadline: Option<SystemTime>,
    latch: bool,
    hold: bool,
    /// A write was forwarded to the replica since the latch was last
    /// cleared (not persisted: implied by the latch on disk).
    written: bool,
    primary: Health,
    replica: Health,
    passive: bool,
    healthy_since: Option<SystemTime>,
}

impl Model {
    fn new(settings: Settings) -> Model {
        Model {
            settings,
            mode: Mode::Primary,
            failed_over_at: None,
            deadline: None,
            latch: false,
            hold: false,
            written: false,
            primary: Health::Unknown,
            replica: Health::Unknown,
            passive: false,
            healthy_since: None,
        }
    }

    /// After a restart: what was on disk, regions not yet probed.
    fn restarted(disk: &Model, settings: Settings) -> Model {
        Model {
            settings,
            primary: Health::Unknown,
            replica: Health::Unknown,
            passive: false,
            healthy_since: None,
            ..disk.clone()
        }
    }

    fn primary_down(&self) -> bool {
        self.primary == Health::Unhealthy || self.passive
    }

    fn observe(&mut self, now: SystemTime) {
        if self.primary == Health::Healthy && !self.passive {
            self.healthy_since.get_or_insert(now);
        } else {
            self.healthy_since = None;
        }
    }

    fn fail_over(&mut self, now: SystemTime, operator: bool) {
        self.mode = Mode::FailoverReadOnly;
        self.failed_over_at = Some(now);
        self.deadline = self
            .settings
            .read_only_window
            .and_then(|w| now.checked_add(w));
        self.hold = operator;
    }

    fn fail_back(&mut self) {
        *self = Model {
            mode: Mode::Primary,
            failed_over_at: None,
            deadline: None,
            latch: false,
            hold: false,
            written: false,
            ..self.clone()
        };
    }

    fn enable_writes(&mut self) {
        self.mode = Mode::FailoverReadWrite;
        self.deadline = None;
    }

    /// Every automatic transition due at `now`, in order.
    fn settle(&mut self, now: SystemTime) -> Vec<(Mode, Mode, Trigger)> {
        let mut done = Vec::new();
        loop {
            let from = self.mode;
            let trigger = if from == Mode::Primary {
                if !self.settings.auto_failover || self.replica != Health::Healthy {
                    break;
                }
                let trigger = if self.primary == Health::Unhealthy {
                    Trigger::HealthCheck
                } else if self.passive {
                    Trigger::Passive
                } else {
                    break;
                };
                self.fail_over(now, false);
                trigger
            } else if self.failback_due(now) {
                self.fail_back();
                Trigger::Failback
            } else if from == Mode::FailoverReadOnly && self.deadline.is_some_and(|d| now >= d) {
                self.enable_writes();
                Trigger::ReadOnlyWindow
            } else {
                break;
            };
            done.push((from, self.mode, trigger));
        }
        done
    }

    fn failback_due(&self, now: SystemTime) -> bool {
        self.settings.auto_failback
            && !self.hold
            && !self.latch
            && self.healthy_since.is_some_and(|since| {
                now.duration_since(since)
                    .is_ok_and(|d| d >= self.settings.failback_after)
            })
    }

    fn command(&mut self, op: &Op, now: SystemTime) -> Outcome {
        match *op {
            Op::Failover { .. } if self.mode.is_failover() => {
                let was = self.hold;
                self.hold = true;
                if was {
                    Outcome::NoOp
                } else {
                    Outcome::HoldSet
                }
            }
            Op::Failover { force } => {
                if self.replica == Health::Unhealthy && !force {
                    return Outcome::Conflict(ConflictKind::ReplicaDown);
                }
                self.fail_over(now, true);
                Outcome::Changed
            }
            Op::EnableWrites => match self.mode {
                Mode::Primary => Outcome::Conflict(ConflictKind::NotFailedOver),
                Mode::FailoverReadWrite => Outcome::NoOp,
                Mode::FailoverReadOnly => {
                    self.enable_writes();
                    Outcome::Changed
                }
            },
            Op::Failback { force } => {
                if self.mode == Mode::Primary {
                    Outcome::NoOp
                } else if self.latch && !force {
                    Outcome::Conflict(ConflictKind::ReplicaWrites)
                } else if self.primary_down() && !force {
                    Outcome::Conflict(ConflictKind::PrimaryDown)
                } else {
                    self.fail_back();
                    Outcome::Changed
                }
            }
            _ => unreachable!("not an operator command: {op:?}"),
        }
    }
}

/// What the machine looked like before a step.
#[derive(Debug, Clone)]
struct Before {
    mode: Mode,
    latch: bool,
    hold: bool,
}

/// The machine's owner, as the driver is: it settles after every event,
/// persists what changed (when the disk lets it), and forwards a write only
/// once the latch is on disk. The model rides along.
struct Owner {
    m: Machine,
    now: SystemTime,
    settings: Settings,
    disk: State,
    disk_ok: bool,
    model: Model,
    /// The model as of `disk`.
    model_disk: Model,
    /// Per failover start time: the deadlines given then (a clock stepping
    /// back may start two failovers at one instant).
    deadlines: HashMap<SystemTime, Vec<Option<SystemTime>>>,
}

impl Owner {
    fn new(settings: Settings) -> Owner {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let m = Machine::new(settings, now);
        let model = Model::new(settings);
        Owner {
            disk: m.state().clone(),
            m,
            now,
            settings,
            disk_ok: true,
            model_disk: model.clone(),
            model,
            deadlines: HashMap::new(),
        }
    }

    fn before(&self) -> Before {
        let s = self.m.state();
        Before {
            mode: s.mode,
            latch: s.replica_writes_latch,
            hold: s.operator_hold,
        }
    }

    fn save(&mut self) -> bool {
        if self.disk_ok {
            self.disk = self.m.state().clone();
            self.m.mark_persisted(&self.disk);
            self.model_disk = self.model.clone();
        }
        self.disk_ok
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.before();
        let mut seen = Vec::new();
        let mut expected = Vec::new();
        let mut command = None;
        match op {
            Op::Probe(side, health) => {
                let t = match side {
                    Side::Primary => {
                        self.model.primary = *health;
                        self.model.observe(self.now);
                        self.m.observe_primary(*health, self.now)
                    }
                    Side::Replica => {
                        self.model.replica = *health;
                        self.m.observe_replica(*health, self.now)
                    }
                };
                seen.extend(t);
            }
            Op::Passive(down) => {
                self.model.passive = *down;
                self.model.observe(self.now);
                seen.extend(self.m.observe_primary_passive(*down, self.now));
            }
            Op::Failover { .. } | Op::EnableWrites | Op::Failback { .. } => {
                let r = self.m.command(to_command(op), self.now);
                let want = self.model.command(op, self.now);
                prop_assert_eq!(outcome(&r), want, "outcome of {:?}", op);
                if let Ok(CommandOutcome::Changed(t)) = &r {
                    let to = self.model.mode;
                    expected.push((before.mode, to, Trigger::Operator));
                    seen.push(t.clone());
                }
                command = Some(r);
            }
            Op::Write => self.write(&before)?,
            Op::Advance(ms) => self.now += Duration::from_millis(*ms),
            Op::ClockBack(ms) => self.now -= Duration::from_millis(*ms),
            Op::Disk(ok) => self.disk_ok = *ok,
            Op::Restart => {
                self.m = Machine::restore(self.settings, self.disk.clone());
                self.model = Model::restarted(&self.model_disk, self.settings);
            }
            Op::Reload(settings) => {
                self.settings = *settings;
                self.m.set_settings(*settings);
                self.model.settings = *settings;
            }
        }
        seen.extend(self.settle()?);
        expected.extend(self.model.settle(self.now));
        if self.disk != *self.m.state() {
            self.save();
        }
        self.check(op, &before, &seen, &expected, command.as_ref())
    }

    /// Ticks until nothing more is due, as the driver does.
    fn settle(&mut self) -> Result<Vec<Transition>, TestCaseError> {
        let mut done = Vec::new();
        for _ in 0..4 {
            match self.m.tick(self.now) {
                Some(t) => done.push(t),
                None => return Ok(done),
            }
        }
        Err(TestCaseError::fail(format!(
            "still transitioning after 4 ticks: {done:?}"
        )))
    }

    /// A write bound for the replica: refused, or forwarded once the latch
    /// is on disk.
    fn write(&mut self, before: &Before) -> Result<(), TestCaseError> {
        match self.m.begin_replica_write(self.now) {
            Err(Refused { mode }) => {
                prop_assert_eq!(mode, before.mode);
                prop_assert!(mode != Mode::FailoverReadWrite, "refused in read-write");
                prop_assert!(self.model.mode != Mode::FailoverReadWrite);
                prop_assert_eq!(self.m.latch(), before.latch, "a refusal moved the latch");
            }
            Ok(change) => {
                prop_assert_eq!(before.mode, Mode::FailoverReadWrite, "write let through");
                prop_assert_eq!(self.model.mode, Mode::FailoverReadWrite);
                prop_assert!(self.m.latch(), "a write let through without the latch");
                self.model.latch = true;
                let forwarded = match change {
                    LatchChange::AlreadyPersisted => true,
                    LatchChange::MustPersist => self.save(),
                };
                if forwarded {
                    prop_assert!(
                        self.disk.replica_writes_latch,
                        "a write forwarded with no latch on disk ({:?})",
                        change
                    );
                    self.model.written = true;
                    self.model_disk.written = true;
                    self.model_disk.latch = true;
                }
            }
        }
        Ok(())
    }

    fn check(
        &mut self,
        op: &Op,
        before: &Before,
        seen: &[Transition],
        expected: &[(Mode, Mode, Trigger)],
        command: Option<&Result<CommandOutcome, Conflict>>,
    ) -> Result<(), TestCaseError> {
        let got: Vec<_> = seen.iter().map(|t| (t.from, t.to, t.trigger)).collect();
        prop_assert_eq!(&got, expected, "transitions after {:?}", op);
        for t in seen {
            prop_assert_eq!(t.at, self.now, "transition time");
        }
        self.check_model()?;
        self.check_latch(op, before, seen, command)?;
        self.check_failback(op, before, seen)?;
        self.check_deadline(seen)?;
        self.check_wakeup()
    }

    fn check_model(&self) -> Result<(), TestCaseError> {
        let (m, s, model) = (&self.m, self.m.state(), &self.model);
        prop_assert_eq!(m.mode(), model.mode, "mode");
        prop_assert_eq!(s.failed_over_at, model.failed_over_at, "failed_over_at");
        prop_assert_eq!(s.read_only_deadline, model.deadline, "deadline");
        prop_assert_eq!(m.latch(), model.latch, "latch");
        prop_assert_eq!(m.operator_hold(), model.hold, "operator hold");
        prop_assert_eq!(m.primary_healthy_since(), model.healthy_since);
        prop_assert_eq!(
            m.clone().begin_replica_write(self.now).is_ok(),
            m.mode() == Mode::FailoverReadWrite,
            "writes let through exactly in failover_read_write"
        );
        Ok(())
    }

    fn check_latch(
        &self,
        op: &Op,
        before: &Before,
        seen: &[Transition],
        command: Option<&Result<CommandOutcome, Conflict>>,
    ) -> Result<(), TestCaseError> {
        prop_assert!(
            !self.model.written || self.m.latch(),
            "a write reached the replica and the latch is clear"
        );
        if before.latch && !self.m.latch() {
            let forced = matches!(op, Op::Failback { force: true })
                && matches!(command, Some(Ok(CommandOutcome::Changed(t))) if t.latch_cleared);
            let dropped_unused = matches!(op, Op::Restart) && !self.model_disk.written;
            prop_assert!(
                forced || dropped_unused,
                "latch cleared by {:?} ({:?})",
                op,
                seen
            );
        }
        for t in seen {
            let by_operator = t.trigger == Trigger::Operator && t.to == Mode::Primary;
            prop_assert_eq!(
                t.latch_cleared,
                by_operator && before.latch,
                "latch_cleared on {:?}",
                t
            );
        }
        Ok(())
    }

    fn check_failback(
        &self,
        op: &Op,
        before: &Before,
        seen: &[Transition],
    ) -> Result<(), TestCaseError> {
        let latched = before.latch || self.m.latch();
        for t in seen.iter().filter(|t| t.to == Mode::Primary) {
            match t.trigger {
                Trigger::Operator => {
                    prop_assert!(matches!(op, Op::Failback { .. }), "{:?} by {:?}", t, op)
                }
                Trigger::Failback => {
                    prop_assert!(!latched, "automatic failback over the latch: {:?}", t);
                    prop_assert!(!before.hold, "automatic failback over a hold: {:?}", t);
                    prop_assert!(self.settings.auto_failback, "failback = manual: {:?}", t);
                }
                other => prop_assert!(false, "{:?} failed back: {:?}", other, t),
            }
        }
        // An operator's hold: the only automatic transition is the window.
        if before.hold && !matches!(op, Op::Failback { .. }) {
            for t in seen.iter().filter(|t| t.trigger != Trigger::Operator) {
                prop_assert_eq!(t.trigger, Trigger::ReadOnlyWindow, "while held");
            }
            let dropped = matches!(op, Op::Restart) && !self.model_disk.hold;
            prop_assert!(self.m.operator_hold() || dropped, "hold lost by {:?}", op);
        }
        Ok(())
    }

    /// The deadline is given when a failover starts and is the one the
    /// window then in force gives; it never changes for that failover.
    fn check_deadline(&mut self, seen: &[Transition]) -> Result<(), TestCaseError> {
        for t in seen {
            if t.from == Mode::Primary {
                let given = self
                    .settings
                    .read_only_window
                    .and_then(|w| t.at.checked_add(w));
                self.deadlines.entry(t.at).or_default().push(given);
            }
        }
        let s = self.m.state();
        match (s.mode, s.failed_over_at) {
            (Mode::FailoverReadOnly, Some(at)) => {
                let given = self.deadlines.get(&at).map(Vec::as_slice).unwrap_or(&[]);
                prop_assert!(
                    given.contains(&s.read_only_deadline),
                    "deadline {:?}, given {:?} at failover",
                    s.read_only_deadline,
                    given
                );
            }
            (mode, at) => {
                prop_assert_eq!(s.read_only_deadline, None, "a deadline in {:?}", mode);
                prop_assert_eq!(
                    at.is_some(),
                    mode.is_failover(),
                    "failed_over_at in {:?}",
                    mode
                );
            }
        }
        Ok(())
    }

    fn check_wakeup(&self) -> Result<(), TestCaseError> {
        match self.m.next_wakeup() {
            Some(at) => {
                prop_assert!(at > self.now, "wakeup {:?} not after now", at);
                prop_assert!(self.m.clone().tick(at - MS).is_none(), "acts before wakeup");
                prop_assert!(self.m.clone().tick(at).is_some(), "idle at wakeup");
            }
            None => {
                let later = self.now + 10_000 * HOUR;
                prop_assert!(self.m.clone().tick(later).is_none(), "acts with no wakeup");
            }
        }
        Ok(())
    }
}

fn to_command(op: &Op) -> Command {
    let reason = "prop".to_owned();
    match *op {
        Op::Failover { force } => Command::Failover { force, reason },
        Op::EnableWrites => Command::EnableWrites {
            force: false,
            reason,
        },
        Op::Failback { force } => Command::Failback { force, reason },
        _ => unreachable!("not an operator command: {op:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_machine_follows_the_model_and_keeps_the_safety_rules(
        settings in settings(),
        ops in prop::collection::vec(op(), 1..=60),
    ) {
        let mut owner = Owner::new(settings);
        for (i, op) in ops.iter().enumerate() {
            owner.step(op).map_err(|e| TestCaseError::fail(format!("step {i} ({op:?}): {e}")))?;
        }
    }
}
