use super::*;
use std::time::UNIX_EPOCH;

const HOUR: u64 = 3600;

/// A wall-clock instant `secs` after a fixed origin.
fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn settings() -> Settings {
    Settings::default()
}

/// Both regions probed healthy at t(0).
fn healthy(settings: Settings) -> Machine {
    let mut m = Machine::new(settings, t(0));
    assert_eq!(m.observe_primary(Health::Healthy, t(0)), None);
    assert_eq!(m.observe_replica(Health::Healthy, t(0)), None);
    m
}

/// Failed over automatically at t(10) by the health checks.
fn failed_over(settings: Settings) -> Machine {
    let mut m = healthy(settings);
    let tr = m
        .observe_primary(Health::Unhealthy, t(10))
        .expect("fails over");
    assert_eq!(tr.to, Mode::FailoverReadOnly);
    m
}

/// In `failover_read_write` with the latch set and persisted.
fn latched(settings: Settings) -> Machine {
    let mut m = failed_over(settings);
    ok_changed(m.command(enable_writes(), t(20)));
    assert_eq!(m.begin_replica_write(t(30)), Ok(LatchChange::MustPersist));
    let on_disk = m.state().clone();
    m.mark_persisted(&on_disk);
    m
}

fn failover(force: bool) -> Command {
    Command::Failover {
        force,
        reason: "drill".into(),
    }
}

fn enable_writes() -> Command {
    Command::EnableWrites {
        force: false,
        reason: "primary lost for good".into(),
    }
}

fn failback(force: bool) -> Command {
    Command::Failback {
        force,
        reason: "primary back".into(),
    }
}

fn ok_changed(r: Result<CommandOutcome, Conflict>) -> Transition {
    match r {
        Ok(CommandOutcome::Changed(tr)) => tr,
        other => panic!("expected a transition, got {other:?}"),
    }
}

fn conflict(r: Result<CommandOutcome, Conflict>) -> Conflict {
    match r {
        Err(c) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

// ---- names ----

#[test]
fn names_are_the_contract() {
    assert_eq!(Mode::Primary.as_str(), "primary");
    assert_eq!(Mode::FailoverReadOnly.as_str(), "failover_read_only");
    assert_eq!(Mode::FailoverReadWrite.to_string(), "failover_read_write");
    for mode in [
        Mode::Primary,
        Mode::FailoverReadOnly,
        Mode::FailoverReadWrite,
    ] {
        let json = serde_json::to_string(&mode).unwrap();
        assert_eq!(json, format!("\"{}\"", mode.as_str()));
        assert_eq!(serde_json::from_str::<Mode>(&json).unwrap(), mode);
    }
    let triggers = [
        (Trigger::HealthCheck, "health_check"),
        (Trigger::Passive, "passive"),
        (Trigger::ReadOnlyWindow, "read_only_window"),
        (Trigger::Operator, "operator"),
        (Trigger::Failback, "failback"),
    ];
    for (trigger, name) in triggers {
        assert_eq!(trigger.as_str(), name);
        assert_eq!(
            serde_json::to_string(&trigger).unwrap(),
            format!("\"{name}\"")
        );
    }
    assert_eq!(FailbackBlocked::ReplicaWrites.as_str(), "replica_writes");
    assert_eq!(FailbackBlocked::OperatorHold.as_str(), "operator_hold");
    assert_eq!(FailbackBlocked::Manual.as_str(), "manual");
    assert_eq!(ConflictKind::NotFailedOver.as_str(), "not_failed_over");
}

// ---- start ----

#[test]
fn a_fresh_machine_serves_the_primary() {
    let m = Machine::new(settings(), t(0));
    assert_eq!(m.mode(), Mode::Primary);
    assert_eq!(m.since(), t(0));
    assert_eq!(m.primary_health(), Health::Unknown);
    assert_eq!(m.replica_health(), Health::Unknown);
    assert!(!m.primary_down(), "an unknown primary is not down");
    assert!(!m.latch());
    assert_eq!(m.deadline(), None);
    assert_eq!(m.failback_blocked(), None);
    assert_eq!(m.next_wakeup(), None);
    assert_eq!(m.transitions().count(), 0);
}

#[test]
fn an_unknown_primary_is_not_failed_over() {
    let mut m = Machine::new(settings(), t(0));
    assert_eq!(m.observe_replica(Health::Healthy, t(1)), None);
    assert_eq!(m.tick(t(10 * HOUR)), None);
    assert_eq!(m.mode(), Mode::Primary);
}

// ---- automatic failover ----

#[test]
fn probes_fail_the_primary_over_to_a_healthy_replica() {
    let mut m = healthy(settings());
    let tr = m
        .observe_primary(Health::Unhealthy, t(10))
        .expect("fails over");
    assert_eq!(
        (tr.from, tr.to, tr.trigger, tr.at, tr.latch_cleared),
        (
            Mode::Primary,
            Mode::FailoverReadOnly,
            Trigger::HealthCheck,
            t(10),
            false
        )
    );
    assert!(tr.reason.contains("health checks"), "{}", tr.reason);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
    assert_eq!(m.since(), t(10));
    assert_eq!(m.state().failed_over_at, Some(t(10)));
    assert_eq!(m.deadline(), Some(t(10 + 6 * HOUR)));
    assert!(!m.operator_hold());
    assert_eq!(m.transitions().cloned().collect::<Vec<_>>(), vec![tr]);
}

#[test]
fn passive_detection_fails_the_primary_over() {
    let mut m = healthy(settings());
    let tr = m.observe_primary_passive(true, t(5)).expect("fails over");
    assert_eq!(tr.trigger, Trigger::Passive);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
}

#[test]
fn an_unknown_replica_is_no_failover_target() {
    let mut m = Machine::new(settings(), t(0));
    m.observe_primary(Health::Healthy, t(0));
    assert_eq!(m.observe_primary(Health::Unhealthy, t(5)), None);
    assert_eq!(m.observe_primary_passive(true, t(6)), None);
    assert_eq!(m.tick(t(HOUR)), None);
    assert_eq!(m.mode(), Mode::Primary);
    // The first healthy verdict on the replica makes it a target.
    let tr = m
        .observe_replica(Health::Healthy, t(HOUR + 1))
        .expect("fails over");
    assert_eq!(tr.at, t(HOUR + 1));
    assert_eq!(tr.trigger, Trigger::HealthCheck);
}

#[test]
fn with_both_regions_down_the_machine_stays() {
    let mut m = healthy(settings());
    m.observe_replica(Health::Unhealthy, t(5));
    assert_eq!(m.observe_primary(Health::Unhealthy, t(10)), None);
    assert_eq!(m.observe_primary_passive(true, t(11)), None);
    assert_eq!(m.tick(t(24 * HOUR)), None);
    assert_eq!(m.mode(), Mode::Primary);
    // The replica recovering first: now failing over is safe.
    let tr = m.observe_replica(Health::Healthy, t(25 * HOUR)).unwrap();
    assert_eq!(tr.to, Mode::FailoverReadOnly);
}

#[test]
fn a_replica_failing_after_failover_changes_nothing() {
    let mut m = failed_over(settings());
    assert_eq!(m.observe_replica(Health::Unhealthy, t(20)), None);
    assert_eq!(m.tick(t(HOUR)), None);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
}

#[test]
fn manual_mode_never_fails_over_on_its_own() {
    let mut m = healthy(Settings {
        auto_failover: false,
        ..settings()
    });
    assert_eq!(m.observe_primary(Health::Unhealthy, t(10)), None);
    assert_eq!(m.observe_primary_passive(true, t(11)), None);
    assert_eq!(m.tick(t(HOUR)), None);
    assert_eq!(m.mode(), Mode::Primary);
    // The admin API still can.
    let tr = ok_changed(m.command(failover(false), t(HOUR)));
    assert_eq!(tr.trigger, Trigger::Operator);
}

// ---- read-only window ----

#[test]
fn the_read_only_window_enables_writes() {
    let mut m = failed_over(settings());
    let deadline = t(10 + 6 * HOUR);
    assert_eq!(m.next_wakeup(), Some(deadline));
    assert_eq!(m.tick(t(10 + 6 * HOUR - 1)), None);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
    let tr = m.tick(deadline).expect("writes enabled");
    assert_eq!(
        (tr.from, tr.to, tr.trigger, tr.at),
        (
            Mode::FailoverReadOnly,
            Mode::FailoverReadWrite,
            Trigger::ReadOnlyWindow,
            deadline
        )
    );
    assert_eq!(m.deadline(), None, "no deadline once writes are enabled");
    assert_eq!(m.state().failed_over_at, Some(t(10)));
    assert_eq!(m.tick(t(100 * HOUR)), None);
}

#[test]
fn a_window_of_never_waits_for_an_operator() {
    let mut m = failed_over(Settings {
        read_only_window: None,
        ..settings()
    });
    assert_eq!(m.deadline(), None);
    assert_eq!(m.next_wakeup(), None);
    assert_eq!(m.tick(t(1000 * 24 * HOUR)), None);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
    let tr = ok_changed(m.command(enable_writes(), t(1000 * 24 * HOUR)));
    assert_eq!(
        (tr.to, tr.trigger),
        (Mode::FailoverReadWrite, Trigger::Operator)
    );
    assert_eq!(tr.reason, "primary lost for good");
}

#[test]
fn a_zero_window_enables_writes_at_the_next_tick() {
    let mut m = healthy(Settings {
        read_only_window: Some(Duration::ZERO),
        ..settings()
    });
    m.observe_primary(Health::Unhealthy, t(10)).unwrap();
    assert_eq!(m.mode(), Mode::FailoverReadOnly, "one transition per call");
    let tr = m.tick(t(10)).expect("writes enabled");
    assert_eq!(tr.to, Mode::FailoverReadWrite);
    assert_eq!(m.tick(t(10)), None);
}

#[test]
fn the_window_applies_to_operator_failovers() {
    let mut m = healthy(settings());
    ok_changed(m.command(failover(false), t(100)));
    assert_eq!(m.deadline(), Some(t(100 + 6 * HOUR)));
    let tr = m.tick(t(100 + 6 * HOUR)).expect("writes enabled");
    assert_eq!(tr.trigger, Trigger::ReadOnlyWindow);
}

#[test]
fn an_operator_enabling_writes_cancels_the_deadline() {
    let mut m = failed_over(settings());
    ok_changed(m.command(enable_writes(), t(20)));
    assert_eq!(m.deadline(), None);
    assert_eq!(m.tick(t(10 + 6 * HOUR)), None);
    assert_eq!(m.transitions().count(), 2);
}

#[test]
fn a_window_too_large_for_the_clock_never_ends() {
    let m = failed_over(Settings {
        read_only_window: Some(Duration::MAX),
        ..settings()
    });
    assert_eq!(m.deadline(), None);
}

#[test]
fn new_settings_keep_a_deadline_already_set() {
    let mut m = failed_over(settings());
    m.set_settings(Settings {
        read_only_window: Some(Duration::from_secs(60)),
        ..settings()
    });
    assert_eq!(m.tick(t(10 + 60)), None);
    assert_eq!(m.deadline(), Some(t(10 + 6 * HOUR)));
}

// ---- automatic failback ----

#[test]
fn failback_waits_for_a_continuously_healthy_primary() {
    let mut m = failed_over(settings());
    assert_eq!(m.observe_primary(Health::Healthy, t(100)), None);
    assert_eq!(m.primary_healthy_since(), Some(t(100)));
    assert_eq!(m.next_wakeup(), Some(t(400)));
    assert_eq!(m.tick(t(399)), None);
    let tr = m.tick(t(400)).expect("fails back");
    assert_eq!(
        (tr.from, tr.to, tr.trigger),
        (Mode::FailoverReadOnly, Mode::Primary, Trigger::Failback)
    );
    assert_eq!(m.mode(), Mode::Primary);
    assert_eq!(m.deadline(), None);
    assert_eq!(m.state().failed_over_at, None);
    assert!(!m.latch());
    assert_eq!(m.failback_blocked(), None);
}

#[test]
fn failback_also_leaves_read_write_when_nothing_was_written() {
    let mut m = failed_over(settings());
    ok_changed(m.command(enable_writes(), t(20)));
    m.observe_primary(Health::Healthy, t(100));
    let tr = m.tick(t(400)).expect("fails back");
    assert_eq!(tr.from, Mode::FailoverReadWrite);
    assert!(!m.latch());
}

#[test]
fn any_unhealthy_verdict_restarts_the_hysteresis() {
    let mut m = failed_over(settings());
    m.observe_primary(Health::Healthy, t(100));
    m.observe_primary(Health::Unhealthy, t(350));
    assert_eq!(m.primary_healthy_since(), None);
    m.observe_primary(Health::Healthy, t(360));
    assert_eq!(m.tick(t(400)), None);
    assert_eq!(m.tick(t(659)), None);
    assert_eq!(m.tick(t(660)).map(|tr| tr.to), Some(Mode::Primary));
}

#[test]
fn an_unknown_verdict_restarts_the_hysteresis_too() {
    let mut m = failed_over(settings());
    m.observe_primary(Health::Healthy, t(100));
    m.observe_primary(Health::Unknown, t(200));
    m.observe_primary(Health::Healthy, t(210));
    assert_eq!(m.tick(t(400)), None);
    assert!(m.tick(t(510)).is_some());
}

#[test]
fn repeated_healthy_verdicts_do_not_restart_the_hysteresis() {
    let mut m = failed_over(settings());
    for s in (100..400).step_by(2) {
        assert_eq!(m.observe_primary(Health::Healthy, t(s)), None);
    }
    assert!(m.observe_primary(Health::Healthy, t(400)).is_some());
}

#[test]
fn failing_live_traffic_restarts_the_hysteresis() {
    let mut m = failed_over(settings());
    m.observe_primary(Health::Healthy, t(100));
    m.observe_primary_passive(true, t(200));
    assert_eq!(m.primary_healthy_since(), None);
    assert_eq!(m.tick(t(400)), None);
    m.observe_primary_passive(false, t(250));
    assert_eq!(m.primary_healthy_since(), Some(t(250)));
    assert_eq!(m.tick(t(549)), None);
    assert!(m.tick(t(550)).is_some());
}

#[test]
fn a_zero_failback_after_still_needs_a_healthy_verdict() {
    let mut m = failed_over(Settings {
        failback_after: Duration::ZERO,
        ..settings()
    });
    assert_eq!(m.tick(t(11)), None, "still unhealthy");
    m.observe_primary(Health::Unknown, t(12));
    assert_eq!(m.tick(t(HOUR)), None, "unknown is not healthy");
    let tr = m.observe_primary(Health::Healthy, t(HOUR + 1));
    assert_eq!(tr.map(|tr| tr.trigger), Some(Trigger::Failback));
}

#[test]
fn a_due_failback_wins_over_a_due_deadline() {
    let mut m = failed_over(Settings {
        read_only_window: Some(Duration::from_secs(600)),
        ..settings()
    });
    m.observe_primary(Health::Healthy, t(200));
    // Both are due at t(610): fail back instead of enabling writes.
    let tr = m.tick(t(610)).unwrap();
    assert_eq!(tr.to, Mode::Primary);
    assert_eq!(m.tick(t(611)), None);
}

#[test]
fn failback_manual_never_fails_back_on_its_own() {
    let mut m = failed_over(Settings {
        auto_failback: false,
        ..settings()
    });
    m.observe_primary(Health::Healthy, t(100));
    assert_eq!(m.failback_blocked(), Some(FailbackBlocked::Manual));
    assert_eq!(
        m.tick(t(100 * HOUR)).map(|tr| tr.to),
        Some(Mode::FailoverReadWrite)
    );
    assert_eq!(m.tick(t(200 * HOUR)), None);
    assert_eq!(m.mode(), Mode::FailoverReadWrite);
    let tr = ok_changed(m.command(failback(false), t(200 * HOUR)));
    assert_eq!((tr.to, tr.trigger), (Mode::Primary, Trigger::Operator));
}

#[test]
fn a_clock_stepping_back_delays_failback() {
    let mut m = failed_over(settings());
    m.observe_primary(Health::Healthy, t(1000));
    assert_eq!(m.tick(t(500)), None);
    assert_eq!(m.tick(t(1299)), None);
    assert!(m.tick(t(1300)).is_some());
}

// ---- flapping ----

#[test]
fn a_flapping_primary_fails_over_once_and_never_back() {
    let mut m = healthy(settings());
    let mut transitions = Vec::new();
    // 60 s of the primary toggling every second (thresholds are the caller's).
    for s in 1..=60 {
        let health = if s % 2 == 1 {
            Health::Unhealthy
        } else {
            Health::Healthy
        };
        transitions.extend(m.observe_primary(health, t(s)));
        transitions.extend(m.tick(t(s)));
    }
    assert_eq!(transitions.len(), 1, "{transitions:?}");
    assert_eq!(transitions[0].to, Mode::FailoverReadOnly);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
    // Healthy from t(60) on: failback exactly failback_after later, not before.
    assert_eq!(m.primary_healthy_since(), Some(t(60)));
    assert_eq!(m.tick(t(359)), None);
    assert_eq!(m.tick(t(360)).map(|tr| tr.to), Some(Mode::Primary));
}

#[test]
fn flapping_passive_detection_fails_over_once() {
    let mut m = healthy(settings());
    let mut count = 0;
    for s in 1..=60 {
        count += usize::from(m.observe_primary_passive(s % 2 == 1, t(s)).is_some());
        count += usize::from(m.tick(t(s)).is_some());
    }
    assert_eq!(count, 1);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
}

// ---- the replica-writes latch ----

#[test]
fn replica_writes_are_refused_outside_read_write() {
    let mut m = healthy(settings());
    assert_eq!(
        m.begin_replica_write(t(1)),
        Err(Refused {
            mode: Mode::Primary
        })
    );
    m.observe_primary(Health::Unhealthy, t(10));
    assert_eq!(
        m.begin_replica_write(t(11)),
        Err(Refused {
            mode: Mode::FailoverReadOnly
        })
    );
    assert!(!m.latch());
}

#[test]
fn the_latch_must_be_persisted_before_writes_flow() {
    let mut m = failed_over(settings());
    ok_changed(m.command(enable_writes(), t(20)));
    assert_eq!(m.begin_replica_write(t(30)), Ok(LatchChange::MustPersist));
    assert!(m.latch());
    assert!(m.state().replica_writes_latch);
    assert_eq!(m.state().latch_set_at, Some(t(30)));
    // Persisting failed or is pending: the next write must persist too.
    assert_eq!(m.begin_replica_write(t(31)), Ok(LatchChange::MustPersist));
    assert_eq!(
        m.state().latch_set_at,
        Some(t(30)),
        "first write's time kept"
    );
    let on_disk = m.state().clone();
    m.mark_persisted(&on_disk);
    assert_eq!(
        m.begin_replica_write(t(32)),
        Ok(LatchChange::AlreadyPersisted)
    );
}

#[test]
fn a_copy_taken_before_the_latch_does_not_count_as_persisted() {
    let mut m = failed_over(settings());
    ok_changed(m.command(enable_writes(), t(20)));
    let stale = m.state().clone();
    assert_eq!(m.begin_replica_write(t(30)), Ok(LatchChange::MustPersist));
    m.mark_persisted(&stale);
    assert_eq!(m.begin_replica_write(t(31)), Ok(LatchChange::MustPersist));
}

#[test]
fn the_latch_blocks_automatic_failback() {
    let mut m = latched(settings());
    m.observe_primary(Health::Healthy, t(100));
    assert_eq!(m.failback_blocked(), Some(FailbackBlocked::ReplicaWrites));
    assert_eq!(m.next_wakeup(), None);
    assert_eq!(m.tick(t(1000 * HOUR)), None);
    assert_eq!(m.mode(), Mode::FailoverReadWrite);
}

#[test]
fn failback_over_the_latch_needs_force_and_clears_it() {
    let mut m = latched(settings());
    m.observe_primary(Health::Healthy, t(100));
    let c = conflict(m.command(failback(false), t(200)));
    assert_eq!(c.kind, ConflictKind::ReplicaWrites);
    assert_eq!(c.current, Mode::FailoverReadWrite);
    assert!(c.to_string().contains("failover_read_write"), "{c}");
    assert!(m.latch(), "a refused failback keeps the latch");
    assert_eq!(m.mode(), Mode::FailoverReadWrite);

    let tr = ok_changed(m.command(failback(true), t(300)));
    assert_eq!((tr.to, tr.trigger), (Mode::Primary, Trigger::Operator));
    assert!(tr.latch_cleared);
    assert!(tr.reason.starts_with("primary back"), "{}", tr.reason);
    assert!(tr.reason.contains("latch cleared"), "{}", tr.reason);
    assert!(!m.latch());
    assert_eq!(m.state().latch_set_at, None);
    // The reason survives in the persisted history.
    let last = m.state().transitions.back().unwrap();
    assert!(last.latch_cleared);
}

#[test]
fn after_failback_the_latch_stays_clear_on_the_next_failover() {
    let mut m = latched(settings());
    m.observe_primary(Health::Healthy, t(100));
    ok_changed(m.command(failback(true), t(200)));
    m.observe_primary(Health::Unhealthy, t(300)).unwrap();
    assert!(!m.latch());
    m.observe_primary(Health::Healthy, t(400));
    assert_eq!(m.tick(t(700)).map(|tr| tr.trigger), Some(Trigger::Failback));
}

// ---- operator hold ----

#[test]
fn an_operator_failover_holds_until_an_operator_fails_back() {
    let mut m = healthy(settings());
    let tr = ok_changed(m.command(failover(false), t(100)));
    assert_eq!(
        (tr.from, tr.to, tr.trigger),
        (Mode::Primary, Mode::FailoverReadOnly, Trigger::Operator)
    );
    assert_eq!(tr.reason, "drill");
    assert!(m.operator_hold());
    assert_eq!(m.failback_blocked(), Some(FailbackBlocked::OperatorHold));
    // A perfectly healthy primary does not end the drill.
    assert_eq!(m.tick(t(HOUR)), None);
    assert_eq!(m.observe_primary(Health::Healthy, t(2 * HOUR)), None);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);

    let tr = ok_changed(m.command(failback(false), t(3 * HOUR)));
    assert_eq!((tr.to, tr.trigger), (Mode::Primary, Trigger::Operator));
    assert!(!m.operator_hold());
    // Automatic behaviour resumes.
    m.observe_primary(Health::Unhealthy, t(4 * HOUR)).unwrap();
    assert!(!m.operator_hold());
    m.observe_primary(Health::Healthy, t(4 * HOUR + 10));
    assert!(m.tick(t(4 * HOUR + 310)).is_some());
}

#[test]
fn an_operator_failover_during_an_automatic_one_sets_the_hold() {
    let mut m = failed_over(settings());
    assert_eq!(
        m.command(failover(false), t(20)),
        Ok(CommandOutcome::HoldSet)
    );
    assert!(m.operator_hold());
    assert_eq!(m.command(failover(false), t(21)), Ok(CommandOutcome::NoOp));
    assert_eq!(m.transitions().count(), 1, "no transition recorded");
    m.observe_primary(Health::Healthy, t(100));
    assert_eq!(m.tick(t(HOUR)), None);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
}

#[test]
fn the_latch_outranks_the_hold_as_the_blocking_reason() {
    let mut m = healthy(settings());
    ok_changed(m.command(failover(false), t(10)));
    ok_changed(m.command(enable_writes(), t(20)));
    m.begin_replica_write(t(30)).unwrap();
    assert_eq!(m.failback_blocked(), Some(FailbackBlocked::ReplicaWrites));
}

// ---- operator conflicts and no-ops ----

#[test]
fn enable_writes_in_primary_is_a_conflict_naming_the_mode() {
    let mut m = healthy(settings());
    let c = conflict(m.command(enable_writes(), t(1)));
    assert_eq!(c.current, Mode::Primary);
    assert_eq!(c.kind, ConflictKind::NotFailedOver);
    assert!(c.message.contains("primary"), "{}", c.message);
    assert_eq!(m.transitions().count(), 0);
}

#[test]
fn failover_to_a_down_replica_needs_force() {
    let mut m = healthy(settings());
    m.observe_replica(Health::Unhealthy, t(1));
    let c = conflict(m.command(failover(false), t(2)));
    assert_eq!(
        (c.current, c.kind),
        (Mode::Primary, ConflictKind::ReplicaDown)
    );
    assert_eq!(m.mode(), Mode::Primary);
    let tr = ok_changed(m.command(failover(true), t(3)));
    assert_eq!(tr.to, Mode::FailoverReadOnly);
    assert!(tr.reason.contains("forced"), "{}", tr.reason);
}

#[test]
fn an_operator_may_fail_over_to_an_unprobed_replica() {
    let mut m = Machine::new(settings(), t(0));
    let tr = ok_changed(m.command(failover(false), t(1)));
    assert_eq!(tr.to, Mode::FailoverReadOnly);
}

#[test]
fn failback_to_a_down_primary_needs_force() {
    let mut m = failed_over(settings());
    let c = conflict(m.command(failback(false), t(20)));
    assert_eq!(
        (c.current, c.kind),
        (Mode::FailoverReadOnly, ConflictKind::PrimaryDown)
    );
    let tr = ok_changed(m.command(failback(true), t(21)));
    assert_eq!(tr.to, Mode::Primary);
    assert!(!tr.latch_cleared);
    assert!(tr.reason.contains("primary judged down"), "{}", tr.reason);
}

#[test]
fn repeating_the_current_mode_is_a_no_op() {
    let mut m = healthy(settings());
    assert_eq!(m.command(failback(false), t(1)), Ok(CommandOutcome::NoOp));
    assert_eq!(m.command(failback(true), t(1)), Ok(CommandOutcome::NoOp));
    ok_changed(m.command(failover(false), t(2)));
    assert_eq!(m.command(failover(true), t(3)), Ok(CommandOutcome::NoOp));
    ok_changed(m.command(enable_writes(), t(4)));
    assert_eq!(m.command(enable_writes(), t(5)), Ok(CommandOutcome::NoOp));
    assert_eq!(m.transitions().count(), 2);
    assert_eq!(m.since(), t(4));
}

#[test]
fn operator_reasons_are_defaulted_trimmed_and_capped() {
    let mut m = healthy(settings());
    let tr = ok_changed(m.command(
        Command::Failover {
            force: false,
            reason: "   ".into(),
        },
        t(1),
    ));
    assert_eq!(tr.reason, "operator failover");
    let long = "é".repeat(MAX_REASON_BYTES);
    let tr = ok_changed(m.command(
        Command::Failback {
            force: false,
            reason: format!("  {long}"),
        },
        t(2),
    ));
    assert!(tr.reason.len() <= MAX_REASON_BYTES);
    assert!(tr.reason.len() > MAX_REASON_BYTES - 2);
    assert!(tr.reason.chars().all(|c| c == 'é'));
}

// ---- history ----

#[test]
fn recent_transitions_are_bounded() {
    let mut m = healthy(settings());
    for i in 0..15 {
        ok_changed(m.command(failover(false), t(10 * i)));
        ok_changed(m.command(failback(false), t(10 * i + 5)));
    }
    assert_eq!(m.transitions().count(), MAX_TRANSITIONS);
    let last = m.transitions().last().unwrap();
    assert_eq!((last.to, last.at), (Mode::Primary, t(145)));
    let first = m.transitions().next().unwrap();
    assert_eq!(first.at, t(50), "the oldest ten were dropped");
}

// ---- persistence and restart ----

#[test]
fn a_restart_keeps_the_deadline() {
    let m = failed_over(settings());
    let json = m.state().to_json().unwrap();

    // Restarted before the deadline: it is neither reset nor recomputed.
    let mut early = Machine::restore(settings(), State::from_json(&json).unwrap());
    assert_eq!(early.mode(), Mode::FailoverReadOnly);
    assert_eq!(early.deadline(), Some(t(10 + 6 * HOUR)));
    assert_eq!(early.tick(t(5 * HOUR)), None);
    assert_eq!(
        early.tick(t(10 + 6 * HOUR)).map(|tr| tr.trigger),
        Some(Trigger::ReadOnlyWindow)
    );

    // Restarted after the deadline: writes are enabled at the first tick.
    let mut late = Machine::restore(settings(), State::from_json(&json).unwrap());
    let tr = late.tick(t(7 * HOUR)).expect("writes enabled");
    assert_eq!(tr.to, Mode::FailoverReadWrite);
    assert_eq!(late.transitions().count(), 2, "history survived");
}

#[test]
fn a_restart_keeps_the_latch_and_blocks_failback() {
    let m = latched(settings());
    let json = m.state().to_json().unwrap();
    let mut m = Machine::restore(settings(), State::from_json(&json).unwrap());
    assert_eq!(m.mode(), Mode::FailoverReadWrite);
    assert!(m.latch());
    assert_eq!(m.state().latch_set_at, Some(t(30)));
    assert_eq!(
        m.begin_replica_write(t(40)),
        Ok(LatchChange::AlreadyPersisted)
    );
    m.observe_primary(Health::Healthy, t(50));
    assert_eq!(m.tick(t(1000 * HOUR)), None);
    assert_eq!(m.failback_blocked(), Some(FailbackBlocked::ReplicaWrites));
}

#[test]
fn a_restart_keeps_the_operator_hold() {
    let mut m = healthy(settings());
    ok_changed(m.command(failover(false), t(10)));
    let mut m = Machine::restore(settings(), m.state().clone());
    m.observe_primary(Health::Healthy, t(20));
    assert_eq!(m.tick(t(HOUR)), None);
    assert_eq!(m.failback_blocked(), Some(FailbackBlocked::OperatorHold));
}

#[test]
fn after_a_restart_the_primary_must_be_seen_healthy_again() {
    let mut m = failed_over(settings());
    m.observe_primary(Health::Healthy, t(100));
    let mut m = Machine::restore(settings(), m.state().clone());
    assert_eq!(m.primary_health(), Health::Unknown);
    assert_eq!(m.tick(t(1000)), None);
    m.observe_primary(Health::Healthy, t(1000));
    assert_eq!(m.tick(t(1299)), None);
    assert!(m.tick(t(1300)).is_some());
}

#[test]
fn restore_trims_an_oversized_history() {
    let mut m = healthy(settings());
    ok_changed(m.command(failover(false), t(1)));
    let mut state = m.state().clone();
    let tr = state.transitions[0].clone();
    state.transitions = std::iter::repeat_n(tr, 50).collect();
    let m = Machine::restore(settings(), state);
    assert_eq!(m.transitions().count(), MAX_TRANSITIONS);
}

#[test]
fn state_round_trips_through_json() {
    let mut m = healthy(settings());
    ok_changed(m.command(failover(false), t(10)));
    ok_changed(m.command(enable_writes(), t(20)));
    m.begin_replica_write(t(30)).unwrap();
    let state = m.state().clone();
    let json = state.to_json().unwrap();
    assert_eq!(State::from_json(&json).unwrap(), state);

    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["version"], STATE_VERSION);
    assert_eq!(value["mode"], "failover_read_write");
    let ms = |s: u64| (1_700_000_000 + s) * 1000;
    assert_eq!(value["since_unix_ms"], ms(20));
    assert_eq!(value["failed_over_at_unix_ms"], ms(10));
    assert_eq!(value["read_only_deadline_unix_ms"], serde_json::Value::Null);
    assert_eq!(value["replica_writes_latch"], true);
    assert_eq!(value["latch_set_at_unix_ms"], ms(30));
    assert_eq!(value["operator_hold"], true);
    assert_eq!(value["transitions"][0]["trigger"], "operator");
    assert_eq!(value["transitions"][0]["at_unix_ms"], ms(10));
    assert_eq!(value["transitions"][1]["from"], "failover_read_only");
}

#[test]
fn a_deadline_round_trips_through_json() {
    let m = failed_over(settings());
    let json = m.state().to_json().unwrap();
    let state = State::from_json(&json).unwrap();
    assert_eq!(state, *m.state());
    assert_eq!(state.read_only_deadline, Some(t(10 + 6 * HOUR)));
}

#[test]
fn stored_times_have_millisecond_precision_and_round_trip_exactly() {
    let mut m = healthy(settings());
    let now = t(10) + Duration::from_nanos(123_456_789);
    let tr = m.observe_primary(Health::Unhealthy, now).unwrap();
    assert_eq!(tr.at, t(10) + Duration::from_millis(123));
    let json = m.state().to_json().unwrap();
    assert_eq!(State::from_json(&json).unwrap(), *m.state());
}

#[test]
fn state_files_from_a_newer_version_or_garbage_are_refused() {
    let mut value = serde_json::to_value(State::initial(t(0))).unwrap();
    value["version"] = serde_json::json!(STATE_VERSION + 1);
    let err = State::from_json(&value.to_string()).unwrap_err();
    assert!(
        matches!(err, StateError::UnsupportedVersion { .. }),
        "{err}"
    );
    assert!(matches!(
        State::from_json("{\"mode\": \"sideways\"}"),
        Err(StateError::Json(_))
    ));
    assert!(State::from_json("").is_err());
}

#[test]
fn unknown_fields_in_a_state_file_are_ignored() {
    let mut value = serde_json::to_value(State::initial(t(0))).unwrap();
    value["added_later"] = serde_json::json!({"x": 1});
    assert_eq!(
        State::from_json(&value.to_string()).unwrap(),
        State::initial(t(0))
    );
}

#[test]
fn a_latch_set_again_after_a_forced_failback_must_be_persisted_again() {
    let mut m = latched(settings());
    ok_changed(m.command(failback(true), t(100)));
    m.observe_primary(Health::Unhealthy, t(200)).unwrap();
    ok_changed(m.command(enable_writes(), t(210)));
    assert_eq!(m.begin_replica_write(t(220)), Ok(LatchChange::MustPersist));
    assert_eq!(m.state().latch_set_at, Some(t(220)));
}

#[test]
fn next_wakeup_tracks_what_tick_would_do() {
    let mut m = failed_over(Settings {
        read_only_window: Some(Duration::from_secs(HOUR)),
        ..settings()
    });
    assert_eq!(m.next_wakeup(), Some(t(10 + HOUR)));
    m.observe_primary(Health::Healthy, t(100));
    assert_eq!(m.next_wakeup(), Some(t(400)), "the earlier of the two");
    m.observe_primary(Health::Unhealthy, t(200));
    assert_eq!(m.next_wakeup(), Some(t(10 + HOUR)));
    let mut endless = failed_over(Settings {
        failback_after: Duration::MAX,
        read_only_window: None,
        ..settings()
    });
    endless.observe_primary(Health::Healthy, t(100));
    assert_eq!(endless.next_wakeup(), None);
    assert_eq!(endless.tick(t(1000 * HOUR)), None);
}

#[test]
fn adopt_takes_the_state_and_keeps_the_health_observations() {
    // The local machine failed over; the fleet says primary: adopting puts
    // the mode back without forgetting that the primary is down, so the next
    // evaluation proposes the failover again.
    let mut m = failed_over(settings());
    let shared = State::initial(t(0));
    m.adopt(shared.clone());
    assert_eq!(m.state(), &shared);
    assert!(m.primary_down());
    assert_eq!(m.replica_health(), Health::Healthy);
    assert_eq!(m.tick(t(11)).map(|tr| tr.to), Some(Mode::FailoverReadOnly));

    // A latch in the adopted state counts as stored: no second persist.
    let mut latched_state = latched(settings()).state().clone();
    latched_state.transitions.clear();
    let mut m = healthy(settings());
    m.adopt(latched_state);
    assert!(m.latch_persisted());
    assert_eq!(
        m.begin_replica_write(t(40)),
        Ok(LatchChange::AlreadyPersisted)
    );
}
