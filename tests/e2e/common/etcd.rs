//! A real etcd for fleet tests, and a TCP relay in front of it that can be
//! black-holed to cut one client off without closing its connections.
//!
//! etcd runs as a child process on free loopback ports with its data in a
//! temporary folder; it is killed by PID on drop. It cannot bind port 0, so
//! free ports are found by binding 127.0.0.1:0 and letting go. Without an
//! `etcd` binary on PATH [`Etcd::start`] returns `None` (the test skips with
//! a message) on a developer's machine and panics in CI, which installs it.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// With TLS: the https client port (the plain `client_port` stays for
    /// health checks and the raw helpers below).
    tls: Option<EtcdTls>,
    /// Root's token once authentication is on.
    root_token: Option<String>,
}

/// Files for an etcd serving https with client-certificate authentication.
pub struct EtcdTls {
    pub port: u16,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Etcd {
    /// Starts etcd and waits until it answers `/health`.
    pub async fn start() -> Option<Etcd> {
        Etcd::start_with(None).await
    }

    /// Starts etcd serving https on `tls.port` too, requiring a client
    /// certificate signed by `tls.ca` there.
    pub async fn start_with(tls: Option<EtcdTls>) -> Option<Etcd> {
        // Skips on a developer's machine without etcd, fails in CI.
        if !super::tool_available("etcd", "Debian: apt-get install etcd-server") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            root_token: None,
        };
        etcd.spawn().await;
        Some(etcd)
    }

    /// The https endpoint of an etcd started with TLS.
    pub fn tls_endpoint(&self) -> String {
        let tls = self.tls.as_ref().expect("etcd started with TLS");
        format!("https://127.0.0.1:{}", tls.port)
    }

    /// Calls etcd's JSON gateway on the plain port (as root once
    /// authentication is on) and returns its JSON answer and status.
    pub async fn call(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        call(self.client_addr(), path, &body, self.root_token.as_deref()).await
    }

    /// The value stored at `key` and the lease it is tied to (0: none).
    pub async fn get(&self, key: &str) -> Option<(Vec<u8>, i64)> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (status, got) = self
            .call(
                "/v3/kv/range",
                serde_json::json!({ "key": b64.encode(key) }),
            )
            .await;
        assert_eq!(status, 200, "range {key}: {got}");
        let kv = got["kvs"].get(0)?;
        let value = b64
            .decode(kv["value"].as_str().unwrap_or(""))
            .expect("base64 value");
        let lease = kv["lease"]
            .as_str()
            .map_or(0, |l| l.parse().expect("lease id"));
        Some((value, lease))
    }

    /// Puts `value` at `key`, as an operator with etcdctl would.
    pub async fn put(&self, key: &str, value: impl AsRef<[u8]>) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({ "key": b64.encode(key), "value": b64.encode(value) });
        let (status, got) = self.call("/v3/kv/put", body).await;
        assert_eq!(status, 200, "put {key}: {got}");
    }

    /// Turns authentication on: a root user (password `root_password`) and
    /// `user` with `password`, granted the root role.
    pub async fn enable_auth(&mut self, root_password: &str, user: &str, password: &str) {
        use serde_json::json;
        let steps = [
            ("/v3/auth/role/add", json!({ "name": "root" })),
            (
                "/v3/auth/user/add",
                json!({ "name": "root", "password": root_password }),
            ),
            (
                "/v3/auth/user/grant",
                json!({ "user": "root", "role": "root" }),
            ),
            (
                "/v3/auth/user/add",
                json!({ "name": user, "password": password }),
            ),
            (
                "/v3/auth/user/grant",
                json!({ "user": user, "role": "root" }),
            ),
            ("/v3/auth/enable", json!({})),
        ];
        for (path, body) in steps {
            let (status, got) = self.call(path, body).await;
            assert_eq!(status, 200, "{path}: {got}");
        }
        let (status, got) = self
            .call(
                "/v3/auth/authenticate",
                json!({ "name": "root", "password": root_password }),
            )
            .await;
        assert_eq!(status, 200, "authenticate root: {got}");
        self.root_token = Some(got["token"].as_str().expect("token").to_owned());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// Kills etcd outright (SIGKILL by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports with the same data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let plain = format!("http://127.0.0.1:{}", self.client_port);
        let client = match &self.tls {
            Some(t) => format!("{plain},https://127.0.0.1:{}", t.port),
            None => plain,
        };
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.cert.display()))
                .arg(format!("--key-file={}", t.key.display()))
                .arg(format!("--trusted-ca-file={}", t.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name=default")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !healthy(self.client_addr()).await {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "etcd exited ({status}) before it was healthy:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcd not healthy within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One JSON request to etcd's gateway at `addr` (plain HTTP, one
/// connection).
async fn call(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect to etcd");
        s.write_all(req.as_bytes()).await.expect("write to etcd");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read from etcd");
        out
    };
    let out = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("etcd answers within 5 s");
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("HTTP status line");
    let (head, rest) = text.split_once("\r\n\r\n").expect("HTTP head");
    // Go answers small bodies with Content-Length, larger ones chunked.
    let json = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let value = serde_json::from_str(json.trim()).unwrap_or(serde_json::Value::Null);
    (status, value)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

async fn healthy(addr: SocketAddr) -> bool {
    let check = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        Some(String::from_utf8_lossy(&body).contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Some(true))
    )
}

/// Forwards TCP connections to a target. Black-holed, it stops moving bytes
/// (holding what it read) but keeps every connection open and accepts new
/// ones, as a network partition looks to both ends; restored, it moves them
/// again.
pub struct Relay {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let open = watch::Sender::new(true);
        let gate = open.subscribe();
        let task = tokio::spawn(async move {
            // Dropped with the accept task, which aborts every connection.
            let mut conns = JoinSet::new();
            while let Ok((down, _)) = listener.accept().await {
                let gate = gate.clone();
                conns.spawn(async move {
                    let Ok(up) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(pump(dr, uw, gate.clone()), pump(ur, dw, gate));
                });
            }
        });
        Relay { addr, open, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn black_hole(&self) {
        self.open.send_replace(false);
    }

    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read just before the cut are held until the restore.
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
