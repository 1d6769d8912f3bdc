//! Drills end to end: a rehearsed read-only failover to the replica that
//! comes back by itself, stopped early, refused, and turned into a real
//! failover by a primary outage.

use std::time::{Duration, Instant};

use super::outage::{admin, start, status, wait_healthy, wait_mode, writes, T};
use crate::common::failway::{self as fw, send};
use crate::common::upstream::{Behavior, FakeUpstream};
use failway::failover::machine::Mode;
use failway::region::Region;

fn drill_body(duration: &str) -> String {
    format!(r#"{{"reason": "quarterly rehearsal", "duration": "{duration}"}}"#)
}

#[tokio::test]
async fn a_drill_reads_from_the_replica_refuses_writes_and_ends_on_time() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "", None).await;
    wait_healthy(&app).await;
    let url = fw::url(&app);

    let started = Instant::now();
    let ans = admin(&app, "drill", &drill_body("2s"), None).await;
    assert_eq!(ans.status, 200, "{:?}", ans.json());
    assert_eq!(ans.json()["transition"]["trigger"], "drill");
    let st = status(&app).await;
    assert_eq!(st["mode"], "failover_read_only");
    assert_eq!(st["drill"]["reason"], "quarterly rehearsal");
    assert!(st["drill"]["ends_at"].is_string() && st["drill"]["started"].is_string());
    assert_eq!(st["read_only_deadline"], serde_json::Value::Null);

    let read = send(&fw::client(), "GET", &format!("{url}/api/v2/keys"), &[], "").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("failway-region"), Some("replica"));
    let before = writes(&replica);
    let write = send(
        &fw::client(),
        "POST",
        &format!("{url}/api/v2/keys"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(write.status, 409);
    assert_eq!(write.header("failway-mode"), Some("failover_read_only"));
    let message = write.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("drill is under way"), "{message}");
    assert!(message.contains("The drill ends at "), "{message}");
    assert_eq!(writes(&replica), before, "no write reached the replica");

    wait_mode(&app, Mode::Primary).await;
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_millis(1900) && lasted < Duration::from_secs(3),
        "the drill ended after {lasted:?}"
    );
    let st = status(&app).await;
    assert_eq!(st["drill"], serde_json::Value::Null);
    let last = st["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["to"].as_str(), last["trigger"].as_str()),
        (Some("primary"), Some("drill"))
    );
    let completed = r#"failway_drills_total{result="completed",service="default"}"#;
    assert_eq!(fw::metric(&app, completed).await, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_drill_stops_early_and_refuses_what_it_cannot_rehearse() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "max_drill = \"1m\"", None).await;
    wait_healthy(&app).await;

    let long = admin(&app, "drill", &drill_body("2m"), None).await;
    assert_eq!(long.status, 400);
    assert!(long.json()["error"]
        .as_str()
        .unwrap()
        .contains("failover.max_drill"));

    assert_eq!(
        admin(&app, "drill", &drill_body("1m"), None).await.status,
        200
    );
    let again = admin(&app, "drill", &drill_body("1m"), None).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["code"], "not_primary");
    let writes_on = admin(&app, "enable-writes", r#"{"reason": "x"}"#, None).await;
    assert_eq!(writes_on.status, 409);
    assert_eq!(writes_on.json()["code"], "drill_active");

    let stop = admin(&app, "drill/stop", r#"{"reason": "seen enough"}"#, None).await;
    assert_eq!(stop.status, 200, "{:?}", stop.json());
    assert_eq!(super::outage::mode(&app), Mode::Primary);

    replica.set_behavior(Behavior::ResetOnAccept);
    let replica_down =
        || async { status(&app).await["regions"]["replica"]["health"] == "unhealthy" };
    crate::common::eventually_async(T, "replica judged down", replica_down).await;
    let refused = admin(&app, "drill", &drill_body("1m"), None).await;
    assert_eq!(refused.status, 409);
    assert_eq!(refused.json()["code"], "replica_not_healthy");
    for (sample, want) in [
        (
            r#"failway_drills_total{result="stopped",service="default"}"#,
            1.0,
        ),
        (
            r#"failway_drills_total{result="refused",service="default"}"#,
            2.0,
        ),
    ] {
        assert_eq!(fw::metric(&app, sample).await, want, "{sample}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_primary_outage_during_a_drill_is_a_real_failover() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    // Manual failback: only the drill's own end could bring it back.
    let app = start(&primary, &replica, "failback = \"manual\"", None).await;
    wait_healthy(&app).await;
    assert_eq!(
        admin(&app, "drill", &drill_body("1s"), None).await.status,
        200
    );
    primary.set_behavior(Behavior::ResetOnAccept);
    crate::common::eventually_async(T, "the drill converted", || async {
        status(&app).await["drill"].is_null()
    })
    .await;
    primary.set_behavior(Behavior::default());
    // 15 probes span the drill's end: it does not fail back.
    fw::probes_evaluated(&app, Region::Primary, 15).await;
    let st = status(&app).await;
    assert_eq!(st["mode"], "failover_read_only");
    assert!(st["read_only_deadline"].is_string(), "the window runs now");
    let converted = r#"failway_drills_total{result="converted",service="default"}"#;
    assert_eq!(fw::metric(&app, converted).await, 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_drill_survives_a_restart_and_ends_when_it_was_due() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "", Some(&state)).await;
    wait_healthy(&app).await;
    let ans = admin(&app, "drill", &drill_body("3s"), None).await;
    assert_eq!(ans.status, 200, "{:?}", ans.json());
    let started = Instant::now();
    let ends_at = status(&app).await["drill"]["ends_at"].clone();
    assert!(ends_at.is_string());
    app.shutdown().await;

    let app = start(&primary, &replica, "", Some(&state)).await;
    let st = status(&app).await;
    assert_eq!(st["mode"], "failover_read_only", "{st}");
    assert_eq!(
        st["drill"]["ends_at"], ends_at,
        "the same drill, not a new one"
    );
    assert_eq!(st["drill"]["reason"], "quarterly rehearsal");
    // Its end is kept: it fails back when it was due, not 3 s after the restart.
    wait_mode(&app, Mode::Primary).await;
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_millis(2900) && lasted < Duration::from_secs(5),
        "the drill ended {lasted:?} after it started"
    );
    assert_eq!(status(&app).await["drill"], serde_json::Value::Null);
    app.shutdown().await;
}
