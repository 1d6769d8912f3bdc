//! Shadow mode end to end: failway decides as it would with automatic
//! failover, reports it, and keeps every request on the primary, down or
//! not; a reload out of shadow mode makes it act again.

use super::outage::{admin, mode, status, wait_healthy, wait_mode, writes, T};
use crate::common::eventually;
use crate::common::failway::{self as fw, send};
use crate::common::upstream::{Behavior, FakeUpstream};
use failway::app::StartOptions;
use failway::config::Config;
use failway::failover::machine::Mode;

/// Requests the replica saw other than its health checks.
fn traffic(up: &FakeUpstream) -> usize {
    up.requests().iter().filter(|r| r.uri != "/health").count()
}

fn write_config(path: &std::path::Path, primary: &str, replica: &str, failover: &str) {
    let text = fw::config_text(primary, replica, &fw::fast_health(failover));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

#[tokio::test]
async fn shadow_mode_reports_the_failover_and_keeps_traffic_on_the_primary() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failway.toml");
    write_config(&path, &primary.url(), &replica.url(), "mode = \"shadow\"");
    let options = StartOptions {
        config_path: Some(path.clone()),
        ..Default::default()
    };
    let app = failway::app::start_with(Config::load(&path).unwrap(), options)
        .await
        .expect("failway starts");
    wait_healthy(&app).await;
    let url = fw::url(&app);
    assert_eq!(status(&app).await["shadow"]["mode"], "primary");

    primary.set_behavior(Behavior::ResetOnAccept);
    eventually(T, "the shadow mode to be failover_read_only", || {
        app.failover.snapshot().shadow == Some(Mode::FailoverReadOnly)
    })
    .await;
    let st = status(&app).await;
    assert_eq!(st["mode"], "primary", "{st}");
    assert_eq!(st["shadow"]["mode"], "failover_read_only", "{st}");

    // Reads stay on the primary and fail; writes are not refused.
    let read = send(&fw::client(), "GET", &format!("{url}/api/v2/keys"), &[], "").await;
    assert!(
        read.status >= 500,
        "the read failed on the primary: {}",
        read.status
    );
    assert_ne!(read.header("failway-region"), Some("replica"));
    let write = send(
        &fw::client(),
        "POST",
        &format!("{url}/api/v2/keys"),
        &[],
        "{}",
    )
    .await;
    assert_ne!(write.status, 409, "nothing is refused in shadow mode");
    assert_eq!(traffic(&replica), 0, "no request reached the replica");
    assert_eq!(writes(&replica), 0);

    let samples = [
        (r#"failway_mode{mode="primary",service="default"}"#, 1.0),
        (
            r#"failway_shadow_mode{mode="failover_read_only",service="default"}"#,
            1.0,
        ),
        (
            r#"failway_shadow_mode{mode="primary",service="default"}"#,
            0.0,
        ),
        (
            r#"failway_shadow_transitions_total{from="primary",service="default",to="failover_read_only"}"#,
            1.0,
        ),
    ];
    for (sample, want) in samples {
        assert_eq!(fw::metric(&app, sample).await, want, "{sample}");
    }

    // An operator failover would change the mode and move nothing.
    let body = r#"{"reason": "try it"}"#;
    let ans = admin(&app, "failover", body, None).await;
    assert_eq!(ans.status, 409, "{:?}", ans.json());
    assert_eq!(ans.json()["code"], "shadow_mode");
    let message = ans.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("failover.mode is \"shadow\""), "{message}");
    let drill = r#"{"reason": "rehearsal", "duration": "2s"}"#;
    let ans = admin(&app, "drill", drill, None).await;
    assert_eq!(ans.status, 409, "{:?}", ans.json());
    assert_eq!(ans.json()["code"], "shadow_mode");
    assert_eq!(mode(&app), Mode::Primary);

    // Out of shadow mode, failway acts on the outage it sees.
    write_config(&path, &primary.url(), &replica.url(), "mode = \"auto\"");
    wait_mode(&app, Mode::FailoverReadOnly).await;
    assert_eq!(app.failover.snapshot().shadow, None);
    let read = send(&fw::client(), "GET", &format!("{url}/api/v2/keys"), &[], "").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("failway-region"), Some("replica"));
    let metrics = fw::req("GET", &format!("http://{}/metrics", app.admin_addr))
        .send()
        .await;
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        !metrics.contains("failway_shadow_mode{"),
        "the shadow gauge is gone outside shadow mode"
    );
    app.shutdown().await;
}
