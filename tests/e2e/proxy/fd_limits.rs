//! failway's open-file budget, with the built binary under a real
//! `RLIMIT_NOFILE` (`ulimit -n` in a shell that then execs failway): the
//! start-time check, and what running out of descriptors does.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::failway as fw;
use common::upstream::{Behavior, FakeUpstream, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const T: Duration = Duration::from_secs(10);

/// `failway run` as a child process under an open-file limit of `nofile`;
/// killed (by its pid) when dropped.
struct Failway {
    child: std::process::Child,
    log: PathBuf,
    proxy: u16,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Failway {
    /// `sections` is the config after `[proxy]`'s listen and `[admin]`.
    fn run(nofile: u64, proxy_extra: &str, sections: &str) -> Failway {
        let dir = tempfile::tempdir().unwrap();
        let (proxy, admin) = (common::free_port(), common::free_port());
        let config = dir.path().join("failway.toml");
        std::fs::write(
            &config,
            format!(
                "[proxy]\nlisten = \"127.0.0.1:{proxy}\"\n{proxy_extra}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n{sections}"
            ),
        )
        .unwrap();
        let log = dir.path().join("failway.log");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {nofile} && exec \"$0\" run --log-format json --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_failway"))
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Failway {
            child,
            log,
            proxy,
            admin,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit code, once it exited within `within`.
    async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        let deadline = Instant::now() + T;
        loop {
            if let Some(code) = self.exit_code(Duration::ZERO).await {
                panic!("failway exited with {code}:\n{}", self.log());
            }
            let req = http::Request::get(&url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(1), fw::client().request(req)).await
            {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "never ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets the running process's soft open-file limit (the hard one stays).
    fn set_soft_limit(&self, soft: u64, hard: u64) {
        let ok = Command::new("prlimit")
            .arg("--pid")
            .arg(self.child.id().to_string())
            .arg(format!("--nofile={soft}:{hard}"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "prlimit failed");
    }

    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let code = self.exit_code(T).await;
        assert_eq!(
            code,
            Some(0),
            "failway did not stop cleanly:\n{}",
            self.log()
        );
    }
}

impl Drop for Failway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn regions(primary: &FakeUpstream, replica: &FakeUpstream) -> String {
    format!(
        "[upstreams.primary]\nurl = \"{}\"\n[upstreams.replica]\nurl = \"{}\"\n",
        primary.url(),
        replica.url()
    )
}

/// 1,000 client connections and two regions' 256 upstream connections each
/// cannot fit 1,500 descriptors: the start is refused, naming the keys.
#[tokio::test]
async fn a_start_whose_connections_cannot_fit_the_file_limit_is_refused() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let mut app = Failway::run(1500, "max_connections = 1000", &regions(&primary, &replica));
    let code = app.exit_code(T).await;
    let log = app.log();
    assert_eq!(code, Some(70), "failway started anyway:\n{log}");
    for key in [
        "proxy.max_connections",
        "upstreams.primary.max_connections",
        "upstreams.replica.max_connections",
    ] {
        assert!(log.contains(key), "{key} not named in:\n{log}");
    }
}

/// One HTTP/1.1 connection, opened while descriptors are there and kept:
/// a pooled client may open another one at any time, which would then wait
/// in the listen backlog.
struct Conn(hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>);

impl Conn {
    async fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn(tx)
    }

    async fn send(&mut self, method: &str, path: &str) -> (u16, bytes::Bytes) {
        let exchange = async {
            self.0.ready().await.expect("connection still open");
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", "failway.test")
                .body(http_body_util::Full::default())
                .unwrap();
            let resp = self.0.send_request(req).await.expect("answered");
            let status = resp.status().as_u16();
            (status, resp.into_body().collect().await.unwrap().to_bytes())
        };
        tokio::time::timeout(T, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path} not answered in time"))
    }

    async fn json(&mut self, method: &str, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.send(method, path).await;
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {:?}", String::from_utf8_lossy(&body)));
        (status, v)
    }
}

/// With `proxy.max_connections = 600` failway starts under 1,500
/// descriptors. When it then cannot open any (its soft limit lowered
/// below what it holds), requests that need a new upstream connection get
/// 503 `FAILWAY_LOCAL_RESOURCES_ERR` and are counted in
/// `failway_local_errors_total{kind="fds"}`; neither they nor the probes
/// that could not connect count against the primary, so it is never judged
/// down and nothing fails over. The accept loop backs off without a flood
/// of logs, and serves the waiting client once descriptors are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_is_failways_problem_not_the_primarys() {
    if !common::tool_available("prlimit", "apt-get install util-linux") {
        return;
    }
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    // Each answer closes its connection: every request and probe to the
    // primary needs a new descriptor. The replica's pooled one stays.
    primary.set_behavior(Behavior::Respond(
        Response::ok("p").header("connection", "close"),
    ));
    let sections = format!(
        "{}{}\n[health.passive]\nmin_requests = 3\n[classify]\nprofile = \"http-methods\"\n",
        regions(&primary, &replica),
        fw::fast_health("")
    );
    let mut app = Failway::run(1500, "max_connections = 600", &sections);
    app.wait_ready().await;
    let mut admin = Conn::open(app.admin).await;
    let mut proxy = Conn::open(app.proxy).await;
    let deadline = Instant::now() + T;
    loop {
        let (_, s) = admin.json("GET", "/status").await;
        let healthy = |r: &str| s["regions"][r]["health"] == "healthy";
        if healthy("primary") && healthy("replica") {
            break;
        }
        assert!(Instant::now() < deadline, "regions not healthy: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.send("GET", "/warm").await.0, 200);

    app.set_soft_limit(3, 1500);
    // A new client waits in the listen backlog: accept fails for now.
    let mut stranger = TcpStream::connect(("127.0.0.1", app.proxy)).await.unwrap();
    let mut answers = Vec::new();
    for i in 0..10 {
        let (status, body) = proxy.json("POST", &format!("/w/{i}")).await;
        answers.push((status, body["code"].as_str().map(str::to_owned)));
    }
    // The probers went on all the while (the replica's keep answering on
    // its pooled connection): 8 of its probes span 4 primary verdicts.
    let mut last = admin.json("GET", "/status").await.1["regions"]["replica"]["last_check"].clone();
    let mut probes = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while probes < 8 {
        assert!(Instant::now() < deadline, "replica probes stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = admin.json("GET", "/status").await.1["regions"]["replica"]["last_check"].clone();
        if now != last {
            last = now;
            probes += 1;
        }
    }
    let s = admin.json("GET", "/status").await.1;
    assert_eq!(
        (
            s["mode"].as_str(),
            s["regions"]["primary"]["down"].as_bool()
        ),
        (Some("primary"), Some(false)),
        "answers while out of descriptors: {answers:?}; status: {s}"
    );
    for a in &answers {
        assert_eq!(
            (a.0, a.1.as_deref()),
            (503, Some("FAILWAY_LOCAL_RESOURCES_ERR"))
        );
    }
    let metrics = admin.send("GET", "/metrics").await.1;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    // The data path's count (by service) and the accept loop's, together.
    let fds =
        common::sample_value(&metrics, "failway_local_errors_total{kind=\"fds\"}").unwrap_or(0.0);
    assert!(
        fds >= 10.0,
        "failway_local_errors_total{{kind=\"fds\"}} = {fds}"
    );

    app.set_soft_limit(1500, 1500);
    stranger
        .write_all(b"GET /later HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(T, stranger.read_to_end(&mut got))
        .await
        .expect("the waiting client is served")
        .unwrap();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let log = app.log();
    let accept_warnings: Vec<_> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") && l.contains("failway::proxy::server"))
        .collect();
    assert_eq!(
        accept_warnings.len(),
        1,
        "the proxy listener warns once per episode:\n{}",
        accept_warnings.join("\n")
    );
    app.stop().await;
}
