//! One gateway, many regional pairs: `[[service]]` blocks routed by host
//! and path, each failing over on its own.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::failway::{self as fw, Answer};
use common::upstream::{Behavior, FakeUpstream, Response};
use failway::app::{Running, StartOptions};
use failway::config::Config;

const T: Duration = Duration::from_secs(15);

/// One service's pair of fake regions.
struct Pair {
    primary: FakeUpstream,
    replica: FakeUpstream,
}

impl Pair {
    async fn start() -> Pair {
        let p = Pair {
            primary: FakeUpstream::start().await,
            replica: FakeUpstream::start().await,
        };
        for f in [&p.primary, &p.replica] {
            f.set_behavior(Behavior::Respond(Response::ok("ok")));
        }
        p
    }

    /// A `[[service]]` block for this pair.
    fn block(&self, name: &str, hosts: &str, extra: &str) -> String {
        format!(
            "[[service]]\nname = \"{name}\"\nhosts = [{hosts}]\n{extra}\n[service.upstreams.primary]\nurl = \"{}\"\n[service.upstreams.replica]\nurl = \"{}\"\n",
            self.primary.url(),
            self.replica.url()
        )
    }
}

fn listeners() -> &'static str {
    "[proxy]\nlisten = \"127.0.0.1:0\"\nmax_connections = 1000\n[admin]\nlisten = \"127.0.0.1:0\"\n"
}

fn config(text: &str) -> Config {
    Config::from_toml_str(text, Path::new(".")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A request to the gateway for `host`.
async fn to(app: &Running, method: &str, host: &str, path: &str) -> Answer {
    fw::req(method, &format!("{}{path}", fw::url(app)))
        .header("host", host)
        .body(if method == "POST" { "{}" } else { "" })
        .send()
        .await
}

async fn status(app: &Running) -> serde_json::Value {
    fw::req("GET", &format!("http://{}/status", app.admin_addr))
        .send()
        .await
        .json()
}

async fn mode_of(app: &Running, service: &str) -> String {
    status(app).await["services"][service]["mode"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

#[tokio::test]
async fn each_service_fails_over_on_its_own() {
    let (a, b) = (Pair::start().await, Pair::start().await);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let text = format!(
        "{}[state]\npath = \"{}\"\n{}\n{}\n{}",
        listeners(),
        state.display(),
        fw::fast_health("read_only_window = \"1h\""),
        a.block("a", "\"kp-a.test\"", ""),
        b.block("b", "\"kp-b.test\"", ""),
    );
    let app = fw::start_probing(config(&text)).await;
    common::eventually_async(T, "both services primary and probed", || async {
        let s = status(&app).await;
        ["a", "b"].iter().all(|n| {
            s["services"][n]["regions"]["primary"]["health"] == "healthy"
                && s["services"][n]["regions"]["replica"]["health"] == "healthy"
        })
    })
    .await;
    a.primary.stop().await;
    common::eventually_async(T, "a fails over", || async {
        mode_of(&app, "a").await == "failover_read_only"
    })
    .await;
    // A: reads from its replica, writes refused and never forwarded.
    let read = to(&app, "GET", "kp-a.test", "/api/v2/keys").await;
    assert_eq!(read.header("failway-region"), Some("replica"));
    let write = to(&app, "POST", "kp-a.test", "/api/v2/keys").await;
    assert_eq!(write.status, 409);
    assert!(a.replica.requests().iter().all(|r| r.method != "POST"));
    // B: nothing happened.
    let before = b.primary.request_count();
    for m in ["GET", "POST"] {
        let ans = to(&app, m, "kp-b.test", "/api/v2/keys").await;
        assert_eq!(
            (ans.status, ans.header("failway-region")),
            (200, Some("primary"))
        );
    }
    assert_eq!(b.primary.request_count(), before + 2);
    assert_eq!(
        b.replica
            .requests()
            .iter()
            .filter(|r| r.method != "GET" || r.uri != "/health")
            .count(),
        0
    );
    assert_eq!(mode_of(&app, "b").await, "primary");
    for (sample, want) in [
        (
            "failway_mode{mode=\"failover_read_only\",service=\"a\"}",
            1.0,
        ),
        ("failway_mode{mode=\"primary\",service=\"b\"}", 1.0),
        ("failway_writes_blocked_total{service=\"b\"}", 0.0),
        (
            "failway_region_healthy{region=\"primary\",service=\"b\"}",
            1.0,
        ),
    ] {
        assert_eq!(fw::metric(&app, sample).await, want, "{sample}");
    }

    // An operator action names its service; without one it is refused.
    let no_service = fw::admin_post(&app, "enable-writes", r#"{"reason":"t"}"#).await;
    assert_eq!(no_service.status, 400);
    assert!(String::from_utf8_lossy(&no_service.body).contains("a, b"));
    assert_eq!(
        fw::admin_post(&app, "enable-writes", r#"{"reason":"t","service":"x"}"#)
            .await
            .status,
        404
    );
    let ok = fw::admin_post(&app, "enable-writes", r#"{"reason":"t","service":"a"}"#).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(mode_of(&app, "a").await, "failover_read_write");
    assert_eq!(mode_of(&app, "b").await, "primary");
    let deadline = status(&app).await["services"]["a"]["failed_over_at"].clone();
    app.shutdown().await;

    // A restart keeps each service's state.
    let app = fw::start(config(&text)).await;
    let s = status(&app).await;
    assert_eq!(s["services"]["a"]["mode"], "failover_read_write");
    assert_eq!(s["services"]["a"]["failed_over_at"], deadline);
    assert_eq!(s["services"]["b"]["mode"], "primary");
    assert!(
        s.get("mode").is_none(),
        "no top-level mode with two services"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn hosts_and_path_prefixes_choose_the_service() {
    let (a, b, c) = (
        Pair::start().await,
        Pair::start().await,
        Pair::start().await,
    );
    let text = format!(
        "{}\n{}\n{}\n{}",
        listeners(),
        a.block("exact", "\"kp.test\", \"[::1]\"", ""),
        b.block("wild", "\"*.kms.test\"", "path_prefix = \"/api\""),
        c.block("rest", "", ""),
    );
    let app = fw::start(config(&text)).await;
    let who = |p: &Pair| p.primary.request_count();
    let cases = [
        ("kp.test", "/x", 0),
        ("KP.Test:8080", "/x", 0),
        ("[::1]:8443", "/x", 0),
        ("eu.kms.test", "/api", 1),
        ("a.b.kms.test", "/api/v2/keys", 1),
        ("eu.kms.test", "/apix", 2),
        ("kms.test", "/api", 2),
        ("other.test", "/", 2),
    ];
    for (host, path, want) in cases {
        let before = [who(&a), who(&b), who(&c)];
        let ans = to(&app, "GET", host, path).await;
        assert_eq!(ans.status, 200, "{host} {path}");
        let after = [who(&a), who(&b), who(&c)];
        let moved: Vec<usize> = (0..3).filter(|i| after[*i] != before[*i]).collect();
        assert_eq!(moved, [want], "{host} {path}");
    }
    app.shutdown().await;

    // Without a catch-all, an unknown host is answered by failway alone.
    let text = format!(
        "{}\n{}",
        listeners(),
        a.block("exact", "\"kp.test\"", "path_prefix = \"/api\"")
    );
    let app = fw::start(config(&text)).await;
    let bytes = a.primary.raw_byte_count();
    for (host, path) in [
        ("nope.test", "/api"),
        ("kp.test", "/apix"),
        ("kp.test", "/"),
    ] {
        let ans = to(&app, "GET", host, path).await;
        assert_eq!(ans.status, 404, "{host} {path}");
        assert_eq!(ans.header("content-type"), Some("application/problem+json"));
        assert_eq!(ans.json()["code"], "FAILWAY_NO_SERVICE");
        assert_eq!(ans.header("failway-region"), None);
    }
    assert_eq!(a.primary.raw_byte_count(), bytes, "0 bytes upstream");
    assert_eq!(
        fw::metric(&app, "failway_unrouted_requests_total").await,
        3.0
    );
    assert_eq!(fw::metric(&app, "failway_requests_total").await, 0.0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_reload_adds_a_service_under_load_without_failing_the_others() {
    let (a, b, c) = (
        Pair::start().await,
        Pair::start().await,
        Pair::start().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failway.toml");
    let two = format!(
        "{}\n{}\n{}",
        listeners(),
        a.block("a", "\"kp-a.test\"", ""),
        b.block("b", "\"kp-b.test\"", "")
    );
    std::fs::write(&path, &two).unwrap();
    let options = StartOptions {
        config_path: Some(path.clone()),
        active_health_checks: false,
        ..Default::default()
    };
    let app = Arc::new(
        failway::app::start_with(config(&two), options)
            .await
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = ["kp-a.test", "kp-b.test"]
        .into_iter()
        .map(|host| {
            let (app, stop, sent, failed) =
                (app.clone(), stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                let client = fw::client();
                while !stop.load(Ordering::Relaxed) {
                    let ans = fw::req("GET", &format!("{}/api/v2/keys", fw::url(&app)))
                        .header("host", host)
                        .send_on(&client)
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if ans.status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let three = format!("{two}\n{}", c.block("c", "\"kp-c.test\"", ""));
    std::fs::write(&path, &three).unwrap();
    assert!(app.reload().await, "the reload applies");
    let ans = to(&app, "GET", "kp-c.test", "/api/v2/keys").await;
    assert_eq!(
        (ans.status, ans.header("failway-region")),
        (200, Some("primary"))
    );
    assert_eq!(c.primary.request_count(), 1);
    assert_eq!(mode_of(&app, "c").await, "primary");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 20, "load ran ({sent} requests)");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {sent} requests");
    // Removing it again stops it; its requests are then unrouted.
    std::fs::write(&path, &two).unwrap();
    assert!(app.reload().await);
    assert_eq!(to(&app, "GET", "kp-c.test", "/").await.status, 404);
    assert_eq!(status(&app).await["services"].as_object().unwrap().len(), 2);
    let _ = Arc::try_unwrap(app).ok().map(|a| a.shutdown());
}

/// A CA and a certificate for both gateway names, as PEM files in `dir`;
/// returns the CA certificate.
fn tls_files(dir: &Path) -> rustls::pki_types::CertificateDer<'static> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let names = vec!["kp-a.test".to_owned(), "kp-b.test".to_owned()];
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca.der().clone()
}

/// Sends `GET /` with `host` over TLS whose SNI is `sni`; the status.
async fn over_tls(
    app: &Running,
    ca: &rustls::pki_types::CertificateDer<'static>,
    sni: &str,
    host: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(app.proxy_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn with_tls_the_server_name_and_the_host_must_name_one_service() {
    let (a, b) = (Pair::start().await, Pair::start().await);
    let dir = tempfile::tempdir().unwrap();
    let ca = tls_files(dir.path());
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = \"{0}/tls.crt\", key = \"{0}/tls.key\" }}\n[admin]\nlisten = \"127.0.0.1:0\"\n{1}\n{2}",
        dir.path().display(),
        a.block("a", "\"kp-a.test\"", ""),
        b.block("b", "\"kp-b.test\"", ""),
    );
    let app = fw::start(config(&text)).await;
    assert_eq!(over_tls(&app, &ca, "kp-a.test", "kp-a.test").await, 200);
    assert_eq!(
        over_tls(&app, &ca, "kp-b.test", "kp-b.test:8443").await,
        200
    );
    assert_eq!(over_tls(&app, &ca, "kp-a.test", "kp-b.test").await, 421);
    assert_eq!(a.primary.request_count() + b.primary.request_count(), 2);
    assert_eq!(
        fw::metric(&app, "failway_unrouted_requests_total").await,
        1.0
    );
    app.shutdown().await;
}

/// A's read-only window, latch and failback follow the single-pair rules
/// and touch nothing of B.
#[tokio::test]
async fn a_services_window_latch_and_failback_stay_its_own() {
    let (a, b) = (Pair::start().await, Pair::start().await);
    let text = format!(
        "{}\n{}\n{}\n{}",
        listeners(),
        fw::fast_health(""),
        a.block(
            "a",
            "\"kp-a.test\"",
            "[service.failover]\nread_only_window = \"1s\"\nfailback_after = \"400ms\""
        ),
        b.block("b", "\"kp-b.test\"", ""),
    );
    let app = fw::start_probing(config(&text)).await;
    common::eventually_async(T, "a probed healthy", || async {
        status(&app).await["services"]["a"]["regions"]["primary"]["health"] == "healthy"
    })
    .await;
    a.primary
        .set_behavior(Behavior::Respond(Response::status(503)));
    common::eventually_async(T, "a's window passes", || async {
        mode_of(&app, "a").await == "failover_read_write"
    })
    .await;
    let w = to(&app, "POST", "kp-a.test", "/api/v2/keys").await;
    assert_eq!(
        (w.status, w.header("failway-region")),
        (200, Some("replica"))
    );
    assert_eq!(
        status(&app).await["services"]["a"]["replica_writes_latch"],
        true
    );
    // A's primary heals: the latch holds A on its replica.
    a.primary
        .set_behavior(Behavior::Respond(Response::ok("ok")));
    fw::probes_evaluated(&app, failway::region::Region::Primary, 1).await;
    common::eventually_async(T, "a's primary healthy again", || async {
        status(&app).await["services"]["a"]["regions"]["primary"]["health"] == "healthy"
    })
    .await;
    // Nine more probes of A's primary span more than failback_after.
    fw::probes_evaluated(&app, failway::region::Region::Primary, 9).await;
    let s = status(&app).await;
    assert_eq!(
        s["services"]["a"]["mode"], "failover_read_write",
        "no failback over the latch"
    );
    assert_eq!(s["services"]["a"]["failback_blocked"], "replica_writes");
    assert_eq!(s["services"]["b"]["mode"], "primary");
    assert_eq!(s["services"]["b"]["replica_writes_latch"], false);
    let back = fw::admin_post(
        &app,
        "failback",
        r#"{"reason":"t","force":true,"service":"a"}"#,
    )
    .await;
    assert_eq!(back.status, 200);
    let s = status(&app).await;
    assert_eq!(s["services"]["a"]["mode"], "primary");
    assert_eq!(s["services"]["a"]["replica_writes_latch"], false);
    assert_eq!(
        s["services"]["b"]["transitions"].as_array().map(Vec::len),
        Some(0)
    );
    app.shutdown().await;
}

/// In fleet mode each service has its own shared record, at
/// `{fleet.key}/{service}`; one service's failover moves only its record.
#[tokio::test]
async fn each_service_shares_its_own_fleet_record() {
    let Some(etcd) = common::etcd::Etcd::start().await else {
        return;
    };
    let (a, b) = (Pair::start().await, Pair::start().await);
    let text = format!(
        "{}\n[fleet]\nendpoints = [\"{}\"]\nkey = \"/failway/gw\"\nlease_ttl = \"2s\"\ninstance_id = \"gw-0\"\n{}\n{}",
        listeners(),
        etcd.endpoint(),
        a.block("a", "\"kp-a.test\"", ""),
        b.block("b", "\"kp-b.test\"", ""),
    );
    let app = fw::start(config(&text)).await;
    for key in ["/failway/gw/a", "/failway/gw/b"] {
        common::eventually_async(T, key, || async { etcd.get(key).await.is_some() }).await;
    }
    let record = |key: &'static str| {
        let etcd = &etcd;
        async move {
            let (v, _) = etcd.get(key).await.expect("record");
            serde_json::from_slice::<serde_json::Value>(&v).expect("JSON record")
        }
    };
    let ans = fw::admin_post(&app, "failover", r#"{"reason":"t","service":"a"}"#).await;
    assert_eq!(ans.status, 200, "{:?}", String::from_utf8_lossy(&ans.body));
    common::eventually_async(T, "a's record moves", || async {
        record("/failway/gw/a")
            .await
            .to_string()
            .contains("failover_read_only")
    })
    .await;
    assert!(record("/failway/gw/b")
        .await
        .to_string()
        .contains("\"primary\""));
    assert!(
        etcd.get("/failway/gw").await.is_none(),
        "no record at the bare key"
    );
    assert_eq!(mode_of(&app, "b").await, "primary");
    app.shutdown().await;
}
