//! The access log as an operator reads it: one JSON line per request with
//! the client, service, upstream, attempts and a `complete` flag that tells
//! a delivered body from one cut short.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common;
use crate::common::failway as fw;
use crate::common::process::RunningBinary;
use crate::common::upstream::FakeUpstream;

/// A region that answers by path, on raw sockets so it can lie about a
/// length: `/length` (Content-Length), `/chunked`, `/cut` (announces 100
/// bytes, sends 5, closes); anything else (the probes) an empty 200.
async fn raw_region() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split(' ').nth(1).unwrap_or("/");
                let path = target.split('?').next().unwrap_or("/");
                let answer: &[u8] = match path {
                    "/length" => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello",
                    "/chunked" => b"HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                    "/cut" => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 100\r\n\r\nshort",
                    _ => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                };
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn access_line(stderr: &str, correlation_id: &str) -> serde_json::Value {
    let line = stderr
        .lines()
        .filter(|l| l.contains("failway::access"))
        .find(|l| l.contains(correlation_id))
        .unwrap_or_else(|| panic!("no access line for {correlation_id} in:\n{stderr}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_names_the_hops_and_tells_delivered_bodies_from_cut_ones() {
    let primary = raw_region().await;
    let replica = FakeUpstream::start().await;
    let (port, admin) = (common::free_port(), common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("failway.toml");
    let text = format!(
        r#"
[proxy]
listen = "127.0.0.1:{port}"
max_connections = 100
[admin]
listen = "127.0.0.1:{admin}"
[upstreams.primary]
url = "http://{primary}"
[upstreams.replica]
url = "{}"
[classify]
profile = "key-protect"
[retry]
max_attempts = 1
"#,
        replica.url()
    );
    std::fs::write(&config, text).unwrap();
    let fw_bin = RunningBinary::start(&config, admin).await;
    let base = format!("http://127.0.0.1:{port}");

    for (path, id) in [("/length?secret=1", "cl-1"), ("/chunked", "ch-1")] {
        let ans = fw::req("GET", &format!("{base}{path}"))
            .header("correlation-id", id)
            .send()
            .await;
        assert_eq!((ans.status, &ans.body[..]), (200, &b"hello"[..]), "{path}");
    }
    let cut = common::raw_exchange(
        format!("127.0.0.1:{port}").parse().unwrap(),
        b"GET /cut HTTP/1.1\r\nhost: x\r\ncorrelation-id: cut-1\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(cut.status(), Some(200));
    assert!(cut.body().len() < 100, "{:?}", cut.body_str());

    let failover = fw::req("POST", &format!("http://127.0.0.1:{admin}/admin/failover"))
        .header("content-type", "application/json")
        .body(r#"{"reason": "access log test", "force": true}"#)
        .send()
        .await;
    assert_eq!(failover.status, 200, "{:?}", failover.body);
    let blocked = fw::req("POST", &format!("{base}/api/v2/keys"))
        .header("correlation-id", "blocked-1")
        .body("{}")
        .send()
        .await;
    assert_eq!(blocked.status, 409);

    let (status, stderr) = fw_bin.stop().await;
    assert_eq!(status.code(), Some(0), "{stderr}");

    let cl = access_line(&stderr, "cl-1");
    assert_eq!(cl["path"], "/length", "no query in the log: {cl}");
    assert_eq!(cl["complete"], true, "{cl}");
    assert_eq!(cl["service"], "default");
    assert_eq!(cl["region"], "primary");
    assert_eq!(cl["upstream"], primary.to_string());
    assert_eq!(cl["attempts"], 1);
    assert_eq!(cl["bytes_out"], 5);
    assert!(
        cl["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{cl}"
    );
    let ms = cl["duration_ms"].as_f64().unwrap();
    assert_eq!(
        (ms * 1000.0).round() / 1000.0,
        ms,
        "three decimals at most: {cl}"
    );

    assert_eq!(access_line(&stderr, "ch-1")["complete"], true);
    let cut = access_line(&stderr, "cut-1");
    assert_eq!(cut["complete"], false, "{cut}");

    let blocked = access_line(&stderr, "blocked-1");
    assert_eq!(blocked["status"], 409);
    assert_eq!(blocked["complete"], true, "failway's own answer: {blocked}");
    assert_eq!(blocked["attempts"], 0);
    assert_eq!(blocked["region"], "none");
    assert_eq!(blocked["upstream"], "-");
}
