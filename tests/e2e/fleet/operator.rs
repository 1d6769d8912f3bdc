//! Fleet mode: operator actions through any instance. Only fw-0 sees the
//! primary down, so the others' own probes would fail back at once; an
//! action sent to them still applies to the shared record, and an error
//! names its real cause.

use crate::common;

use common::eventually;
use common::failway::{self as fw, send, Answer};
use common::upstream::Behavior;
use failway::app::Running;
use failway::failover::machine::{Health, Mode};
use failway::region::Region;
use serde_json::{json, Value};

use super::instances::{admin, replica_writes, status, write, Cluster, KEY, T};

async fn action(app: &Running, name: &str, body: Value) -> Answer {
    send(
        &fw::client(),
        "POST",
        &format!("http://{}/admin/{name}", app.admin_addr),
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// The record as stored in etcd.
async fn stored(c: &Cluster) -> Value {
    let (value, _) = c.etcd.get(KEY).await.expect("the record is stored");
    serde_json::from_slice(&value).expect("the record is JSON")
}

async fn triggers(app: &Running) -> Vec<String> {
    status(app).await["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter_map(|t| t["trigger"].as_str().map(str::to_owned))
        .collect()
}

/// fw-0's primary fails; the fleet follows it into `failover_read_only`;
/// the others keep seeing their primary healthy past `failback_after`.
async fn failed_over_by_fw0_alone(c: &Cluster) {
    c.primaries[0].set_behavior(Behavior::ResetOnAccept);
    c.wait_all(Mode::FailoverReadOnly).await;
    for app in &c.apps[1..] {
        fw::probes_evaluated(app, Region::Primary, 9).await;
        assert_eq!(app.failover.snapshot().regions[0].health, Health::Healthy);
    }
    assert_eq!(c.modes(), [Mode::FailoverReadOnly; 3]);
}

#[tokio::test]
async fn enable_writes_through_an_instance_that_sees_the_primary_healthy_moves_the_fleet() {
    let Some(c) = Cluster::start("read_only_window = \"never\"", "").await else {
        return;
    };
    let before = c.epoch().await;
    failed_over_by_fw0_alone(&c).await;

    let ans = admin(&c.apps[1], "enable-writes", "incident 7").await;
    assert_eq!(ans.status, 200, "{:?}", ans.json());
    assert_eq!(ans.json()["result"], "changed");
    assert_eq!(ans.json()["mode"], "failover_read_write");
    c.wait_all(Mode::FailoverReadWrite).await;
    assert_eq!(c.epoch().await, before + 2, "failover, then writes");
    let record = stored(&c).await;
    assert_eq!(record["changed_by"], "fw-1");
    assert_eq!(record["state"]["mode"], "failover_read_write");
    for app in &c.apps {
        assert_eq!(triggers(app).await, ["health_check", "operator"]);
    }
    // fw-0 still reports the primary down: the others do not fail back on
    // their own afterwards either.
    for app in &c.apps[1..] {
        fw::probes_evaluated(app, Region::Primary, 9).await;
    }
    assert_eq!(c.modes(), [Mode::FailoverReadWrite; 3]);
    c.shutdown().await;
}

#[tokio::test]
async fn a_forced_failback_through_a_third_instance_clears_the_latch_fleet_wide() {
    let Some(c) = Cluster::start("read_only_window = \"never\"", "").await else {
        return;
    };
    let before = c.epoch().await;
    failed_over_by_fw0_alone(&c).await;
    let ans = admin(&c.apps[1], "enable-writes", "incident 8").await;
    assert_eq!(ans.status, 200, "{:?}", ans.json());
    c.wait_all(Mode::FailoverReadWrite).await;
    assert_eq!(write(&c.apps[1], 1).await.status, 200);
    assert_eq!(replica_writes(&c.replica), [1]);
    for app in &c.apps {
        assert_eq!(status(app).await["replica_writes_latch"], true);
    }

    c.primaries[0].set_behavior(Behavior::default());
    eventually(T, "fw-0 sees its primary healthy", || {
        c.apps[0].failover.snapshot().regions[0].health == Health::Healthy
    })
    .await;
    let refused = action(&c.apps[2], "failback", json!({"reason": "back"})).await;
    assert_eq!(refused.status, 409, "{:?}", refused.json());
    assert_eq!(refused.json()["code"], "replica_writes");
    assert_eq!(refused.json()["mode"], "failover_read_write");

    let ans = action(
        &c.apps[2],
        "failback",
        json!({"reason": "writes reconciled by hand", "force": true}),
    )
    .await;
    assert_eq!(ans.status, 200, "{:?}", ans.json());
    assert_eq!(ans.json()["result"], "changed");
    assert_eq!(ans.json()["transition"]["latch_cleared"], true);
    c.wait_all(Mode::Primary).await;
    assert_eq!(
        c.epoch().await,
        before + 4,
        "failover, writes, latch, failback"
    );
    assert_eq!(stored(&c).await["changed_by"], "fw-2");
    for app in &c.apps {
        let st = status(app).await;
        assert_eq!(st["replica_writes_latch"], false);
        assert_eq!(st["mode"], "primary");
    }
    c.shutdown().await;
}

#[tokio::test]
async fn an_action_while_etcd_is_down_answers_503_naming_etcd_unreachable() {
    let Some(mut c) = Cluster::start("read_only_window = \"never\"", "").await else {
        return;
    };
    c.etcd.kill();
    eventually(T, "fw-1 sees etcd gone", || {
        !c.apps[1].failover.fleet().expect("fleet mode").connected()
    })
    .await;
    let ans = admin(&c.apps[1], "failover", "drill").await;
    assert_eq!(ans.status, 503, "{:?}", ans.json());
    let error = ans.json()["error"].as_str().unwrap_or_default().to_owned();
    println!("{error}");
    assert!(error.contains("etcd unreachable"), "{error}");
    assert_eq!(c.modes(), [Mode::Primary; 3]);
    c.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_record_is_named_as_such_not_as_etcd_unreachable() {
    let Some(c) = Cluster::start("read_only_window = \"never\"", "").await else {
        return;
    };
    c.etcd.put(KEY, "not a fleet record").await;
    eventually(T, "fw-1 stops following the unreadable record", || {
        !c.apps[1].failover.fleet().expect("fleet mode").connected()
    })
    .await;
    let ans = admin(&c.apps[1], "failover", "drill").await;
    assert_eq!(ans.status, 503, "{:?}", ans.json());
    let error = ans.json()["error"].as_str().unwrap_or_default().to_owned();
    println!("{error}");
    assert!(error.contains("holds an unreadable value"), "{error}");
    assert!(!error.contains("unreachable"), "{error}");
    assert_eq!(c.modes(), [Mode::Primary; 3]);
    c.shutdown().await;
}

#[tokio::test]
async fn a_drill_through_one_instance_is_one_drill_for_the_fleet() {
    let Some(c) = Cluster::start("", "").await else {
        return;
    };
    let started = std::time::Instant::now();
    let body = json!({"reason": "fleet rehearsal", "duration": "2s"});
    let ans = action(&c.apps[1], "drill", body).await;
    assert_eq!(ans.status, 200, "{:?}", ans.json());
    c.wait_all(Mode::FailoverReadOnly).await;
    for app in &c.apps {
        let st = status(app).await;
        assert_eq!(st["drill"]["reason"], "fleet rehearsal", "{st}");
        assert_eq!(st["read_only_deadline"], Value::Null, "{st}");
    }
    // A write through another instance is refused as a drill's.
    let refused = write(&c.apps[2], 1).await;
    assert_eq!(refused.status, 409);
    let text = String::from_utf8_lossy(&refused.body).to_string();
    assert!(text.contains("drill is under way"), "{text}");
    assert!(replica_writes(&c.replica).is_empty());

    c.wait_all(Mode::Primary).await;
    let lasted = started.elapsed();
    assert!(
        lasted >= std::time::Duration::from_millis(1900),
        "the drill ended after {lasted:?}"
    );
    for app in &c.apps {
        assert_eq!(status(app).await["drill"], Value::Null);
        assert_eq!(
            triggers(app).await.last().map(String::as_str),
            Some("drill")
        );
        let sample = r#"failway_drills_total{result="completed",service="default"}"#;
        // Each instance follows the one drill to its end, as it follows
        // every transition of the shared record.
        assert_eq!(fw::metric(app, sample).await, 1.0, "{sample}");
    }
    let record = stored(&c).await;
    assert!(record.to_string().contains("fleet rehearsal"), "{record}");
    c.shutdown().await;
}
