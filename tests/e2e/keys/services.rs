//! `[[service.key_pairs]]`: each service checks its own pairs, and its
//! series carry its name.

use std::path::Path;
use std::time::Duration;

use failway::config::Config;

use super::interchange::{import, metrics_text, region, P_INSTANCE, R_INSTANCE, TOKEN};
use crate::common;
use crate::common::failway as fw;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_block_checks_its_own_pairs_under_its_name() {
    let (primary, replica) = (
        region("primary", P_INSTANCE).await,
        region("replica", R_INSTANCE).await,
    );
    let pk = import(&primary, P_INSTANCE, &[5; 32]).await;
    let rk = import(&replica, R_INSTANCE, &[5; 32]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("kp-token");
    std::fs::write(&token, TOKEN).unwrap();
    let text = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[key_check]
interval = "300ms"
authorization_file = "{token}"

[[service]]
name = "kp-us"
[service.upstreams.primary]
url = "http://{p}"
[service.upstreams.replica]
url = "http://{r}"
[[service.rewrite]]
header = "bluemix-instance"
primary = "{P_INSTANCE}"
replica = "{R_INSTANCE}"
[[service.key_pairs]]
name = "root"
primary = "{pk}"
replica = "{rk}"
"#,
        token = token.display(),
        p = primary.addr(),
        r = replica.addr(),
    );
    let cfg = Config::from_toml_str(&text, Path::new(".")).expect("valid");
    let app = fw::start(cfg).await;
    let sample = r#"failway_key_pair_interchangeable{pair="root",service="kp-us"}"#;
    common::eventually_async(Duration::from_secs(10), "kp-us's pair checked", || async {
        common::sample_value(&metrics_text(&app).await, sample) == Some(1.0)
    })
    .await;
    let verify = fw::req(
        "POST",
        &format!("http://{}/admin/keys/verify", app.admin_addr),
    )
    .header("content-type", "application/json")
    .body(r#"{"service": "kp-us"}"#)
    .send()
    .await;
    assert_eq!(verify.status, 200);
    let v = verify.json();
    assert_eq!(v["service"], "kp-us");
    assert_eq!(v["interchangeable"], true, "{v}");
    let unknown = fw::req(
        "POST",
        &format!("http://{}/admin/keys/verify", app.admin_addr),
    )
    .header("content-type", "application/json")
    .body(r#"{"service": "kp-eu"}"#)
    .send()
    .await;
    assert_eq!(unknown.status, 404, "an unknown service is named");
    let status = fw::req("GET", &format!("http://{}/status", app.admin_addr))
        .send()
        .await;
    assert_eq!(
        status.json()["services"]["kp-us"]["key_pairs"][0]["result"],
        "ok"
    );
    app.shutdown().await;
    primary.stop().await;
    replica.stop().await;
}
