//! The `failway` command as an operator uses it: `check`, `classify`,
//! `--version`, and `run` with bad config, signals and draining.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::upstream::FakeUpstream;

fn failway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_failway"))
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("failway.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn version_prints_the_package_version() {
    let out = failway().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_prints_the_effective_config_of_every_shipped_file() {
    for file in ["example.toml", "sidecar.toml", "gateway.toml"] {
        let path = format!("{}/config/{file}", env!("CARGO_MANIFEST_DIR"));
        let out = failway()
            .args(["check", "--config", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("[upstreams.primary]"), "{file}");
        assert!(stdout.contains("read_only_window"), "{file}");
    }
}

#[test]
fn check_warns_without_state_path_and_redacts_probe_headers() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
[upstreams.primary]
url = "http://127.0.0.1:1"
[upstreams.replica]
url = "http://127.0.0.1:2"
[health]
headers = { "x-probe-secret" = "very-secret-value" }
"#,
    );
    let out = failway()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("state.path is not set"), "{stderr}");
    assert!(!stdout.contains("very-secret-value") && !stderr.contains("very-secret-value"));
    assert!(stdout.contains("x-probe-secret"));
}

#[test]
fn check_reports_every_error_with_its_key_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
[upstreams.primary]
url = "http://a.example"
[upstreams.replica]
url = "http://a.example"
[retry]
backoff_max = "1x"
per_try_timeout = "60s"
[health]
timeout = "5s"
interval = "2s"
"#,
    );
    let out = failway()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "upstreams.replica.url",
        "retry.backoff_max: \"1x\" is not a duration",
        "retry.per_try_timeout",
        "health.timeout",
    ] {
        assert!(stderr.contains(key), "missing {key:?} in:\n{stderr}");
    }
}

#[test]
fn run_with_a_bad_config_exits_64_before_binding() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            r#"
[proxy]
listen = "127.0.0.1:{port}"
bogus_key = 1
[upstreams.primary]
url = "http://127.0.0.1:1"
[upstreams.replica]
url = "http://127.0.0.1:2"
"#
        ),
    );
    let out = failway()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("proxy.bogus_key"));
    // The port was never taken: it can be bound now.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn classify_prints_the_class_and_the_deciding_rule() {
    let out = failway()
        .args(["classify", "POST", "/api/v2/keys/abc/actions/wrap"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("read ("));
    let out = failway()
        .args(["classify", "POST", "/api/v2/keys/abc?action=rotate"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("write ("));
}

#[tokio::test]
async fn run_serves_then_drains_on_sigterm_and_exits_0() {
    let primary = FakeUpstream::start().await;
    let replica = FakeUpstream::start().await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            r#"
[proxy]
listen = "127.0.0.1:{port}"
max_connections = 100
[admin]
listen = "127.0.0.1:{admin}"
[upstreams.primary]
url = "{}"
[upstreams.replica]
url = "{}"
"#,
            primary.url(),
            replica.url()
        ),
    );
    let mut child = failway()
        .args(["run", "--log-format", "json", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = common::failway::client();
    let ready_url = format!("http://127.0.0.1:{admin}/readyz");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req = http::Request::get(&ready_url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        if let Ok(r) = client.request(req).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "failway never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ans = common::failway::send(
        &client,
        "GET",
        &format!("http://127.0.0.1:{port}/x"),
        &[("correlation-id", "cli-run-1")],
        "",
    )
    .await;
    assert_eq!(ans.status, 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("failway did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let access = stderr
        .lines()
        .find(|l| l.contains("cli-run-1"))
        .unwrap_or_else(|| panic!("no access log line in:\n{stderr}"));
    let v: serde_json::Value = serde_json::from_str(access).unwrap();
    assert_eq!(v["target"], "failway::access");
    assert_eq!(v["status"], 200);
    assert_eq!(v["region"], "primary");
    assert_eq!(v["path"], "/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_shows_status_and_moves_the_mode() {
    let primary = FakeUpstream::start().await;
    let replica = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "ctl-token\n").unwrap();
    let mut cfg = common::failway::config(&primary.url(), &replica.url(), "");
    cfg.admin.token_file = Some(token.clone());
    let app = common::failway::start(cfg).await;
    let admin = format!("http://{}", app.admin_addr);
    let ctl = move |args: Vec<String>| {
        let admin = admin.clone();
        let token = token.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                failway()
                    .arg("ctl")
                    .args(["--admin", &admin, "--token-file"])
                    .arg(&token)
                    .args(&args)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = ctl(vec!["status".into()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("mode                  primary since"),
        "{table}"
    );
    assert!(table.contains("replica-writes latch  clear"));

    let out = ctl(vec![
        "enable-writes".into(),
        "--reason".into(),
        "too early".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused (mode primary)"));

    let out = ctl(vec![
        "failover".into(),
        "--reason".into(),
        "drill".into(),
        "--force".into(),
    ])
    .await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "changed: primary -> failover_read_only"
    );
    let out = ctl(vec!["--json".into(), "status".into()]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "failover_read_only");
    assert_eq!(v["transitions"][0]["reason"], "drill");

    let out = tokio::task::spawn_blocking(|| {
        failway()
            .args(["ctl", "--admin", "http://127.0.0.1:1", "status"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"));
    app.shutdown().await;
}

/// An admin API that answers a head announcing a body, then sends no more
/// of it; the connection stays open until the test ends.
fn stalling_admin() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"mode\":";
        stream.write_all(head.as_bytes()).unwrap();
        // Held until ctl gives up and closes its end.
        let _ = stream.read(&mut buf);
    });
    (addr, thread)
}

#[test]
fn ctl_gives_up_on_an_admin_that_stalls_its_body() {
    let (addr, admin) = stalling_admin();
    let mut child = failway()
        .args([
            "ctl",
            "--admin",
            &format!("http://{addr}"),
            "--timeout",
            "1s",
            "status",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let bound = Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > bound {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("ctl was still waiting for the body after {bound:?} (its timeout: 1s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("cannot reach the admin API") && stderr.contains("timed out after 1s"),
        "{stderr}"
    );
    admin.join().unwrap();
}
