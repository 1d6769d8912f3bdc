//! Fleet mode under traffic: two instances share one record in a real
//! etcd; fw-0 reaches etcd through a relay. The primary is killed, the
//! fleet fails over, and fw-0 is cut from etcd (black-holed, connections
//! kept open) while the read-only window ends. The connected fw-1 enables
//! writes for the fleet; fw-0, cut off, must not promote on its own: no
//! write through it may reach the replica until it is reconnected.
//!
//! A write at the replica is a violation when it arrived before the fleet
//! enabled writes (by the record's own transition time), or when it went
//! through fw-0 and was answered before the relay was restored.

use std::time::SystemTime;

use tokio::time::Instant;

use super::traffic::{
    config_text, is_write, parse, received, status_of, target, Arrivals, Kind, Sent, Tally,
    Traffic, Watcher, PROBES, WAIT,
};
use crate::common::etcd::{Etcd, Relay};
use crate::common::eventually;
use crate::common::failway as fw;
use crate::common::upstream::FakeUpstream;
use failway::app::Running;
use failway::failover::machine::Health;

const KEY: &str = "/failway/faults/mode";

async fn instance(i: usize, endpoint: &str, regions: (&str, &str)) -> Running {
    let mut text = config_text(
        "127.0.0.1:0",
        "127.0.0.1:0",
        regions,
        [PROBES, "read_only_window = \"3s\"", ""],
    );
    text.push_str(&format!(
        "\n[fleet]\nendpoints = [\"{endpoint}\"]\nkey = \"{KEY}\"\nlease_ttl = \"2s\"\ninstance_id = \"fw-{i}\"\n"
    ));
    let app = fw::start_probing(parse(&text)).await;
    eventually(WAIT, "both regions probed healthy", || {
        let s = app.failover.snapshot();
        s.regions.iter().all(|r| r.health == Health::Healthy)
    })
    .await;
    app
}

/// When the fleet enabled writes, by the record `app` follows.
async fn writes_enabled_at(app: &Running) -> SystemTime {
    let st = status_of(&fw::client(), &format!("http://{}", app.admin_addr))
        .await
        .expect("/status answers");
    let at = st["transitions"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["to"] == "failover_read_write"))
        .and_then(|t| t["at"].as_str())
        .unwrap_or_else(|| panic!("no transition to failover_read_write in {st}"));
    humantime::parse_rfc3339(at).expect("RFC 3339 time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_from_etcd_never_promotes_itself() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let relay = Relay::start(etcd.client_addr()).await;
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let arrivals = Arrivals::default();
    replica.set_behavior(arrivals.recording());
    let urls = (primary.url(), replica.url());
    let regions = (urls.0.as_str(), urls.1.as_str());
    let apps = [
        instance(0, &relay.endpoint(), regions).await,
        instance(1, &etcd.endpoint(), regions).await,
    ];
    let watchers: Vec<Watcher> = apps
        .iter()
        .map(|a| Watcher::start(target(format!("http://{}", a.admin_addr))))
        .collect();
    let started = Instant::now();
    let traffic = Traffic::start(&[target(fw::url(&apps[0])), target(fw::url(&apps[1]))]);
    traffic
        .wait_for(5, "written to the primary", |s| {
            s.kind == Kind::Write && s.ok() && s.region.as_deref() == Some("primary")
        })
        .await;

    primary.stop().await;
    for w in &watchers {
        w.wait_mode("failover_read_only", started).await;
    }
    let cut = Instant::now();
    relay.black_hole();
    let writable = watchers[1].wait_mode("failover_read_write", cut).await;
    // fw-0's copy of the deadline has passed too; it keeps answering.
    traffic
        .wait_for(10, "written through fw-0 after the window", |s| {
            s.via == 0 && s.kind == Kind::Write && s.sent_at >= writable
        })
        .await;
    traffic
        .wait_for(5, "written to the replica through fw-1", |s| {
            s.via == 1 && s.ok() && s.kind == Kind::Write && s.region.as_deref() == Some("replica")
        })
        .await;

    let restored = Instant::now();
    relay.restore();
    let rejoined = watchers[0].wait_mode("failover_read_write", restored).await;
    traffic
        .wait_for(5, "written to the replica through fw-0", |s| {
            s.via == 0 && s.ok() && s.kind == Kind::Write && s.sent_at >= rejoined
        })
        .await;
    let sent = traffic.stop().await;
    let mut watched = Vec::new();
    for w in watchers {
        watched.push(w.stop().await);
    }
    let switched: Vec<_> = watched.iter().map(|w| w.switched()).collect();
    let skip = |s: &Sent| watched[s.via].replica_down_during(s);

    let (ledger_p, ledger_r) = (received(&primary), received(&replica));
    let mut tally = Tally::count(&sent, &ledger_p, &ledger_r, &switched, skip);
    let enabled = writes_enabled_at(&apps[1]).await;
    let early = arrivals
        .all()
        .iter()
        .filter(|(id, at)| is_write(id) && *at < enabled)
        .count();
    let through_cut: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.via == 0 && s.kind == Kind::Write && s.done_at < restored)
        .filter(|s| ledger_r.contains_key(&s.id))
        .collect();
    tally.replica_writes_while_read_only = early + through_cut.len();
    let refused_cut = sent
        .iter()
        .filter(|s| s.via == 0 && s.kind == Kind::Write && s.sent_at >= cut && s.done_at < restored)
        .filter(|s| s.status == 409)
        .count();
    eprintln!(
        "fault scenario fleet cut: {early} replica writes before the fleet enabled writes, {} through fw-0 while cut, {refused_cut} refused by fw-0 while cut",
        through_cut.len()
    );
    tally.assert_clean("fleet cut from etcd");
    for app in apps {
        app.shutdown().await;
    }
}
