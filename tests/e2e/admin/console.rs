//! The operator console (`GET /`, `/events`) as a user meets it: its
//! security headers and read-only probe page over plain HTTP, the cap on
//! live streams, and the whole incident in a real Chromium driven by
//! `tests/python/console_browser.py` (selenium in the repository's venv,
//! Debian's `chromium` and `chromium-driver`).
//!
//! Without Chromium or the venv the browser test is skipped with a message,
//! except in CI (`CI=true`), where it fails.

use crate::common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::failway as fw;
use common::upstream::{Behavior, FakeUpstream, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The admin's cap on open `/events` streams (fixed; see
/// `src/admin/console/events.rs`), and its heartbeat period.
const STREAMS: usize = 16;
const HEARTBEAT: Duration = Duration::from_secs(5);
/// The script's own waits add up to well under this; past it, a hang.
const DEADLINE: Duration = Duration::from_secs(150);

/// A region that answers 200 until `/__kill`, 503 after it, 200 again
/// after `/__revive`.
async fn switchable_region() -> FakeUpstream {
    let up = FakeUpstream::start().await;
    let down = Arc::new(AtomicBool::new(false));
    up.set_behavior(Behavior::script(move |r| {
        match r.uri.as_str() {
            "/__kill" => down.store(true, Ordering::SeqCst),
            "/__revive" => down.store(false, Ordering::SeqCst),
            _ if down.load(Ordering::SeqCst) => return Response::status(503),
            _ => {}
        }
        Response::ok("ok")
    }));
    up
}

/// The venv's Python with selenium, and Chromium with its driver.
fn browser_tools() -> Option<(PathBuf, String, String)> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let install = "apt-get install chromium chromium-driver; .venv/bin/pip install -r tests/python/requirements.txt";
    let ok = common::tool_available(&py.display().to_string(), install)
        && common::tool_available("chromium", install)
        && common::tool_available("chromedriver", install);
    ok.then(|| {
        (
            py,
            "/usr/bin/chromium".to_owned(),
            "/usr/bin/chromedriver".to_owned(),
        )
    })
}

/// One GET's status and head, read whole (the connection closes after it).
async fn head_of(addr: std::net::SocketAddr, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    let r = common::raw_exchange(addr, req.as_bytes(), Duration::from_secs(5)).await;
    r.head()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_locked_down_and_read_only_on_the_probe_listener() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.admin.probe_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = fw::start(cfg).await;
    let probe = app.probe_addr.expect("probe listener bound");

    let admin_page = fw::req("GET", &format!("http://{}/", app.admin_addr))
        .send()
        .await;
    assert_eq!(admin_page.status, 200);
    let csp = admin_page
        .header("content-security-policy")
        .unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(admin_page.header("x-frame-options"), Some("DENY"));
    assert_eq!(admin_page.header("referrer-policy"), Some("no-referrer"));
    assert!(admin_page.header("set-cookie").is_none());
    let html = String::from_utf8_lossy(&admin_page.body);
    assert!(
        html.contains("data-mode=\"primary\" data-service=\"default\""),
        "{html}"
    );
    assert!(html.contains("<form id=\"act\""), "{html}");
    assert!(
        html.contains("<dt>writes_blocked_total</dt><dd>0</dd></div>"),
        "{html}"
    );

    let probe_page = fw::req("GET", &format!("http://{probe}/")).send().await;
    assert_eq!(probe_page.status, 200);
    let html = String::from_utf8_lossy(&probe_page.body);
    assert!(html.contains("data-mode=\"primary\""), "{html}");
    for tag in ["<form", "<button", "<input"] {
        assert!(!html.contains(tag), "the probe page has {tag}: {html}");
    }
    let refused = fw::req("POST", &format!("http://{probe}/admin/failover"))
        .header("content-type", "application/json")
        .body(r#"{"reason":"from the probe listener"}"#)
        .send()
        .await;
    assert_eq!(refused.status, 404);
    let head = head_of(probe, "/events").await;
    assert!(head.contains("text/event-stream"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_event_streams_are_capped_and_each_starts_with_the_state() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let addr = app.admin_addr;
    let mut open = Vec::new();
    for _ in 0..STREAMS {
        let mut s = TcpStream::connect(addr).await.expect("connects");
        let req = format!("GET /events HTTP/1.1\r\nhost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !String::from_utf8_lossy(&seen).contains("data-mode=\"primary\"") {
            assert!(
                Instant::now() < deadline,
                "no state event: {:?}",
                String::from_utf8_lossy(&seen)
            );
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("the stream sends")
                .expect("reads");
            assert!(n > 0, "the stream closed early");
            seen.extend_from_slice(&buf[..n]);
        }
        open.push(s);
    }
    let head = head_of(addr, "/events").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    drop(open);
    // Streams of clients that left are released by their next heartbeat.
    let limit = HEARTBEAT * 3;
    common::eventually_async(limit, "a stream is allowed again", || async {
        head_of(addr, "/events").await.starts_with("HTTP/1.1 200")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_an_incident_in_a_real_chromium() {
    let Some((py, chromium, chromedriver)) = browser_tools() else {
        return;
    };
    let (primary, replica) = (switchable_region().await, FakeUpstream::start().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "console-s3cret-token\n").unwrap();
    let mut cfg = fw::config(
        &primary.url(),
        &replica.url(),
        &fw::fast_health("read_only_window = \"60s\""),
    );
    cfg.admin.token_file = Some(token.clone());
    cfg.admin.probe_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = fw::start_probing(cfg).await;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/console_browser.py");
    let mut child = Command::new(&py)
        .arg(&script)
        .args(["--admin", &format!("http://{}", app.admin_addr)])
        .args([
            "--probe",
            &format!("http://{}", app.probe_addr.expect("probe bound")),
        ])
        .args(["--primary", &primary.url()])
        .arg("--token-file")
        .arg(&token)
        .arg("--out")
        .arg(&out)
        .args(["--chromium", &chromium, "--chromedriver", &chromedriver])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        // Its own process group, so a hung run is ended with the
        // chromedriver and Chromium it started.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    let started = Instant::now();
    let stop_file = out.join("stop-failway");
    let _ = std::fs::remove_file(&stop_file);
    let mut app = Some(app);
    let status = loop {
        // The script asks for failway to go away, to see the page say so.
        if stop_file.exists() {
            if let Some(app) = app.take() {
                tokio::spawn(app.shutdown());
            }
        }
        match child.try_wait().expect("child status") {
            Some(status) => break Some(status),
            None if started.elapsed() > DEADLINE => {
                // The group the script leads, by its PID: the script,
                // chromedriver and Chromium.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                break None;
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let output = format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    println!("{output}\nscreenshots: {}", out.display());
    let status = status.unwrap_or_else(|| panic!("the script ran past {DEADLINE:?}\n{output}"));
    assert!(
        status.success(),
        "the browser checks failed ({status})\n{output}"
    );
    assert!(output.contains("all checks passed"), "{output}");
    assert!(out.join("02-read-only-failover.png").exists());
}
