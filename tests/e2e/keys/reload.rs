//! A reload that adds, renames or remaps key pairs takes effect without a
//! restart: the new pair is checked, the old one's series are gone.

use std::path::Path;
use std::time::Duration;

use failway::app::{Running, StartOptions};
use failway::config::Config;

use super::interchange::{import, metrics_text, region, P_INSTANCE, R_INSTANCE, TOKEN};
use crate::common;
use crate::common::failway as fw;

fn write(path: &Path, primary: &str, replica: &str, extra: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, fw::config_text(primary, replica, extra)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn pairs(name: &str, pk: &str, rk: &str, token: &Path) -> String {
    format!(
        r#"
[[rewrite]]
header = "bluemix-instance"
primary = "{P_INSTANCE}"
replica = "{R_INSTANCE}"

[[key_pairs]]
name = "{name}"
primary = "{pk}"
replica = "{rk}"

[key_check]
interval = "500ms"
authorization_file = "{}"
"#,
        token.display()
    )
}

async fn gauge(app: &Running, pair: &str) -> Option<f64> {
    let sample = format!(r#"failway_key_pair_interchangeable{{pair="{pair}",service="default"}}"#);
    common::sample_value(&metrics_text(app).await, &sample)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_pairs_checked() {
    let (primary, replica) = (
        region("primary", P_INSTANCE).await,
        region("replica", R_INSTANCE).await,
    );
    let pk = import(&primary, P_INSTANCE, &[3; 32]).await;
    let rk = import(&replica, R_INSTANCE, &[3; 32]).await;
    let other = import(&replica, R_INSTANCE, &[4; 32]).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, token) = (dir.path().join("failway.toml"), dir.path().join("kp-token"));
    std::fs::write(&token, TOKEN).unwrap();
    let (p, r) = (
        format!("http://{}", primary.addr()),
        format!("http://{}", replica.addr()),
    );
    write(&file, &p, &r, "");
    let options = StartOptions {
        config_path: Some(file.clone()),
        active_health_checks: false,
        ..Default::default()
    };
    let app = failway::app::start_with(Config::load(&file).unwrap(), options)
        .await
        .expect("failway starts");
    assert_eq!(gauge(&app, "root").await, None, "no pair, no series");

    write(&file, &p, &r, &pairs("root", &pk, &rk, &token));
    assert!(app.reload().await);
    let t = Duration::from_secs(10);
    common::eventually_async(t, "the added pair checked", || async {
        gauge(&app, "root").await == Some(1.0)
    })
    .await;

    // Renamed and pointed at a copy with other material.
    write(&file, &p, &r, &pairs("renamed", &pk, &other, &token));
    assert!(app.reload().await);
    common::eventually_async(t, "the remapped pair out of step", || async {
        gauge(&app, "renamed").await == Some(0.0)
    })
    .await;
    assert_eq!(
        gauge(&app, "root").await,
        None,
        "the old pair's series are gone"
    );
    let status = fw::req("GET", &format!("http://{}/status", app.admin_addr))
        .send()
        .await;
    let listed = &status.json()["key_pairs"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["name"], "renamed");
    app.shutdown().await;
    primary.stop().await;
    replica.stop().await;
}
