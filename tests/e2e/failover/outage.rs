//! End-to-end failover: failway with live health probes between two fake
//! regions on loopback, driven through outages, the read-only window, the
//! replica-writes latch, operator actions and a restart.

use crate::common;

use std::time::{Duration, Instant};

use common::failway::{self as fw, send, Answer};
use common::upstream::{Behavior, FakeUpstream, Response};
use common::{eventually, eventually_async};
use failway::app::Running;
use failway::failover::machine::Mode;
use failway::region::Region;

pub(super) const T: Duration = Duration::from_secs(10);

/// Fast probes: a region is judged down after 2 failures 100 ms apart.
fn fast(extra: &str) -> String {
    fw::fast_health(extra)
}

pub(super) async fn start(
    primary: &FakeUpstream,
    replica: &FakeUpstream,
    extra: &str,
    state: Option<&std::path::Path>,
) -> Running {
    let mut text = fast(extra);
    if let Some(p) = state {
        text.push_str(&format!("\n[state]\npath = \"{}\"\n", p.display()));
    }
    fw::start_probing(fw::config(&primary.url(), &replica.url(), &text)).await
}

pub(super) fn mode(app: &Running) -> Mode {
    app.failover.snapshot().mode
}

pub(super) async fn wait_mode(app: &Running, want: Mode) {
    eventually(T, &format!("mode {}", want.as_str()), || mode(app) == want).await;
}

pub(super) async fn wait_healthy(app: &Running) {
    eventually(T, "both regions probed healthy", || {
        let s = app.failover.snapshot();
        s.regions
            .iter()
            .all(|r| r.health == failway::failover::machine::Health::Healthy)
    })
    .await;
}

pub(super) async fn admin(app: &Running, action: &str, body: &str, token: Option<&str>) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    send(
        &fw::client(),
        "POST",
        &format!("http://{}/admin/{action}", app.admin_addr),
        &headers,
        body.to_owned(),
    )
    .await
}

pub(super) async fn status(app: &Running) -> serde_json::Value {
    send(
        &fw::client(),
        "GET",
        &format!("http://{}/status", app.admin_addr),
        &[],
        "",
    )
    .await
    .json()
}

pub(super) fn writes(up: &FakeUpstream) -> usize {
    up.requests()
        .iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .count()
}

#[tokio::test]
async fn primary_outage_fails_over_reads_and_refuses_writes_while_read_only() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "read_only_window = \"6h\"", None).await;
    wait_healthy(&app).await;
    let url = fw::url(&app);

    primary.set_behavior(Behavior::ResetOnAccept);
    let killed = Instant::now();
    wait_mode(&app, Mode::FailoverReadOnly).await;
    let detected = killed.elapsed();
    // unhealthy_threshold * interval + timeout + interval (+ jitter slack).
    assert!(
        detected < Duration::from_millis(2 * 110 + 80 + 110 + 300),
        "{detected:?}"
    );

    let read = send(
        &fw::client(),
        "GET",
        &format!("{url}/api/v2/keys"),
        &[("bluemix-instance", "i")],
        "",
    )
    .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("failway-region"), Some("replica"));
    let wrap = send(
        &fw::client(),
        "POST",
        &format!("{url}/api/v2/keys/k1/actions/wrap"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(wrap.status, 200, "wrap is a read and keeps working");
    assert_eq!(wrap.header("failway-region"), Some("replica"));

    let replica_writes_before = writes(&replica) - 1; // the wrap
    for (method, path) in [
        ("POST", "/api/v2/keys"),
        ("DELETE", "/api/v2/keys/k1"),
        ("POST", "/api/v2/keys/k1/actions/rotate"),
        ("PUT", "/api/v2/keys/k1/policies?policy=rotation"),
    ] {
        let ans = send(
            &fw::client(),
            method,
            &format!("{url}{path}"),
            &[("correlation-id", "cid-blocked")],
            "{\"metadata\":{}}",
        )
        .await;
        assert_eq!(ans.status, 409, "{method} {path}");
        assert_eq!(
            ans.header("content-type"),
            Some("application/vnd.ibm.kms.error+json")
        );
        assert_eq!(ans.header("failway-mode"), Some("failover_read_only"));
        assert!(ans.header("failway-writes-enabled-at").is_some());
        assert!(
            ans.header("retry-after").is_none(),
            "Retry-After only with 503/429"
        );
        assert!(ans.header("failway-region").is_none());
        assert_eq!(ans.header("correlation-id"), Some("cid-blocked"));
        let v = ans.json();
        assert_eq!(
            v["resources"][0]["reasons"][0]["code"],
            "FAILWAY_READ_ONLY_FAILOVER_ERR"
        );
        assert_eq!(v["resources"][0]["reasons"][0]["status"], 409);
        assert!(v["message"]
            .as_str()
            .unwrap()
            .contains("read-only failover"));
        assert!(v["message"].as_str().unwrap().contains("expected back at"));
    }
    assert_eq!(
        writes(&replica),
        replica_writes_before + 1,
        "no write reached the replica"
    );
    let st = status(&app).await;
    assert_eq!(st["mode"], "failover_read_only");
    assert_eq!(st["regions"]["primary"]["health"], "unhealthy");
    assert!(st["regions"]["primary"]["last_error"].as_str().is_some());
    assert_eq!(st["transitions"][0]["trigger"], "health_check");
    app.shutdown().await;
}

#[tokio::test]
async fn a_blocked_write_is_answered_before_its_body_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "", None).await;
    wait_healthy(&app).await;
    let ans = admin(&app, "failover", r#"{"reason":"drill"}"#, None).await;
    assert_eq!(ans.status, 200);
    let mut s = tokio::net::TcpStream::connect(app.proxy_addr)
        .await
        .unwrap();
    s.write_all(
        b"POST /api/v2/keys HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n{\"partial\":",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 409"), "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"));
    assert_eq!(writes(&replica), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn writes_reach_the_replica_after_the_window_and_the_latch_blocks_failback() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "read_only_window = \"600ms\"", None).await;
    wait_healthy(&app).await;
    let url = fw::url(&app);
    primary.set_behavior(Behavior::ResetOnAccept);
    wait_mode(&app, Mode::FailoverReadOnly).await;
    wait_mode(&app, Mode::FailoverReadWrite).await;

    let ans = send(
        &fw::client(),
        "POST",
        &format!("{url}/api/v2/keys"),
        &[],
        "{\"k\":1}",
    )
    .await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.header("failway-region"), Some("replica"));
    assert_eq!(writes(&replica), 1);
    let st = status(&app).await;
    assert_eq!(st["replica_writes_latch"], true);

    // The primary comes back: no automatic failback over the latch.
    primary.set_behavior(Behavior::Respond(Response::ok("ok")));
    eventually(T, "primary healthy again", || {
        app.failover.snapshot().regions[0].health == failway::failover::machine::Health::Healthy
    })
    .await;
    // More probes than failback_after spans: the latch holds.
    fw::probes_evaluated(&app, Region::Primary, 9).await;
    assert_eq!(mode(&app), Mode::FailoverReadWrite);
    let st = status(&app).await;
    assert_eq!(st["failback_blocked"], "replica_writes");

    let refused = admin(&app, "failback", r#"{"reason":"primary is back"}"#, None).await;
    assert_eq!(refused.status, 409);
    assert_eq!(refused.json()["mode"], "failover_read_write");
    assert_eq!(refused.json()["code"], "replica_writes");
    let forced = admin(
        &app,
        "failback",
        r#"{"reason":"replica writes reconciled","force":true}"#,
        None,
    )
    .await;
    assert_eq!(forced.status, 200, "{:?}", forced.json());
    assert_eq!(mode(&app), Mode::Primary);
    let ans = send(
        &fw::client(),
        "POST",
        &format!("{url}/api/v2/keys"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(ans.header("failway-region"), Some("primary"));
    let st = status(&app).await;
    let last = st["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(last["reason"]
        .as_str()
        .unwrap()
        .starts_with("replica writes reconciled"));
    assert_eq!(last["trigger"], "operator");
    app.shutdown().await;
}

#[tokio::test]
async fn without_replica_writes_failback_happens_after_failback_after() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "", None).await;
    wait_healthy(&app).await;
    primary.set_behavior(Behavior::Respond(Response::status(503)));
    wait_mode(&app, Mode::FailoverReadOnly).await;
    primary.set_behavior(Behavior::Respond(Response::ok("ok")));
    let back = Instant::now();
    wait_mode(&app, Mode::Primary).await;
    assert!(
        back.elapsed() >= Duration::from_millis(400),
        "hysteresis: {:?}",
        back.elapsed()
    );
    let st = status(&app).await;
    let t = st["transitions"].as_array().unwrap();
    assert_eq!(t.last().unwrap()["trigger"], "failback");
    app.shutdown().await;
}

#[tokio::test]
async fn both_regions_down_means_no_failover_and_a_503_with_retry_after() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "", None).await;
    wait_healthy(&app).await;
    replica.set_behavior(Behavior::ResetOnAccept);
    eventually(T, "replica judged down", || {
        app.failover.snapshot().regions[1].is_down()
    })
    .await;
    primary.set_behavior(Behavior::ResetOnAccept);
    eventually(T, "primary judged down", || {
        app.failover.snapshot().regions[0].is_down()
    })
    .await;
    fw::probes_evaluated(&app, Region::Replica, 3).await;
    assert_eq!(
        mode(&app),
        Mode::Primary,
        "never fail over to an unhealthy replica"
    );
    let ans = send(
        &fw::client(),
        "GET",
        &format!("{}/x", fw::url(&app)),
        &[],
        "",
    )
    .await;
    assert_eq!(ans.status, 503);
    assert!(ans.header("retry-after").is_some());
    assert_eq!(
        ans.json()["resources"][0]["reasons"][0]["code"],
        "FAILWAY_NO_HEALTHY_REGION_ERR"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn operator_actions_conflicts_no_ops_and_holds() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "", None).await;
    wait_healthy(&app).await;
    let ans = admin(&app, "enable-writes", r#"{"reason":"x"}"#, None).await;
    assert_eq!(ans.status, 409);
    assert_eq!(ans.json()["mode"], "primary");
    let ans = admin(&app, "failover", r#"{}"#, None).await;
    assert_eq!(ans.status, 400, "a reason is required");
    assert!(ans.json()["error"].as_str().unwrap().starts_with("reason"));
    let ans = admin(&app, "failover", r#"{"reason":"x","forse":true}"#, None).await;
    assert_eq!(ans.status, 400, "unknown fields are named");
    assert!(ans.json()["error"].as_str().unwrap().contains("forse"));
    let ans = admin(&app, "failback", r#"{"reason":"already there"}"#, None).await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.json()["result"], "no_op");

    let ans = admin(
        &app,
        "failover",
        r#"{"reason":"planned maintenance"}"#,
        None,
    )
    .await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.json()["result"], "changed");
    assert_eq!(mode(&app), Mode::FailoverReadOnly);
    assert!(status(&app).await["read_only_deadline"].as_str().is_some());
    let ans = admin(&app, "failover", r#"{"reason":"again"}"#, None).await;
    assert_eq!(ans.json()["result"], "no_op");
    // An operator's failover holds even with a healthy primary, for more
    // probes than failback_after spans.
    fw::probes_evaluated(&app, Region::Primary, 9).await;
    assert_eq!(mode(&app), Mode::FailoverReadOnly);
    assert_eq!(status(&app).await["failback_blocked"], "operator_hold");
    let ans = admin(
        &app,
        "enable-writes",
        r#"{"reason":"maintenance runs long"}"#,
        None,
    )
    .await;
    assert_eq!(ans.status, 200);
    assert_eq!(mode(&app), Mode::FailoverReadWrite);
    let get = send(
        &fw::client(),
        "GET",
        &format!("http://{}/admin/failover", app.admin_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(get.status, 405);
    app.shutdown().await;
}

#[tokio::test]
async fn a_restart_keeps_the_mode_the_deadline_and_the_latch() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(
        &primary,
        &replica,
        "read_only_window = \"1h\"",
        Some(&state),
    )
    .await;
    wait_healthy(&app).await;
    admin(&app, "failover", r#"{"reason":"drill"}"#, None).await;
    let deadline = status(&app).await["read_only_deadline"].clone();
    assert!(deadline.is_string());
    app.shutdown().await;

    let app = start(
        &primary,
        &replica,
        "read_only_window = \"1h\"",
        Some(&state),
    )
    .await;
    let st = status(&app).await;
    assert_eq!(st["mode"], "failover_read_only");
    assert_eq!(
        st["read_only_deadline"], deadline,
        "the window is not reset"
    );
    let ans = admin(&app, "enable-writes", r#"{"reason":"go"}"#, None).await;
    assert_eq!(ans.status, 200);
    let w = send(
        &fw::client(),
        "POST",
        &format!("{}/api/v2/keys", fw::url(&app)),
        &[],
        "{}",
    )
    .await;
    assert_eq!(w.header("failway-region"), Some("replica"));
    app.shutdown().await;

    let app = start(
        &primary,
        &replica,
        "read_only_window = \"1h\"",
        Some(&state),
    )
    .await;
    let st = status(&app).await;
    assert_eq!(st["mode"], "failover_read_write");
    assert_eq!(
        st["replica_writes_latch"], true,
        "the latch is never forgotten"
    );
    let reasons: Vec<_> = st["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reason"].clone())
        .collect();
    assert!(reasons.contains(&serde_json::json!("drill")), "{reasons:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_state_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, "{\"mode\": \"prim").unwrap();
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let mut text = fast("");
    text.push_str(&format!("\n[state]\npath = \"{}\"\n", state.display()));
    let cfg = fw::config(&primary.url(), &replica.url(), &text);
    let err = failway::app::start(cfg).await.err().expect("refused");
    assert!(err.to_string().contains("corrupt state file"), "{err}");
}

#[tokio::test]
async fn admin_token_is_enforced_on_operator_actions() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-admin\n").unwrap();
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let mut cfg = fw::config(&primary.url(), &replica.url(), &fast(""));
    cfg.admin.token_file = Some(token);
    let app = fw::start_probing(cfg).await;
    let none = admin(&app, "failover", r#"{"reason":"x"}"#, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = admin(&app, "failover", r#"{"reason":"x"}"#, Some("guess")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(mode(&app), Mode::Primary);
    let right = admin(
        &app,
        "failover",
        r#"{"reason":"x","force":true}"#,
        Some("s3cret-admin"),
    )
    .await;
    assert_eq!(right.status, 200);
    // Reads need no token.
    let st = send(
        &fw::client(),
        "GET",
        &format!("http://{}/status", app.admin_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(st.status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_follow_the_mode() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "", None).await;
    wait_healthy(&app).await;
    let metrics = || async {
        String::from_utf8(
            send(
                &fw::client(),
                "GET",
                &format!("http://{}/metrics", app.admin_addr),
                &[],
                "",
            )
            .await
            .body
            .to_vec(),
        )
        .unwrap()
    };
    let m = metrics().await;
    let has = |m: &str, sample: &str, v: f64| common::sample_value(m, sample) == Some(v);
    assert!(has(
        &m,
        "failway_mode{mode=\"primary\",service=\"default\"}",
        1.0
    ));
    assert!(
        common::sample_value(&m, "failway_read_only_deadline_timestamp_seconds").is_none(),
        "absent without a deadline"
    );
    assert!(has(&m, "failway_region_healthy{region=\"replica\"}", 1.0));
    admin(&app, "failover", r#"{"reason":"drill"}"#, None).await;
    send(
        &fw::client(),
        "POST",
        &format!("{}/api/v2/keys", fw::url(&app)),
        &[],
        "{}",
    )
    .await;
    eventually_async(T, "metrics show the failover", || async {
        let m = metrics().await;
        has(&m, "failway_mode{mode=\"failover_read_only\"}", 1.0)
            && common::sample_value(&m, "failway_read_only_deadline_timestamp_seconds").is_some()
            && has(&m, "failway_mode_transitions_total{from=\"primary\",to=\"failover_read_only\",trigger=\"operator\"}", 1.0)
            && has(&m, "failway_writes_blocked_total{reason=\"read_only\"}", 1.0)
            && has(&m, "failway_failback_blocked{reason=\"operator_hold\"}", 1.0)
    })
    .await;
    app.shutdown().await;
}

/// Detection time, primary killed (connections refused) to the mode
/// switching: by the probes alone (no traffic), and with a client reading
/// every 20 ms (live-traffic detection, and when the first read is served
/// by the replica), for the default health settings and for
/// `interval = "1s"` (with `timeout = "500ms"`, since the timeout must stay
/// under the interval):
/// `cargo test --test e2e -- --ignored --nocapture measure_detection`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run by hand"]
async fn measure_detection_time() {
    for (label, health) in [
        (
            "default (interval 2s, timeout 1s, unhealthy_threshold 3)",
            "[health]\npath = \"/health\"\n",
        ),
        (
            "interval 1s, timeout 500ms",
            "[health]\npath = \"/health\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
        ),
    ] {
        for with_traffic in [false, true] {
            let primary = FakeUpstream::start().await;
            let replica = FakeUpstream::start().await;
            let app = fw::start_probing(fw::config(&primary.url(), &replica.url(), health)).await;
            eventually(Duration::from_secs(30), "both healthy", || {
                let s = app.failover.snapshot();
                s.regions
                    .iter()
                    .all(|r| r.health == failway::failover::machine::Health::Healthy)
            })
            .await;
            let url = format!("{}/api/v2/keys", fw::url(&app));
            primary.stop().await;
            let killed = Instant::now();
            let mut first_replica_read = None;
            let client = fw::client();
            while mode(&app) != Mode::FailoverReadOnly {
                if with_traffic {
                    let ans = send(&client, "GET", &url, &[], "").await;
                    if first_replica_read.is_none()
                        && ans.header("failway-region") == Some("replica")
                    {
                        first_replica_read = Some(killed.elapsed());
                    }
                }
                assert!(killed.elapsed() < Duration::from_secs(30), "no failover");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let traffic = if with_traffic {
                "reads every 20 ms"
            } else {
                "no traffic, probes only"
            };
            println!(
                "{label}, {traffic}: failover_read_only after {:?}; first read served by the replica after {:?}",
                killed.elapsed(),
                first_replica_read
            );
            app.shutdown().await;
        }
    }
}
