//! `GET /config` and `failway ctl config`: the configuration running now,
//! after reloads, secrets redacted, on the admin listener only and behind
//! the token when one is set.

use std::process::Command;
use std::time::Duration;

use crate::common;
use crate::common::failway as fw;
use crate::common::upstream::FakeUpstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_shows_the_running_config_after_a_reload_behind_the_token() {
    let primary = FakeUpstream::start().await;
    let replica = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "config-dump-token\n").unwrap();
    let probe_port = common::free_port();
    let extra = |timeout: &str| {
        format!(
            r#"
[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"
probe_listen = "127.0.0.1:{probe_port}"
[health]
headers = {{ "x-probe-secret" = "very-secret-probe-value" }}
[retry]
per_try_timeout = "{timeout}"
"#
        )
    };
    let path = dir.path().join("failway.toml");
    let text = |timeout: &str| {
        fw::config_text(&primary.url(), &replica.url(), "")
            .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "")
            + &extra(timeout)
    };
    std::fs::write(&path, text("7s")).unwrap();
    let cfg = failway::config::Config::load(&path).expect("valid");
    let options = failway::app::StartOptions {
        active_health_checks: false,
        config_path: Some(path.clone()),
        ..Default::default()
    };
    let app = failway::app::start_with(cfg, options)
        .await
        .expect("starts");
    let url = format!("http://{}/config", app.admin_addr);

    let refused = fw::req("GET", &url).send().await;
    assert_eq!(refused.status, 401);
    let probe = fw::req("GET", &format!("http://127.0.0.1:{probe_port}/config"))
        .header("authorization", "Bearer config-dump-token")
        .send()
        .await;
    assert_eq!(probe.status, 404, "not on the probe listener");

    let get = || async {
        let ans = fw::req("GET", &url)
            .header("authorization", "Bearer config-dump-token")
            .send()
            .await;
        assert_eq!(ans.status, 200);
        String::from_utf8(ans.body.to_vec()).unwrap()
    };
    let first = get().await;
    assert!(first.contains("per_try_timeout = \"7s\""), "{first}");
    assert!(first.starts_with("# loaded_at = "), "{first}");
    assert!(!first.contains("very-secret-probe-value"), "{first}");
    assert!(!first.contains("config-dump-token"), "{first}");
    assert!(
        first.contains("admin-token"),
        "the token file's path is shown"
    );
    toml::from_str::<toml::Table>(&first).expect("the answer is TOML");

    std::fs::write(&path, text("9s")).unwrap();
    assert!(app.reload().await, "the reload applies");
    let second = get().await;
    assert!(second.contains("per_try_timeout = \"9s\""), "{second}");

    let admin = format!("http://{}", app.admin_addr);
    let ctl = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_failway"))
            .args(["ctl", "--admin", &admin, "--timeout", "10s", "--token-file"])
            .arg(&token)
            .arg("config")
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(20), ctl)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("per_try_timeout = \"9s\""), "{printed}");
    app.shutdown().await;
}
