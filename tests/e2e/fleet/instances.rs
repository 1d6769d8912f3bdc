//! Fleet mode end to end: three failway instances in one process share one
//! failover record in a real etcd. Each instance probes its own primary (so a
//! test can make exactly one of them see the primary down) and all share one
//! replica. Covers following the fleet, compare-and-swap races, the read-only
//! window, the latch, a lapsed lease, and `failway ctl` moving the fleet.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::etcd::{Etcd, Relay};
use common::eventually;
use common::failway::{self as fw, send, Answer};
use common::upstream::{Behavior, FakeUpstream};
use failway::app::Running;
use failway::failover::machine::{Health, Mode};
use failway::region::Region;

pub(super) const T: Duration = Duration::from_secs(10);
pub(super) const KEY: &str = "/failway/test/mode";
const LEASE_TTL: Duration = Duration::from_secs(2);

pub(super) struct Cluster {
    pub(super) etcd: Etcd,
    /// In front of etcd for instance 0 only.
    pub(super) relay: Relay,
    pub(super) primaries: Vec<FakeUpstream>,
    pub(super) replica: FakeUpstream,
    pub(super) apps: Vec<Running>,
}

impl Cluster {
    /// `failover` is appended to the `[failover]` section, `fleet` to the
    /// `[fleet]` one.
    pub(super) async fn start(failover: &str, fleet: &str) -> Option<Cluster> {
        let etcd = Etcd::start().await?;
        let relay = Relay::start(etcd.client_addr()).await;
        let replica = FakeUpstream::start().await;
        let mut primaries = Vec::new();
        let mut apps = Vec::new();
        for i in 0..3 {
            let primary = FakeUpstream::start().await;
            let endpoint = if i == 0 {
                relay.endpoint()
            } else {
                etcd.endpoint()
            };
            let health = fw::fast_health(failover);
            let extra = format!(
                r#"
{health}

[fleet]
endpoints = ["{endpoint}"]
key = "{KEY}"
lease_ttl = "2s"
instance_id = "fw-{i}"
{fleet}
"#
            );
            apps.push(fw::start_probing(fw::config(&primary.url(), &replica.url(), &extra)).await);
            primaries.push(primary);
        }
        let c = Cluster {
            etcd,
            relay,
            primaries,
            replica,
            apps,
        };
        for app in &c.apps {
            eventually(T, "both regions probed healthy", || {
                app.failover
                    .snapshot()
                    .regions
                    .iter()
                    .all(|r| r.health == Health::Healthy)
            })
            .await;
        }
        Some(c)
    }

    pub(super) fn modes(&self) -> Vec<Mode> {
        self.apps
            .iter()
            .map(|a| a.failover.snapshot().mode)
            .collect()
    }

    pub(super) async fn wait_all(&self, want: Mode) {
        eventually(T, &format!("every instance in {want}"), || {
            self.modes().iter().all(|m| *m == want)
        })
        .await;
    }

    /// The epoch each instance follows, once they all agree on one.
    pub(super) async fn epoch(&self) -> u64 {
        let deadline = Instant::now() + T;
        loop {
            let mut epochs = Vec::new();
            for app in &self.apps {
                epochs.push(status(app).await["fleet"]["epoch"].as_u64());
            }
            if let Some(e) = epochs.first().copied().flatten() {
                if epochs.iter().all(|x| *x == Some(e)) {
                    return e;
                }
            }
            assert!(
                Instant::now() < deadline,
                "instances follow different epochs: {epochs:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(super) async fn shutdown(self) {
        for app in self.apps {
            app.shutdown().await;
        }
    }
}

pub(super) async fn status(app: &Running) -> serde_json::Value {
    get(app, "/status").await.json()
}

pub(super) async fn get(app: &Running, path: &str) -> Answer {
    send(
        &fw::client(),
        "GET",
        &format!("http://{}{path}", app.admin_addr),
        &[],
        "",
    )
    .await
}

pub(super) async fn admin(app: &Running, action: &str, reason: &str) -> Answer {
    send(
        &fw::client(),
        "POST",
        &format!("http://{}/admin/{action}", app.admin_addr),
        &[("content-type", "application/json")],
        format!("{{\"reason\":\"{reason}\"}}"),
    )
    .await
}

pub(super) async fn write(app: &Running, seq: u64) -> Answer {
    send(
        &fw::client(),
        "POST",
        &format!("{}/api/v2/keys", fw::url(app)),
        &[("x-seq", &seq.to_string())],
        "{\"metadata\":{}}",
    )
    .await
}

pub(super) fn replica_writes(up: &FakeUpstream) -> Vec<u64> {
    up.requests()
        .iter()
        .filter(|r| r.method == "POST")
        .filter_map(|r| r.header("x-seq").and_then(|s| s.parse().ok()))
        .collect()
}

async fn ctl(app: &Running, command: failway::tools::ctl::CtlCommand) -> u8 {
    failway::tools::ctl::run(failway::tools::ctl::CtlArgs {
        admin: format!("http://{}", app.admin_addr),
        token_file: None,
        json: false,
        timeout: std::time::Duration::from_secs(30),
        service: None,
        command,
    })
    .await
    .expect("ctl reaches the admin API")
}

#[tokio::test]
async fn one_instance_sees_the_primary_down_and_the_whole_fleet_follows() {
    let Some(c) = Cluster::start("read_only_window = \"6h\"", "").await else {
        return;
    };
    let before = c.epoch().await;
    c.primaries[0].set_behavior(Behavior::ResetOnAccept);
    // Polled every millisecond (not the usual 10) to measure the spread.
    let mut switched: [Option<Instant>; 3] = [None; 3];
    let deadline = Instant::now() + T;
    while switched.iter().any(Option::is_none) {
        for (i, m) in c.modes().iter().enumerate() {
            if *m == Mode::FailoverReadOnly && switched[i].is_none() {
                switched[i] = Some(Instant::now());
            }
        }
        assert!(Instant::now() < deadline, "all three in failover_read_only");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let times: Vec<Instant> = switched.iter().flatten().copied().collect();
    let first = times.iter().min().copied().expect("three times");
    let slowest = times.iter().max().copied().expect("three times") - first;
    println!("slowest follower switched {slowest:?} after the first instance");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert_eq!(c.epoch().await, before + 1, "one failover, one epoch");
    let st = status(&c.apps[1]).await;
    assert_eq!(st["transitions"].as_array().map(Vec::len), Some(1));
    assert_eq!(st["transitions"][0]["trigger"], "health_check");
    assert_eq!(st["fleet"]["connected"], true);
    assert_eq!(st["fleet"]["instance_id"], "fw-1");
    // Followers see their own primary healthy, but fw-0 still reports it
    // down: nobody fails back alone (failback_after is 400 ms), for more
    // probes than that spans.
    for app in &c.apps[1..] {
        fw::probes_evaluated(app, Region::Primary, 9).await;
    }
    assert!(c.modes().iter().all(|m| *m == Mode::FailoverReadOnly));
    for app in &c.apps {
        assert_eq!(write(app, 0).await.status, 409);
    }
    let list = get(&c.apps[2], "/fleet/instances").await.json();
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 3, "{list:?}");
    let down: Vec<&str> = list
        .iter()
        .filter(|r| r["primary_down"] == true)
        .filter_map(|r| r["instance_id"].as_str())
        .collect();
    assert_eq!(down, ["fw-0"]);
    c.shutdown().await;
}

#[tokio::test]
async fn the_quorum_holds_back_a_failover_until_enough_instances_see_the_primary_down() {
    let Some(c) = Cluster::start("read_only_window = \"6h\"", "failover_quorum = 2").await else {
        return;
    };
    c.primaries[0].set_behavior(Behavior::ResetOnAccept);
    eventually(T, "fw-0 judges its primary down", || {
        c.apps[0].failover.snapshot().regions[0].health == Health::Unhealthy
    })
    .await;
    // fw-0 keeps reporting it for a few more probes; one report is short
    // of the quorum.
    fw::probes_evaluated(&c.apps[0], Region::Primary, 5).await;
    assert!(
        c.modes().iter().all(|m| *m == Mode::Primary),
        "{:?}",
        c.modes()
    );
    c.primaries[1].set_behavior(Behavior::ResetOnAccept);
    c.wait_all(Mode::FailoverReadOnly).await;
    c.shutdown().await;
}

#[tokio::test]
async fn concurrent_operator_failovers_change_the_record_once() {
    let Some(c) = Cluster::start("read_only_window = \"6h\"", "").await else {
        return;
    };
    let before = c.epoch().await;
    let (a, b, d) = tokio::join!(
        admin(&c.apps[0], "failover", "drill a"),
        admin(&c.apps[1], "failover", "drill b"),
        admin(&c.apps[2], "failover", "drill c"),
    );
    for ans in [&a, &b, &d] {
        assert_eq!(ans.status, 200, "{:?}", ans.json());
    }
    let changed = [&a, &b, &d]
        .iter()
        .filter(|x| x.json()["result"] == "changed")
        .count();
    assert_eq!(changed, 1, "exactly one operator action changed the mode");
    c.wait_all(Mode::FailoverReadOnly).await;
    assert_eq!(c.epoch().await, before + 1);
    c.shutdown().await;
}

#[tokio::test]
async fn window_latch_and_refused_failback_are_fleet_wide() {
    let Some(c) = Cluster::start("read_only_window = \"2s\"", "").await else {
        return;
    };
    let before = c.epoch().await;
    c.primaries[0].set_behavior(Behavior::ResetOnAccept);
    c.wait_all(Mode::FailoverReadOnly).await;
    c.wait_all(Mode::FailoverReadWrite).await;
    assert_eq!(
        c.epoch().await,
        before + 2,
        "failover, then writes, once each"
    );
    let st = status(&c.apps[2]).await;
    let triggers: Vec<&str> = st["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter_map(|t| t["trigger"].as_str())
        .collect();
    assert_eq!(triggers, ["health_check", "read_only_window"]);

    let ans = write(&c.apps[1], 1).await;
    assert_eq!(ans.status, 200);
    assert_eq!(replica_writes(&c.replica), [1]);
    assert_eq!(
        c.epoch().await,
        before + 3,
        "the latch went into the record"
    );
    for app in &c.apps {
        assert_eq!(status(app).await["replica_writes_latch"], true);
    }
    // The primary comes back everywhere: no instance fails back over the latch.
    c.primaries[0].set_behavior(Behavior::default());
    eventually(T, "fw-0 sees its primary healthy", || {
        c.apps[0].failover.snapshot().regions[0].health == Health::Healthy
    })
    .await;
    fw::probes_evaluated(&c.apps[0], Region::Primary, 9).await;
    assert!(c.modes().iter().all(|m| *m == Mode::FailoverReadWrite));
    for app in &c.apps {
        assert_eq!(status(app).await["failback_blocked"], "replica_writes");
    }
    c.shutdown().await;
}

#[tokio::test]
async fn an_instance_cut_off_from_etcd_stops_writes_once_its_lease_lapses() {
    let Some(c) = Cluster::start("read_only_window = \"never\"", "").await else {
        return;
    };
    assert_eq!(admin(&c.apps[1], "failover", "drill").await.status, 200);
    c.wait_all(Mode::FailoverReadOnly).await;
    assert_eq!(
        admin(&c.apps[2], "enable-writes", "drill").await.status,
        200
    );
    c.wait_all(Mode::FailoverReadWrite).await;
    assert_eq!(write(&c.apps[0], 0).await.status, 200);

    // Writes through fw-0 without pause, each tagged with when it was sent.
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<(u64, Instant, u16)>>> = Arc::default();
    let seq = Arc::new(AtomicU64::new(1));
    let writer = {
        let (stop, sent, seq) = (stop.clone(), sent.clone(), seq.clone());
        let client = fw::client();
        let url = format!("{}/api/v2/keys", fw::url(&c.apps[0]));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let at = Instant::now();
                let ans = send(
                    &client,
                    "POST",
                    &url,
                    &[("x-seq", &n.to_string())],
                    "{\"metadata\":{}}",
                )
                .await;
                sent.lock().expect("lock").push((n, at, ans.status));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let cut = Instant::now();
    c.relay.black_hole();
    eventually(
        LEASE_TTL + Duration::from_secs(1),
        "fw-0 refuses writes",
        || {
            sent.lock()
                .expect("lock")
                .iter()
                .any(|(_, at, status)| *at > cut && *status == 409)
        },
    )
    .await;
    let refused_after = cut.elapsed();
    // Keep writing a while after the refusals began and after the lease
    // lapsed (refusals may start earlier, when the instance already sees it
    // has lost contact).
    let lapsed = cut + LEASE_TTL;
    let until = std::cmp::max(Instant::now(), lapsed) + Duration::from_millis(500);
    tokio::time::sleep_until(until.into()).await;
    let late: Vec<u64> = sent
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, at, _)| *at >= lapsed)
        .map(|(n, _, _)| *n)
        .collect();
    let reached = replica_writes(&c.replica);
    let leaked = late.iter().filter(|n| reached.contains(n)).count();
    println!(
        "fw-0 refused writes {refused_after:?} after the cut; {} writes sent after the lease lapsed, {leaked} reached the replica",
        late.len()
    );
    assert!(!late.is_empty(), "writes were sent after the lease lapsed");
    assert_eq!(
        leaked, 0,
        "no write after the lease lapsed reaches the replica"
    );
    assert!(
        fw::metric(
            &c.apps[0],
            "failway_writes_blocked_total{reason=\"fleet_lease_lost\"}"
        )
        .await
            > 0.0
    );
    // The other instances keep their lease and keep writing.
    assert_eq!(write(&c.apps[1], 1_000_000).await.status, 200);

    c.relay.restore();
    let restored = Instant::now();
    eventually(T, "fw-0 forwards writes again", || {
        sent.lock()
            .expect("lock")
            .iter()
            .any(|(_, at, status)| *at > restored && *status == 200)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    assert_eq!(c.modes(), [Mode::FailoverReadWrite; 3]);
    c.shutdown().await;
}

#[tokio::test]
async fn ctl_against_one_instance_moves_the_whole_fleet() {
    use failway::tools::ctl::{CtlCommand, FleetCommand};
    let Some(c) = Cluster::start("read_only_window = \"never\"", "").await else {
        return;
    };
    let reason = || "maintenance".to_owned();
    let code = ctl(
        &c.apps[0],
        CtlCommand::Failover {
            reason: reason(),
            force: false,
        },
    )
    .await;
    assert_eq!(code, 0);
    c.wait_all(Mode::FailoverReadOnly).await;
    let code = ctl(
        &c.apps[1],
        CtlCommand::EnableWrites {
            reason: reason(),
            force: false,
        },
    )
    .await;
    assert_eq!(code, 0);
    c.wait_all(Mode::FailoverReadWrite).await;
    let code = ctl(
        &c.apps[2],
        CtlCommand::Failback {
            reason: reason(),
            force: false,
        },
    )
    .await;
    assert_eq!(code, 0);
    c.wait_all(Mode::Primary).await;
    let code = ctl(
        &c.apps[0],
        CtlCommand::Fleet {
            command: FleetCommand::Status,
        },
    )
    .await;
    assert_eq!(code, 0);
    let st = status(&c.apps[0]).await;
    let triggers: Vec<&str> = st["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter_map(|t| t["trigger"].as_str())
        .collect();
    assert_eq!(triggers, ["operator", "operator", "operator"]);
    c.shutdown().await;
}
