//! The `failway` command as an operator uses it: `check`, `classify`,
//! `--version`, `run` with bad config, signals and draining, and `ctl`
//! against one service and several.

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
            .args(["check", "--offline", "--config", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("read_only_window"), "{file}");
        if file == "gateway.toml" {
            // Two services, each with its own pair.
            assert_eq!(stdout.matches("[[service]]").count(), 2, "{stdout}");
            assert_eq!(
                stdout.matches("[service.upstreams.primary]").count(),
                2,
                "{stdout}"
            );
            for name in ["name = \"kp-us\"", "name = \"kp-eu\""] {
                assert!(stdout.contains(name), "{name} in:\n{stdout}");
            }
        } else {
            assert!(stdout.contains("[upstreams.primary]"), "{file}");
        }
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
    let port = common::free_port();
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

/// A `[[service]]` block named `name` for `hosts` (TOML array items) with
/// its pair of regions and any `extra` sections of its own.
fn service_block(name: &str, hosts: &str, primary: &str, replica: &str, extra: &str) -> String {
    format!(
        r#"
[[service]]
name = "{name}"
hosts = [{hosts}]
[service.upstreams.primary]
url = "{primary}"
[service.upstreams.replica]
url = "{replica}"
{extra}
"#
    )
}

fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, text);
    let out = failway()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_refuses_bad_service_blocks_naming_the_key() {
    let a = service_block(
        "a",
        "\"a.internal\"",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "",
    );
    let pair = "[upstreams.primary]\nurl = \"http://127.0.0.1:1\"\n[upstreams.replica]\nurl = \"http://127.0.0.1:2\"\n";
    let cases = [
        (
            "both forms",
            format!("{pair}{a}"),
            "upstreams: the single-pair form",
        ),
        (
            "complete overlap",
            format!(
                "{a}{}",
                service_block("b", "\"a.internal\"", "http://127.0.0.1:3", "http://127.0.0.1:4", "")
            ),
            "service[1]: never matches: service[0] (\"a\")",
        ),
        (
            "duplicate name",
            format!(
                "{a}{}",
                service_block("a", "\"b.internal\"", "http://127.0.0.1:3", "http://127.0.0.1:4", "")
            ),
            "service[1].name: \"a\" is also service[0].name",
        ),
        (
            "no replica",
            format!(
                "{a}\n[[service]]\nname = \"b\"\nhosts = [\"b.internal\"]\n[service.upstreams.primary]\nurl = \"http://127.0.0.1:3\"\n"
            ),
            "service[1].upstreams.replica: missing",
        ),
        (
            "no upstreams",
            format!("{a}\n[[service]]\nname = \"b\"\nhosts = [\"b.internal\"]\n"),
            "service[1].upstreams.primary: missing",
        ),
    ];
    for (what, text, error) in cases {
        let (code, _, stderr) = check(&text);
        assert_eq!(code, Some(64), "{what}: {stderr}");
        assert!(stderr.contains(error), "{what}: no {error:?} in:\n{stderr}");
    }
}

#[test]
fn check_prints_every_service_block() {
    let text = format!(
        "{}{}",
        service_block(
            "kp-us",
            "\"kp-us.internal\"",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "[service.failover]\nread_only_window = \"2h\"\n"
        ),
        service_block("kp-eu", "", "http://127.0.0.1:3", "http://127.0.0.1:4", "")
    );
    let (code, stdout, stderr) = check(&text);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.matches("[[service]]").count(), 2, "{stdout}");
    let us = stdout.find("name = \"kp-us\"").expect("kp-us block");
    let eu = stdout.find("name = \"kp-eu\"").expect("kp-eu block");
    assert!(us < eu, "file order:\n{stdout}");
    assert!(stdout[us..eu].contains("http://127.0.0.1:1"), "{stdout}");
    assert!(
        stdout[us..eu].contains("read_only_window = \"2h\""),
        "{stdout}"
    );
    assert!(stdout[eu..].contains("http://127.0.0.1:4"), "{stdout}");
    // kp-eu takes the top-level (default) window.
    assert!(
        stdout[eu..].contains("read_only_window = \"6h\""),
        "{stdout}"
    );
}

#[test]
fn classify_uses_the_named_services_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            "{}{}",
            service_block(
                "kp",
                "\"kp.internal\"",
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                ""
            ),
            service_block(
                "plain",
                "",
                "http://127.0.0.1:3",
                "http://127.0.0.1:4",
                "[service.classify]\nprofile = \"http-methods\"\n"
            )
        ),
    );
    let classify = |args: &[&str]| {
        let out = failway()
            .args(["classify", "--config"])
            .arg(&path)
            .args(args)
            .args(["POST", "/api/v2/keys/abc/actions/wrap"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = classify(&["--service", "kp"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("read ("), "{stdout}");
    let (code, stdout, stderr) = classify(&["--service", "plain"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("write ("), "{stdout}");
    let (code, _, stderr) = classify(&[]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("--service: required") && stderr.contains("kp, plain"),
        "{stderr}"
    );
    let (code, _, stderr) = classify(&["--service", "nope"]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("no service named \"nope\"") && stderr.contains("kp, plain"),
        "{stderr}"
    );
}

#[tokio::test]
async fn run_serves_then_drains_on_sigterm_and_exits_0() {
    let primary = FakeUpstream::start().await;
    let replica = FakeUpstream::start().await;
    let (port, admin) = (common::free_port(), common::free_port());
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

/// Runs `failway ctl --admin ADMIN ARGS...` off the runtime's threads.
async fn ctl_at(admin: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = failway();
    cmd.args(["ctl", "--admin", admin]).args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_shows_and_moves_each_service_of_a_gateway() {
    let regions = [
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
    ];
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}{}",
        service_block(
            "a",
            "\"a.internal\"",
            &regions[0].url(),
            &regions[1].url(),
            ""
        ),
        service_block("b", "", &regions[2].url(), &regions[3].url(), "")
    );
    let cfg = failway::config::Config::from_toml_str(&text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let app = common::failway::start(cfg).await;
    let admin = format!("http://{}", app.admin_addr);
    let stdout = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();

    let out = ctl_at(&admin, &["status"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = stdout(&out);
    for name in ["a", "b"] {
        assert!(
            table.contains(&format!(
                "service               {name}\nmode                  primary since"
            )),
            "{name} in:\n{table}"
        );
    }

    let out = ctl_at(&admin, &["failover", "--reason", "x", "--force"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("error 400: service: required") && stdout(&out).contains("a, b"),
        "{}",
        stdout(&out)
    );
    let out = ctl_at(&admin, &["--service", "c", "failover", "--reason", "x"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("error 404: no service named \"c\""),
        "{}",
        stdout(&out)
    );

    let out = ctl_at(
        &admin,
        &["--service", "b", "failover", "--reason", "x", "--force"],
    )
    .await;
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        stdout(&out).trim(),
        "changed: primary -> failover_read_only"
    );

    let out = ctl_at(&admin, &["--json", "status"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["services"]["a"]["mode"], "primary");
    assert_eq!(v["services"]["b"]["mode"], "failover_read_only");
    assert_eq!(v["services"]["b"]["transitions"][0]["reason"], "x");

    let out = ctl_at(&admin, &["--service", "b", "status"]).await;
    let table = stdout(&out);
    assert!(
        table.starts_with("service               b\nmode                  failover_read_only"),
        "{table}"
    );
    assert!(!table.contains("service               a"), "{table}");
    let out = ctl_at(&admin, &["--service", "c", "status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no service named \"c\"; the services are: a, b"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without [fleet]: the admin's 404 for the service named.
    let out = ctl_at(&admin, &["--service", "b", "fleet", "status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("fleet mode is off"),
        "{}",
        stdout(&out)
    );
    let out = ctl_at(&admin, &["fleet", "status"]).await;
    assert!(
        stdout(&out).contains("error 400: service: required"),
        "{}",
        stdout(&out)
    );
    app.shutdown().await;
}
