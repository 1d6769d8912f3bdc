//! The drill rules of the machine: preconditions, the end by itself, stop,
//! conversion into a real failover, abort.

use super::*;
use std::time::UNIX_EPOCH;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn healthy() -> Machine {
    let mut m = Machine::new(Settings::default(), t(0));
    m.observe_primary(Health::Healthy, t(0));
    m.observe_replica(Health::Healthy, t(0));
    m
}

fn drill(secs: u64) -> Command {
    Command::Drill {
        duration: Duration::from_secs(secs),
        reason: "quarterly rehearsal".into(),
        by: None,
    }
}

/// A 60 s drill started at t(10).
fn drilling() -> Machine {
    let mut m = healthy();
    match m.command(drill(60), t(10)) {
        Ok(CommandOutcome::Changed(tr)) => {
            assert_eq!(
                (tr.to, tr.trigger),
                (Mode::FailoverReadOnly, Trigger::Drill)
            );
        }
        other => panic!("drill refused: {other:?}"),
    }
    m
}

fn refused(m: &mut Machine, c: Command) -> ConflictKind {
    match m.command(c, t(20)) {
        Err(c) => c.kind,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn a_drill_is_read_only_without_a_window_and_ends_by_itself() {
    let mut m = drilling();
    assert_eq!(m.deadline(), None, "the read-only window does not run");
    assert_eq!(m.drill().unwrap().ends_at, t(70));
    assert_eq!(m.next_wakeup(), Some(t(70)));
    assert!(m.begin_replica_write(t(20)).is_err(), "writes are refused");
    assert_eq!(m.tick(t(69)), None);
    let back = m.tick(t(70)).expect("fails back at the end");
    assert_eq!((back.to, back.trigger), (Mode::Primary, Trigger::Drill));
    let end = m.take_drill_end().unwrap();
    assert_eq!((end.result, end.at), (DrillResult::Completed, t(70)));
    assert!(m.drill().is_none() && m.take_drill_end().is_none());
}

#[test]
fn a_drill_needs_primary_a_healthy_replica_and_no_hold() {
    let mut m = Machine::new(Settings::default(), t(0));
    m.observe_primary(Health::Healthy, t(0));
    assert_eq!(refused(&mut m, drill(60)), ConflictKind::ReplicaNotHealthy);
    m.observe_replica(Health::Healthy, t(1));
    let mut held = m.clone();
    held.state.operator_hold = true;
    assert_eq!(refused(&mut held, drill(60)), ConflictKind::OperatorHold);
    let mut m = drilling();
    assert_eq!(refused(&mut m, drill(60)), ConflictKind::NotPrimary);
}

#[test]
fn stop_and_failback_end_a_drill_early() {
    for c in [
        Command::StopDrill {
            reason: "done".into(),
        },
        Command::Failback {
            force: false,
            reason: "done".into(),
        },
    ] {
        let mut m = drilling();
        assert!(matches!(
            m.command(c, t(20)),
            Ok(CommandOutcome::Changed(_))
        ));
        assert_eq!(m.mode(), Mode::Primary);
        assert_eq!(m.take_drill_end().unwrap().result, DrillResult::Stopped);
    }
    let mut m = healthy();
    let stop = Command::StopDrill {
        reason: "none".into(),
    };
    assert_eq!(m.command(stop, t(20)), Ok(CommandOutcome::NoOp));
}

#[test]
fn a_primary_outage_during_a_drill_makes_it_a_real_failover() {
    let mut m = drilling();
    assert_eq!(m.observe_primary(Health::Unhealthy, t(30)), None);
    assert_eq!(m.take_drill_end().unwrap().result, DrillResult::Converted);
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
    // The read-only window runs from the conversion.
    assert_eq!(m.deadline(), Some(t(30 + 6 * 3600)));
    m.observe_primary(Health::Healthy, t(40));
    assert_eq!(m.tick(t(80)), None, "no failback at the drill's end");
    assert_eq!(m.mode(), Mode::FailoverReadOnly);
}

#[test]
fn enable_writes_during_a_drill_needs_force_and_converts_it() {
    let mut m = drilling();
    let plain = Command::EnableWrites {
        force: false,
        reason: "x".into(),
    };
    assert_eq!(refused(&mut m, plain), ConflictKind::DrillActive);
    assert!(m.take_drill_end().is_none());
    let forced = Command::EnableWrites {
        force: true,
        reason: "x".into(),
    };
    let tr = m.command(forced, t(20));
    assert!(matches!(tr, Ok(CommandOutcome::Changed(ref t)) if t.to == Mode::FailoverReadWrite));
    assert_eq!(m.take_drill_end().unwrap().result, DrillResult::Converted);
}

#[test]
fn a_replica_down_aborts_the_drill_at_once() {
    let mut m = drilling();
    let back = m
        .observe_replica(Health::Unhealthy, t(30))
        .expect("fails back");
    assert_eq!(back.to, Mode::Primary);
    assert_eq!(m.take_drill_end().unwrap().result, DrillResult::Aborted);
}

#[test]
fn past_its_end_a_drill_waits_for_a_healthy_primary() {
    let mut m = drilling();
    m.observe_primary(Health::Unknown, t(20));
    assert_eq!(m.tick(t(80)), None);
    assert_eq!(m.next_wakeup(), None, "no busy wakeup past the end");
    let back = m
        .observe_primary(Health::Healthy, t(81))
        .expect("fails back");
    assert_eq!(back.to, Mode::Primary);
    assert_eq!(m.take_drill_end().unwrap().result, DrillResult::Completed);
}

#[test]
fn a_drill_survives_the_state_file_and_old_files_still_load() {
    let m = drilling();
    let json = m.state().to_json().unwrap();
    let back = State::from_json(&json).unwrap();
    assert_eq!(back.drill, m.state().drill);
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("drill");
    let old = State::from_json(&old.to_string()).unwrap();
    assert_eq!(old.drill, None);
}
