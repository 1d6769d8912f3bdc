//! Fleet mode against a real etcd: compare-and-swap on the epoch, the watch,
//! instance registration under leases, and what an instance does when it
//! loses etcd (cut off by a black-holed relay, or etcd killed and restarted).

use crate::common;

use std::time::{Duration, SystemTime};

use common::etcd::{Etcd, Relay};
use common::{eventually, eventually_async};
use failway::config::{FleetBackend, FleetConfig};
use failway::failover::fleet::{
    CasOutcome, Fleet, FleetError, FleetMetrics, FleetRecord, InstanceReport,
};
use failway::failover::machine::{Mode, State};
use tokio::sync::watch;
use tokio::time::Instant;

const KEY: &str = "/failway/test/mode";
const TTL: Duration = Duration::from_secs(2);

/// A fleet handle with its own stop switch and metrics registry.
struct Handle {
    fleet: Fleet,
    stop: watch::Sender<bool>,
    registry: prometheus::Registry,
}

impl Handle {
    async fn start(endpoint: &str, id: &str) -> Handle {
        Handle::start_with(&config(&[endpoint]), id).await
    }

    async fn start_with(cfg: &FleetConfig, id: &str) -> Handle {
        let registry = prometheus::Registry::new();
        let metrics = FleetMetrics::register(&registry).expect("metrics");
        let (stop, stop_rx) = watch::channel(false);
        let fleet = Fleet::start(cfg, id.to_owned(), metrics, stop_rx)
            .await
            .expect("fleet starts");
        Handle {
            fleet,
            stop,
            registry,
        }
    }

    fn epoch(&self) -> Option<u64> {
        self.fleet.record().borrow().as_ref().map(|r| r.epoch)
    }

    fn metrics_text(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("encode metrics")
    }

    /// `failway_fleet_transitions_total{result}` as exported.
    fn transitions(&self, result: &str) -> u64 {
        let series = format!("failway_fleet_transitions_total{{result=\"{result}\"}} ");
        let text = self.metrics_text();
        let line = text.lines().find_map(|l| l.strip_prefix(series.as_str()));
        line.and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    async fn listed(&self, id: &str) -> bool {
        matches!(self.fleet.instances().await, Ok(list) if list.iter().any(|r| r.instance_id == id))
    }
}

fn config(endpoints: &[&str]) -> FleetConfig {
    FleetConfig {
        backend: FleetBackend::Etcd,
        endpoints: endpoints
            .iter()
            .map(|e| e.parse().expect("endpoint uri"))
            .collect(),
        key: KEY.to_owned(),
        lease_ttl: TTL,
        failover_quorum: 1,
        instance_id: None,
        endpoints_file: None,
        tls: None,
        username: None,
        password_file: None,
    }
}

fn state(mode: Mode) -> State {
    let mut s = State::initial(SystemTime::now());
    s.mode = mode;
    s
}

/// What an instance in `failover_read_only` reports (its ID is filled in).
fn report() -> InstanceReport {
    InstanceReport {
        instance_id: String::new(),
        mode: "failover_read_only".to_owned(),
        primary_down: true,
        replica_healthy: true,
        epoch_seen: 1,
        at_unix_ms: 0,
    }
}

async fn won(fleet: &Fleet, expected: Option<u64>, mode: Mode) -> FleetRecord {
    match fleet
        .compare_and_swap(expected, &state(mode), fleet.instance_id(), "test")
        .await
    {
        Ok(CasOutcome::Won(r)) => r,
        other => panic!("CAS expecting {expected:?} did not win: {other:?}"),
    }
}

#[tokio::test]
async fn cas_on_the_epoch_has_exactly_one_winner() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let a = Handle::start(&etcd.endpoint(), "a").await;
    let b = Handle::start(&etcd.endpoint(), "b").await;

    // Absent key: expecting an epoch loses and says the key is absent.
    let lost = a
        .fleet
        .compare_and_swap(Some(3), &state(Mode::Primary), "a", "x")
        .await
        .expect("cas");
    assert_eq!(lost, CasOutcome::Lost(None));

    let first = won(&a.fleet, None, Mode::FailoverReadOnly).await;
    assert_eq!(first.epoch, 1);
    assert_eq!(first.state.mode, Mode::FailoverReadOnly);
    assert_eq!(first.changed_by, "a");

    // Stored as JSON under the key itself, tied to no lease (it must outlive
    // every instance).
    let (value, lease) = etcd.get(KEY).await.expect("record stored");
    assert_eq!(lease, 0, "the record must not be tied to a lease");
    assert_eq!(FleetRecord::from_json(&value).expect("json"), first);

    // Creating again loses and returns the record that is there.
    let again = b
        .fleet
        .compare_and_swap(None, &state(Mode::Primary), "b", "x")
        .await
        .expect("cas");
    assert_eq!(again, CasOutcome::Lost(Some(first.clone())));

    // Two instances race from the same epoch: exactly one wins; the loser
    // gets the winner's record.
    let ro = state(Mode::FailoverReadWrite);
    let (ra, rb) = tokio::join!(
        a.fleet
            .compare_and_swap(Some(1), &ro, "a", "deadline passed"),
        b.fleet
            .compare_and_swap(Some(1), &ro, "b", "deadline passed"),
    );
    let (ra, rb) = (ra.expect("cas a"), rb.expect("cas b"));
    let (winner, loser) = match (ra, rb) {
        (CasOutcome::Won(w), CasOutcome::Lost(l)) | (CasOutcome::Lost(l), CasOutcome::Won(w)) => {
            (w, l)
        }
        other => panic!("expected exactly one winner, got {other:?}"),
    };
    assert_eq!(winner.epoch, 2);
    assert_eq!(loser, Some(winner.clone()));

    // a won the creation, the race had one winner; three calls lost.
    let total = |result: &str| a.transitions(result) + b.transitions(result);
    assert_eq!((total("won"), total("lost"), total("error")), (2, 3, 0));
    for h in [&a, &b] {
        eventually(Duration::from_secs(2), "both see epoch 2", || {
            h.epoch() == Some(2)
        })
        .await;
        assert!(
            common::sample_value(&h.metrics_text(), "failway_fleet_epoch") == Some(2.0),
            "{}",
            h.metrics_text()
        );
    }
}

#[tokio::test]
async fn watch_delivers_changes_to_other_handles_within_a_second() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let a = Handle::start(&etcd.endpoint(), "a").await;
    let b = Handle::start(&etcd.endpoint(), "b").await;
    let mut b_rx = b.fleet.record();
    eventually(Duration::from_secs(5), "b connected", || {
        b.fleet.connected()
    })
    .await;
    assert!(b_rx.borrow_and_update().is_none(), "no record yet");

    for (expected, mode) in [(None, Mode::FailoverReadOnly), (Some(1), Mode::Primary)] {
        let written = won(&a.fleet, expected, mode).await;
        // Followed through the watch, within a generous bound.
        tokio::time::timeout(
            Duration::from_secs(5),
            b_rx.wait_for(|r| r.as_ref() == Some(&written)),
        )
        .await
        .unwrap_or_else(|_| panic!("b did not see epoch {} within 5 s", written.epoch))
        .expect("record channel open");
    }
    // A change made outside failway (an operator with etcdctl) is followed too.
    let by_hand = FleetRecord::new(
        3,
        state(Mode::FailoverReadOnly),
        "operator",
        "drill",
        SystemTime::now(),
    );
    etcd.put(KEY, by_hand.to_json().expect("json")).await;
    tokio::time::timeout(
        Duration::from_secs(1),
        b_rx.wait_for(|r| r.as_ref() == Some(&by_hand)),
    )
    .await
    .expect("b sees a change made by hand within 1 s")
    .expect("record channel open");

    // An unreadable record is not followed: the last good one is kept, the
    // instance is not in sync, and no compare-and-swap can win over it.
    etcd.put(KEY, "not a record").await;
    eventually(Duration::from_secs(1), "b out of sync", || {
        !b.fleet.connected()
    })
    .await;
    assert_eq!(b.epoch(), Some(3));
    let refused = b
        .fleet
        .compare_and_swap(Some(3), &state(Mode::Primary), "b", "x")
        .await;
    assert!(
        matches!(refused, Err(FleetError::BadValue { .. })),
        "{refused:?}"
    );
    let fixed = FleetRecord::new(
        4,
        state(Mode::Primary),
        "operator",
        "fixed",
        SystemTime::now(),
    );
    etcd.put(KEY, fixed.to_json().expect("json")).await;
    eventually(Duration::from_secs(1), "b follows again", || {
        b.fleet.connected() && b.epoch() == Some(4)
    })
    .await;
}

#[tokio::test]
async fn cut_off_instance_loses_its_lease_keeps_the_record_and_recovers() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let relay = Relay::start(etcd.client_addr()).await;
    let direct = Handle::start(&etcd.endpoint(), "direct").await;
    let cut = Handle::start(&relay.endpoint(), "cut").await;
    let stopping = Handle::start(&etcd.endpoint(), "stopping").await;

    won(&direct.fleet, None, Mode::FailoverReadOnly).await;
    for h in [&cut, &stopping] {
        eventually(Duration::from_secs(5), "connected with epoch 1", || {
            h.fleet.connected() && h.fleet.lease_alive() && h.epoch() == Some(1)
        })
        .await;
        h.fleet.report(&report()).await.expect("report");
    }
    eventually_async(Duration::from_secs(2), "both registered", || async {
        direct.listed("cut").await && direct.listed("stopping").await
    })
    .await;
    let listed = direct.fleet.instances().await.expect("instances");
    let cut_entry = listed
        .iter()
        .find(|r| r.instance_id == "cut")
        .expect("cut listed");
    assert_eq!(cut_entry.mode, "failover_read_only");
    assert!(cut_entry.at_unix_ms > 0, "report time filled in");
    assert!(common::sample_value(&cut.metrics_text(), "failway_fleet_connected") == Some(1.0));

    // A stopped instance revokes its lease: its registration goes at once.
    stopping.stop.send_replace(true);
    eventually_async(
        Duration::from_secs(2),
        "stopped instance unlisted",
        || async { !direct.listed("stopping").await },
    )
    .await;
    assert!(!stopping.fleet.connected());

    // Cut off: the lease is no longer known alive within lease_ttl (+1 s).
    relay.black_hole();
    let cut_at = Instant::now();
    eventually(
        TTL + Duration::from_secs(1),
        "lease_alive turns false",
        || !cut.fleet.lease_alive(),
    )
    .await;
    assert!(!cut.fleet.connected());
    assert!(cut_at.elapsed() <= TTL + Duration::from_secs(1));
    eventually(Duration::from_secs(1), "connected gauge 0", || {
        common::sample_value(&cut.metrics_text(), "failway_fleet_connected") == Some(0.0)
    })
    .await;
    // etcd lets the lease lapse too, and the registration with it.
    eventually_async(
        TTL + Duration::from_secs(3),
        "cut instance unlisted",
        || async { !direct.listed("cut").await },
    )
    .await;
    // The fleet moves on meanwhile; the cut instance keeps what it last saw.
    won(&direct.fleet, Some(1), Mode::FailoverReadWrite).await;
    assert_eq!(
        cut.epoch(),
        Some(1),
        "last record seen is kept while cut off"
    );
    assert!(matches!(
        cut.fleet
            .compare_and_swap(Some(2), &state(Mode::Primary), "cut", "x")
            .await,
        Err(FleetError::Timeout { .. } | FleetError::Etcd(_))
    ));

    relay.restore();
    eventually(
        Duration::from_secs(8),
        "lease alive and synced again",
        || cut.fleet.lease_alive() && cut.fleet.connected(),
    )
    .await;
    assert_eq!(cut.epoch(), Some(2), "sees the record again");
    // Its last report comes back with the new lease.
    eventually_async(
        Duration::from_secs(3),
        "cut instance listed again",
        || async { direct.listed("cut").await },
    )
    .await;
}

#[tokio::test]
async fn etcd_killed_and_restarted_is_reconnected() {
    let Some(mut etcd) = Etcd::start().await else {
        return;
    };
    let a = Handle::start(&etcd.endpoint(), "a").await;
    won(&a.fleet, None, Mode::FailoverReadOnly).await;
    eventually(Duration::from_secs(5), "a connected", || {
        a.fleet.connected()
    })
    .await;

    etcd.kill();
    eventually(TTL + Duration::from_secs(1), "a disconnected", || {
        !a.fleet.connected()
    })
    .await;
    assert_eq!(a.epoch(), Some(1), "last record kept");
    assert!(a
        .fleet
        .compare_and_swap(Some(1), &state(Mode::Primary), "a", "x")
        .await
        .is_err());
    assert_eq!(a.transitions("error"), 1);

    // Starting while etcd is down is not an error; it just is not connected.
    let late = Handle::start(&etcd.endpoint(), "late").await;
    assert!(!late.fleet.connected());
    assert_eq!(late.epoch(), None);

    etcd.restart().await;
    for h in [&a, &late] {
        eventually(
            Duration::from_secs(10),
            "reconnected with the record",
            || h.fleet.connected() && h.epoch() == Some(1),
        )
        .await;
    }
    let second = won(&late.fleet, Some(1), Mode::FailoverReadWrite).await;
    assert_eq!(second.epoch, 2);
    eventually(Duration::from_secs(1), "a follows", || a.epoch() == Some(2)).await;
}

/// etcd holds `first` as written, and a record put by hand (epoch 2)
/// reaches `h`'s watch.
async fn stored_and_followed(etcd: &Etcd, h: &Handle, first: &FleetRecord) {
    let (value, _) = etcd.get(KEY).await.expect("record stored");
    assert_eq!(&FleetRecord::from_json(&value).expect("json"), first);
    let by_hand = FleetRecord::new(
        2,
        state(Mode::FailoverReadWrite),
        "operator",
        "y",
        SystemTime::now(),
    );
    etcd.put(KEY, by_hand.to_json().expect("json")).await;
    eventually(
        Duration::from_secs(2),
        "the watch follows a change by hand",
        || h.epoch() == Some(2),
    )
    .await;
}

#[tokio::test]
async fn authenticated_etcd_is_used_with_the_password_from_a_file() {
    let Some(mut etcd) = Etcd::start().await else {
        return;
    };
    etcd.enable_auth("root-pw", "failway", "fleet-pw-1").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("etcd-password");
    std::fs::write(&password_file, "not-the-password\n").expect("write password");
    let mut cfg = config(&[&etcd.endpoint()]);
    cfg.username = Some("failway".to_owned());
    cfg.password_file = Some(password_file.clone());

    // A wrong password: never connected, and the error says why without
    // the password in it.
    let a = Handle::start_with(&cfg, "a").await;
    let err = a
        .fleet
        .compare_and_swap(None, &state(Mode::FailoverReadOnly), "a", "x")
        .await
        .expect_err("wrong password refused");
    let text = failway::upstream::client::error_chain(&err);
    assert!(
        text.contains("authentication as fleet.username \"failway\" failed"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(!a.fleet.connected());

    // Without credentials etcd refuses too.
    let anonymous = Handle::start(&etcd.endpoint(), "anonymous").await;
    assert!(anonymous
        .fleet
        .compare_and_swap(None, &state(Mode::FailoverReadOnly), "anonymous", "x")
        .await
        .is_err());

    // The file is read at each authentication: the right password is
    // picked up without a restart, and everything works as without auth.
    std::fs::write(&password_file, "fleet-pw-1\n").expect("write password");
    eventually(Duration::from_secs(5), "a connects", || a.fleet.connected()).await;
    let first = won(&a.fleet, None, Mode::FailoverReadOnly).await;
    let b = Handle::start_with(&cfg, "b").await;
    eventually(Duration::from_secs(5), "b follows", || {
        b.fleet.connected() && b.epoch() == Some(1)
    })
    .await;
    b.fleet.report(&report()).await.expect("report");
    eventually_async(Duration::from_secs(2), "b listed", || a.listed("b")).await;
    // A change by hand reaches b's watch through the authenticated stream.
    stored_and_followed(&etcd, &b, &first).await;
}

#[tokio::test]
async fn etcd_over_tls_with_a_client_certificate() {
    use common::tls_upstream::{write_pem, TestCa};
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("etcd test CA");
    let server = ca.server_and_client("etcd", &["127.0.0.1", "localhost"]);
    let client = ca.client("failway");
    let tls = common::etcd::EtcdTls {
        port: common::etcd::free_port(),
        cert: write_pem(dir.path(), "server.pem", &server.cert_pem),
        key: write_pem(dir.path(), "server-key.pem", &server.key_pem),
        ca: write_pem(dir.path(), "ca.pem", &ca.pem()),
    };
    let ca_file = tls.ca.clone();
    let Some(etcd) = Etcd::start_with(Some(tls)).await else {
        return;
    };
    let mut cfg = config(&[&etcd.tls_endpoint()]);
    cfg.tls = Some(failway::config::UpstreamTls {
        ca: Some(ca_file.clone()),
        client_cert: Some(write_pem(dir.path(), "client.pem", &client.cert_pem)),
        client_key: Some(write_pem(dir.path(), "client-key.pem", &client.key_pem)),
        server_name: None,
    });
    let a = Handle::start_with(&cfg, "a").await;
    eventually(Duration::from_secs(5), "a connects over TLS", || {
        a.fleet.connected()
    })
    .await;
    let first = won(&a.fleet, None, Mode::FailoverReadOnly).await;
    stored_and_followed(&etcd, &a, &first).await;

    // Without the client certificate etcd refuses the handshake.
    let mut no_cert = cfg.clone();
    if let Some(t) = no_cert.tls.as_mut() {
        t.client_cert = None;
        t.client_key = None;
    }
    let b = Handle::start_with(&no_cert, "b").await;
    assert!(
        b.fleet.instances().await.is_err(),
        "no client certificate, no etcd"
    );
    assert!(!b.fleet.connected());

    // A CA that did not sign etcd's certificate: refused by failway.
    let other = TestCa::new("another CA");
    let mut wrong_ca = cfg.clone();
    if let Some(t) = wrong_ca.tls.as_mut() {
        t.ca = Some(write_pem(dir.path(), "other-ca.pem", &other.pem()));
    }
    let c = Handle::start_with(&wrong_ca, "c").await;
    let err = c.fleet.instances().await.expect_err("unknown CA refused");
    assert!(
        failway::upstream::client::error_chain(&err).contains("certificate"),
        "{}",
        failway::upstream::client::error_chain(&err)
    );
}

#[tokio::test]
async fn endpoints_come_from_a_file_and_a_dead_one_is_skipped() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("endpoints");
    // The first member is down: failway moves on to the next.
    let dead = format!("http://127.0.0.1:{}", common::etcd::free_port());
    std::fs::write(
        &file,
        format!("# from a Secret\n{dead}\n{}\n", etcd.endpoint()),
    )
    .expect("write");
    let mut cfg = config(&[]);
    cfg.endpoints_file = Some(file.clone());
    let a = Handle::start_with(&cfg, "a").await;
    eventually(
        Duration::from_secs(8),
        "a connects through the second endpoint",
        || a.fleet.connected(),
    )
    .await;
    won(&a.fleet, None, Mode::FailoverReadOnly).await;

    // An unreadable or empty file is refused at start, naming the key.
    std::fs::write(&file, "# nothing\n").expect("write");
    let registry = prometheus::Registry::new();
    let (_stop, stop_rx) = watch::channel(false);
    let err = Fleet::start(
        &cfg,
        "b".to_owned(),
        FleetMetrics::register(&registry).expect("metrics"),
        stop_rx,
    )
    .await
    .err()
    .expect("empty endpoints file refused");
    assert!(err.to_string().contains("fleet.endpoints_file"), "{err}");
    assert!(err.to_string().contains("lists no endpoint"), "{err}");
}
