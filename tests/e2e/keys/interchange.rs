//! Two `failway sim` regions hold a duplicated key (the same imported
//! material, other key IDs and instances). failway reports the pair
//! interchangeable; a rotation of the primary's key with new material
//! only puts it out of step (`unwrap_refused`) within one interval, and
//! `failway ctl keys verify` says so at once; rotating the duplicate with
//! the same material brings it back. A refused token is `auth_error` and
//! a replica down is `region_down`, both leaving the gauge as it was.
//! The check traffic never shows in `failway_requests_total`.

use std::process::Output;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use failway::tools::sim::{SimArgs, Simulator};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common;
use crate::common::failway as fw;

pub(super) const TOKEN: &str = "kp-test-token-7f3a";
pub(super) const P_INSTANCE: &str = "4f1c0000-aaaa-4bbb-8ccc-000000000001";
pub(super) const R_INSTANCE: &str = "9a2b0000-aaaa-4bbb-8ccc-000000000002";
const GAUGE: &str = r#"failway_key_pair_interchangeable{pair="payments-root",service="default"}"#;

fn checks(result: &str) -> String {
    format!(
        r#"failway_key_pair_checks_total{{pair="payments-root",result="{result}",service="default"}}"#
    )
}

pub(super) async fn region(name: &str, instance: &str) -> Simulator {
    let mut args = SimArgs::ephemeral(name);
    args.instance = instance.to_owned();
    args.token = Some(TOKEN.to_owned());
    Simulator::start(args).await.expect("simulator starts")
}

async fn kp(sim: &Simulator, instance: &str, path: &str, body: Value) -> Value {
    let a = fw::req("POST", &format!("http://{}{path}", sim.addr()))
        .header("bluemix-instance", instance)
        .header("authorization", &format!("Bearer {TOKEN}"))
        .header("prefer", "return=representation")
        .body(body.to_string())
        .send()
        .await;
    assert!((200..300).contains(&a.status), "{path}: {}", a.status);
    a.json()
}

/// Imports a root key with `material`; returns its id.
pub(super) async fn import(sim: &Simulator, instance: &str, material: &[u8]) -> String {
    let res = json!({"type": "application/vnd.ibm.kms.key+json", "name": "payments-root",
        "extractable": false, "payload": STANDARD.encode(material)});
    let body = json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json",
        "collectionTotal": 1}, "resources": [res]});
    let v = kp(sim, instance, "/api/v2/keys", body).await;
    v["resources"][0]["id"].as_str().unwrap().to_owned()
}

pub(super) async fn rotate(sim: &Simulator, instance: &str, id: &str, material: &[u8]) {
    let body = json!({"payload": STANDARD.encode(material)});
    kp(
        sim,
        instance,
        &format!("/api/v2/keys/{id}/actions/rotate"),
        body,
    )
    .await;
}

async fn ctl_verify(admin: std::net::SocketAddr) -> Output {
    let admin = format!("http://{admin}");
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_failway"))
            .args(["ctl", "--admin", &admin, "keys", "verify"])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub(super) async fn metrics_text(app: &failway::app::Running) -> String {
    let a = fw::req("GET", &format!("http://{}/metrics", app.admin_addr))
        .send()
        .await;
    String::from_utf8_lossy(&a.body).into_owned()
}

/// Waits until the counter of `result` has moved past `from`.
async fn counted(app: &failway::app::Running, result: &str, from: f64, within: Duration) {
    let sample = checks(result);
    common::eventually_async(within, &format!("a check counted as {result}"), || async {
        fw::metric(app, &sample).await > from
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_of_one_copy_only_is_reported_before_the_outage() {
    let (primary, replica) = (
        region("primary", P_INSTANCE).await,
        region("replica", R_INSTANCE).await,
    );
    let (old, new) = ([7u8; 32], [8u8; 32]);
    let pk = import(&primary, P_INSTANCE, &old).await;
    let rk = import(&replica, R_INSTANCE, &old).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("kp-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let extra = format!(
        r#"
[[rewrite]]
header = "bluemix-instance"
primary = "{P_INSTANCE}"
replica = "{R_INSTANCE}"

[[rewrite]]
path_segment = true
primary = "{pk}"
replica = "{rk}"

[[key_pairs]]
name = "payments-root"
primary = "{pk}"
replica = "{rk}"

[key_check]
interval = "1s"
authorization_file = "{}"
"#,
        token.display()
    );
    let app = fw::start(fw::config(
        &format!("http://{}", primary.addr()),
        &format!("http://{}", replica.addr()),
        &extra,
    ))
    .await;
    let t = Duration::from_secs(10);
    common::eventually_async(t, "the pair judged interchangeable", || async {
        fw::metric(&app, GAUGE).await == 1.0
    })
    .await;

    // The primary's key rotated with new material, the duplicate not.
    rotate(&primary, P_INSTANCE, &pk, &new).await;
    let rotated = Instant::now();
    let refused = fw::metric(&app, &checks("unwrap_refused")).await;
    counted(&app, "unwrap_refused", refused, t).await;
    assert_eq!(fw::metric(&app, GAUGE).await, 0.0);
    // Jitter keeps each next check within 80-100% of an interval; the
    // slack is for a loaded machine.
    assert!(
        rotated.elapsed() < Duration::from_millis(2500),
        "{:?}",
        rotated.elapsed()
    );
    let status = fw::req("GET", &format!("http://{}/status", app.admin_addr))
        .send()
        .await;
    let pair = &status.json()["key_pairs"][0];
    assert_eq!(pair["result"], "unwrap_refused", "{pair}");
    assert_eq!(pair["http_status"], 422, "{pair}");
    assert_eq!(pair["error_code"], "UNPROCESSABLE_CIPHERTEXT_ERR", "{pair}");
    assert_ne!(
        pair["versions"]["primary"], pair["versions"]["replica"],
        "{pair}"
    );

    let out = ctl_verify(app.admin_addr).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        table.contains("unwrap_refused") && table.contains("UNPROCESSABLE_CIPHERTEXT_ERR"),
        "{table}"
    );

    // The duplicate rotated with the same material: in step again.
    rotate(&replica, R_INSTANCE, &rk, &new).await;
    common::eventually_async(t, "the pair interchangeable again", || async {
        fw::metric(&app, GAUGE).await == 1.0
    })
    .await;
    let out = ctl_verify(app.admin_addr).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status = fw::req("GET", &format!("http://{}/status", app.admin_addr))
        .send()
        .await;
    let pair = &status.json()["key_pairs"][0];
    assert_eq!(
        pair["versions"]["primary"], pair["versions"]["replica"],
        "{pair}"
    );

    // A refused token says nothing about the keys: the gauge stays.
    std::fs::write(&token, "a-wrong-token-of-other-length\n").unwrap();
    let auth = fw::metric(&app, &checks("auth_error")).await;
    counted(&app, "auth_error", auth, t).await;
    assert_eq!(fw::metric(&app, GAUGE).await, 1.0);
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();

    // The replica down: skipped, the gauge as it was.
    replica.stop().await;
    let down = fw::metric(&app, &checks("region_down")).await;
    counted(&app, "region_down", down, t).await;
    assert_eq!(fw::metric(&app, GAUGE).await, 1.0);

    let text = metrics_text(&app).await;
    for line in text
        .lines()
        .filter(|l| l.starts_with("failway_requests_total"))
    {
        assert!(
            line.ends_with(" 0"),
            "check traffic is no client traffic: {line}"
        );
    }
    assert!(!text.contains(TOKEN));
    app.shutdown().await;
    primary.stop().await;
}
