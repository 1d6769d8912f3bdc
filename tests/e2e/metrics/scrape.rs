//! failway scraped by a real Prometheus server: the exposition is not only
//! well-formed text but something Prometheus ingests, and what an operator
//! queries after a failover (the mode gauge, the request total) is right.
//!
//! It runs `/usr/bin/prometheus` (Debian package `prometheus`, which `.ci/run`
//! installs) as a child process on loopback, with its storage in a temporary
//! folder, and kills it by PID when the test ends, passing or not. Without
//! the binary the test prints why and passes; it never reaches a Prometheus
//! it did not start.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::failway::{self as fw, send};
use common::upstream::FakeUpstream;
use common::{eventually, eventually_async};
use failway::app::Running;
use failway::failover::machine::{Health, Mode};

/// Prometheus scrapes every second; 20 s leaves room for a slow start, a
/// few scrapes and a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);

/// The `prometheus` binary: on PATH, else Debian's location.
fn prometheus_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/bin/prometheus");
        debian.is_file().then_some(debian)
    })
}

/// A loopback port free right now. Prometheus cannot be told to bind port 0,
/// so the port is picked here and released; another process taking it in
/// between makes Prometheus exit, which `start` reports.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A Prometheus child process, killed (by its PID) and reaped on drop; its
/// config, storage and log live in `dir`.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(binary: &Path, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: failway\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let storage = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let log_err = log.try_clone().expect("log file handle");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-lifecycle")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Prometheus { child, addr, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Panics with Prometheus's log if it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", self.log());
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let url = format!("http://{}/-/ready", self.addr);
        let client = fw::client();
        loop {
            self.assert_running();
            let req = http::Request::get(url.as_str())
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("valid request");
            let ready = tokio::time::timeout(Duration::from_secs(1), client.request(req)).await;
            if matches!(ready, Ok(Ok(ref r)) if r.status() == 200) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("prometheus not ready after {DEADLINE:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of an instant query answering one sample; `None` while
    /// Prometheus has no such sample yet.
    async fn query(&self, promql: &str) -> Option<f64> {
        let url = format!(
            "http://{}/api/v1/query?query={}",
            self.addr,
            url_encode(promql)
        );
        let ans = send(&fw::client(), "GET", &url, &[], "").await;
        assert_eq!(
            ans.status,
            200,
            "query {promql}: {}",
            String::from_utf8_lossy(&ans.body)
        );
        let v = ans.json();
        assert_eq!(v["status"], "success", "query {promql}: {v}");
        let result = v["data"]["result"].as_array()?;
        match result.as_slice() {
            [] => None,
            [one] => one["value"][1].as_str()?.parse().ok(),
            many => panic!("query {promql} answered {} series: {v}", many.len()),
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn request(app: &Running, method: &str, path: &str) -> fw::Answer {
    send(
        &fw::client(),
        method,
        &format!("{}{path}", fw::url(app)),
        &[("content-type", "application/json")],
        if method == "GET" { "" } else { "{}" },
    )
    .await
}

#[test]
fn url_encoding_keeps_only_unreserved_characters() {
    assert_eq!(
        url_encode(r#"failway_mode{mode="x"} == 1"#),
        "failway_mode%7Bmode%3D%22x%22%7D%20%3D%3D%201"
    );
}

#[tokio::test]
async fn prometheus_sees_the_failover_and_every_request() {
    let Some(binary) = prometheus_binary() else {
        // Skips with a message on a developer's machine, fails in CI.
        common::tool_available("prometheus", "Debian: apt-get install prometheus");
        return;
    };
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = fw::start_probing(fw::config(
        &primary.url(),
        &replica.url(),
        &fw::fast_health(""),
    ))
    .await;
    eventually(DEADLINE, "both regions probed healthy", || {
        app.failover
            .snapshot()
            .regions
            .iter()
            .all(|r| r.health == Health::Healthy)
    })
    .await;
    let mut prom = Prometheus::start(&binary, app.admin_addr);
    prom.wait_ready().await;

    let mut sent = 0;
    for i in 0..5 {
        let ans = request(&app, "GET", &format!("/api/v2/keys/k{i}")).await;
        assert_eq!(ans.header("failway-region"), Some("primary"));
        sent += 1;
    }
    for _ in 0..2 {
        let ans = request(&app, "POST", "/api/v2/keys").await;
        assert_eq!(ans.header("failway-region"), Some("primary"));
        sent += 1;
    }
    eventually_async(
        DEADLINE,
        "prometheus scrapes failway in primary",
        || async {
            prom.query(r#"up{job="failway"}"#).await == Some(1.0)
                && prom.query(r#"failway_mode{mode="primary"}"#).await == Some(1.0)
        },
    )
    .await;

    let ans = send(
        &fw::client(),
        "POST",
        &format!("http://{}/admin/failover", app.admin_addr),
        &[("content-type", "application/json")],
        r#"{"reason":"prometheus drill"}"#,
    )
    .await;
    assert_eq!(ans.status, 200, "{}", String::from_utf8_lossy(&ans.body));
    assert_eq!(app.failover.snapshot().mode, Mode::FailoverReadOnly);
    for i in 0..3 {
        let ans = request(&app, "GET", &format!("/api/v2/keys/k{i}")).await;
        assert_eq!(ans.header("failway-region"), Some("replica"));
        sent += 1;
    }
    let blocked = request(&app, "POST", "/api/v2/keys").await;
    assert_eq!(blocked.status, 409, "a blocked write");
    sent += 1;

    let want = f64::from(sent);
    eventually_async(
        DEADLINE,
        &format!("prometheus shows failover_read_only and {sent} requests"),
        || async {
            prom.query(r#"failway_mode{mode="failover_read_only"}"#)
                .await
                == Some(1.0)
                && prom.query(r#"failway_mode{mode="primary"}"#).await == Some(0.0)
                && prom.query("sum(failway_requests_total)").await == Some(want)
        },
    )
    .await;
    assert_eq!(
        prom.query(r#"sum(failway_requests_total{region="none"})"#)
            .await,
        Some(1.0),
        "the blocked write, answered by failway"
    );
    assert_eq!(
        prom.query(r#"failway_writes_blocked_total{reason="read_only"}"#)
            .await,
        Some(1.0)
    );
    prom.assert_running();
    drop(prom);
    app.shutdown().await;
}
