//! The failover driver under paused tokio time: probe reports, the clock and
//! operator commands go in through the `Failover` handle, the published
//! snapshot comes out. Hours pass in microseconds and nothing sleeps for real.

use std::path::Path;
use std::time::Duration;

use failway::config::Config;
use failway::failover::machine::{Command, Mode};
use failway::failover::{Failover, ProbeReport};
use failway::region::Region;
use tokio::sync::watch;

fn config(extra: &str) -> Config {
    let text = format!(
        "[upstreams.primary]\nurl = \"http://127.0.0.1:1\"\n[upstreams.replica]\nurl = \"http://127.0.0.1:2\"\n{extra}"
    );
    Config::from_toml_str(&text, Path::new(".")).expect("valid test config")
}

async fn start(extra: &str) -> (Failover, watch::Sender<bool>) {
    let (stop_tx, stop) = watch::channel(false);
    let registry = prometheus::Registry::new();
    let (failover, _task) = Failover::start(&config(extra), &registry, stop)
        .await
        .expect("driver starts");
    (failover, stop_tx)
}

async fn probe(f: &Failover, region: Region, success: bool) {
    f.report_probe(ProbeReport {
        region,
        success,
        status: success.then_some(200),
        error: (!success).then(|| "connection refused".to_owned()),
    })
    .await;
}

/// Lets the driver handle what was sent (paused time advances only when
/// every task is idle).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn mode(f: &Failover) -> Mode {
    f.snapshot().mode
}

#[tokio::test(start_paused = true)]
async fn thresholds_decide_failover_and_the_window_enables_writes_hours_later() {
    let (f, _stop) = start("[failover]\nread_only_window = \"6h\"\n").await;
    for _ in 0..2 {
        probe(&f, Region::Replica, true).await;
        probe(&f, Region::Primary, true).await;
    }
    for _ in 0..2 {
        probe(&f, Region::Primary, false).await;
        settle().await;
        assert_eq!(mode(&f), Mode::Primary, "below unhealthy_threshold (3)");
    }
    probe(&f, Region::Primary, false).await;
    settle().await;
    assert_eq!(mode(&f), Mode::FailoverReadOnly);
    let deadline = f.snapshot().read_only_deadline.expect("a deadline");

    tokio::time::sleep(Duration::from_secs(6 * 3600 - 60)).await;
    assert_eq!(
        mode(&f),
        Mode::FailoverReadOnly,
        "a minute before the deadline"
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(mode(&f), Mode::FailoverReadWrite);
    let snap = f.snapshot();
    let t = snap.transitions.last().expect("a transition");
    assert_eq!(t.trigger.as_str(), "read_only_window");
    let late =
        t.at.duration_since(deadline)
            .expect("not before the deadline");
    assert!(
        late < Duration::from_secs(2),
        "writes enabled {late:?} after the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn failback_waits_for_failback_after_of_continuous_health() {
    let (f, _stop) = start("").await;
    for _ in 0..2 {
        probe(&f, Region::Replica, true).await;
    }
    for _ in 0..3 {
        probe(&f, Region::Primary, false).await;
    }
    settle().await;
    assert_eq!(mode(&f), Mode::FailoverReadOnly);
    // Healthy again (2 good probes), then healthy every 2 s.
    for _ in 0..2 {
        probe(&f, Region::Primary, true).await;
    }
    for _ in 0..(4 * 60 / 2) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        probe(&f, Region::Primary, true).await;
    }
    assert_eq!(
        mode(&f),
        Mode::FailoverReadOnly,
        "4 minutes < failback_after (5m)"
    );
    for _ in 0..(70 / 2) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        probe(&f, Region::Primary, true).await;
    }
    settle().await;
    assert_eq!(mode(&f), Mode::Primary);
}

#[tokio::test(start_paused = true)]
async fn a_primary_flapping_every_second_for_a_minute_fails_over_once_and_never_back() {
    let (f, _stop) = start("[health]\nunhealthy_threshold = 1\nhealthy_threshold = 1\n").await;
    probe(&f, Region::Replica, true).await;
    probe(&f, Region::Primary, true).await;
    let mut transitions = Vec::new();
    for second in 0..60 {
        probe(&f, Region::Primary, second % 2 == 1).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = mode(&f);
        if transitions.last() != Some(&m) {
            transitions.push(m);
        }
    }
    assert_eq!(
        transitions,
        vec![Mode::FailoverReadOnly],
        "one failover, no failback"
    );
}

#[tokio::test(start_paused = true)]
async fn an_operator_failover_holds_and_a_replica_known_down_needs_force() {
    let (f, _stop) = start("").await;
    for _ in 0..3 {
        probe(&f, Region::Replica, false).await;
    }
    settle().await;
    let refused = f
        .command(Command::Failover {
            force: false,
            reason: "drill".into(),
        })
        .await
        .expect("driver answers");
    assert!(refused.is_err(), "the replica is known down");
    let forced = f
        .command(Command::Failover {
            force: true,
            reason: "drill".into(),
        })
        .await
        .expect("driver answers");
    assert!(forced.is_ok());
    assert_eq!(mode(&f), Mode::FailoverReadOnly);
    for _ in 0..3 {
        probe(&f, Region::Replica, true).await;
    }
    for _ in 0..200 {
        probe(&f, Region::Primary, true).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(
        mode(&f),
        Mode::FailoverReadOnly,
        "an operator's failover holds"
    );
}

#[tokio::test(start_paused = true)]
async fn live_errors_from_before_a_failback_do_not_fail_over_again() {
    use failway::failover::Outcome;
    // failback_after shorter than the passive window: errors recorded before
    // the failback are still inside the window when it happens.
    let (f, _stop) = start(
        "[health.passive]\nwindow = \"10s\"\nmin_requests = 20\nerror_ratio = 0.5\n\
         [failover]\nfailback_after = \"1s\"\n",
    )
    .await;
    probe(&f, Region::Replica, true).await;
    probe(&f, Region::Primary, true).await;
    // Timeouts on the primary, too few for a passive verdict on their own.
    for _ in 0..15 {
        f.record_outcome(Region::Primary, Outcome::Timeout);
    }
    for _ in 0..3 {
        probe(&f, Region::Primary, false).await;
    }
    settle().await;
    assert_eq!(mode(&f), Mode::FailoverReadOnly);
    for _ in 0..2 {
        probe(&f, Region::Primary, true).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mode(&f), Mode::Primary, "failed back after failback_after");
    let transitions = f.snapshot().transitions.len();

    // Traffic is back on the primary and succeeds: with the timeouts from
    // before the failback, 20 requests and 15 errors would be a verdict.
    for _ in 0..5 {
        f.record_outcome(Region::Primary, Outcome::Success);
    }
    settle().await;
    // The driver re-reads the detectors every second; give it a few.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snap = f.snapshot();
    assert_eq!(
        snap.mode,
        Mode::Primary,
        "failed over again on stale errors: {:?}",
        snap.transitions.last()
    );
    assert_eq!(snap.transitions.len(), transitions);
    assert!(!snap.regions[Region::Primary.index()].passive_down);
}
