//! What a hostile or broken client can do to the admin listeners: hold many
//! connections with bodies that never finish (bounded by a connection cap
//! and the request timeout, while the proxy and the probe listener keep
//! answering), and drive operator actions from a web page (a form post, a
//! foreign `Origin`, a DNS-rebound `Host`), which are refused.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::failway as fw;
use common::upstream::FakeUpstream;
use common::{eventually_async, raw_exchange, RawResponse};
use failway::app::Running;
use failway::failover::machine::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections opened against the admin listener: well over its cap.
const FLOOD: usize = 200;
/// The admin listener's connection cap (fixed; see `src/admin/conn.rs`).
const CAP: usize = 64;
/// Generous bound for anything the admin's 10 s request timeout ends.
const LONG: Duration = Duration::from_secs(60);
const T: Duration = Duration::from_secs(10);

/// A POST whose declared body never arrives: one byte of it is sent.
fn stalled_post(admin: SocketAddr) -> Vec<u8> {
    format!(
        "POST /admin/failover HTTP/1.1\r\nhost: {admin}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
    )
    .into_bytes()
}

/// Sends `request` and reads until the server closes (or resets) the
/// connection: what the server sent and whether it was anything at all.
async fn hold(addr: SocketAddr, request: Vec<u8>) -> RawResponse {
    let mut response = RawResponse {
        bytes: Vec::new(),
        closed: false,
        reset: false,
    };
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        response.reset = true;
        return response;
    };
    if stream.write_all(&request).await.is_err() {
        response.reset = true;
        return response;
    }
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(LONG, stream.read(&mut buf)).await {
            Err(_) => return response,
            Ok(Ok(0)) => {
                response.closed = true;
                return response;
            }
            Ok(Ok(n)) => response.bytes.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => {
                response.reset = true;
                return response;
            }
        }
    }
}

async fn get_ok(url: String) -> bool {
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("valid request");
    matches!(fw::client().request(req).await, Ok(r) if r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_admin_connections_are_capped_and_timed_out_while_the_rest_answers() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.admin.probe_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = fw::start(cfg).await;
    let admin = app.admin_addr;
    let probe = app.probe_addr.expect("probe listener bound");

    let mut held = Vec::new();
    for _ in 0..FLOOD {
        held.push(tokio::spawn(hold(admin, stalled_post(admin))));
    }
    // While the admin listener is flooded, the data path and the probe
    // listener (kubelet, Prometheus) keep answering.
    let proxy = fw::url(&app);
    eventually_async(T, "the proxy answers during the flood", || {
        get_ok(format!("{proxy}/x"))
    })
    .await;
    eventually_async(T, "the probe listener answers during the flood", || {
        get_ok(format!("http://{probe}/readyz"))
    })
    .await;

    let mut answered = 0;
    let mut refused = 0;
    for h in held {
        let r = h.await.unwrap();
        assert!(r.closed || r.reset, "a held connection outlived {LONG:?}");
        match r.status() {
            Some(408) => answered += 1,
            None if r.bytes.is_empty() => refused += 1,
            other => panic!("unexpected answer {other:?}: {}", r.head()),
        }
    }
    assert!(
        answered <= CAP && refused >= FLOOD - CAP,
        "{answered} of {FLOOD} stalled connections were held (timed out with 408), {refused} closed at once; the cap is {CAP}"
    );
    // Once the held ones are gone, a fresh operator request is served.
    eventually_async(T, "a fresh admin GET answers", || {
        get_ok(format!("http://{admin}/status"))
    })
    .await;
    assert_eq!(app.failover.snapshot().mode, Mode::Primary);
    app.shutdown().await;
}

/// One operator action over a raw connection, with the given headers.
async fn action(app: &Running, headers: &[(&str, &str)]) -> RawResponse {
    let body = r#"{"reason":"from a web page","force":true}"#;
    let mut req = String::from("POST /admin/failover HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("host: {}\r\n", app.admin_addr));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    raw_exchange(app.admin_addr, req.as_bytes(), T).await
}

/// failway with `token` as its admin token (none: the loopback default).
/// Probes are off, so a forced failover needs no healthy replica.
async fn start(token: Option<&str>) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fw::config("http://127.0.0.1:1", "http://127.0.0.1:2", "");
    if let Some(t) = token {
        std::fs::write(dir.path().join("token"), t).unwrap();
        cfg.admin.token_file = Some(dir.path().join("token"));
    }
    (fw::start(cfg).await, dir)
}

fn assert_refused(r: &RawResponse, status: u16, names: &str, app: &Running) {
    assert_eq!(r.status(), Some(status), "{}\n{}", r.head(), r.body_str());
    assert!(r.body_str().contains(names), "{}", r.body_str());
    assert_eq!(app.failover.snapshot().mode, Mode::Primary);
}

#[tokio::test]
async fn actions_from_a_web_page_are_refused_without_a_token() {
    let (app, _dir) = start(None).await;
    let port = app.admin_addr.port();
    let json = ("content-type", "application/json");

    // What an HTML form (or a "simple" cross-site fetch) can send.
    let r = action(&app, &[("content-type", "text/plain")]).await;
    assert_refused(&r, 415, "application/json", &app);
    let r = action(&app, &[]).await;
    assert_refused(&r, 415, "application/json", &app);
    // The attack as seen: text/plain, foreign Origin, foreign Host.
    let evil_host = format!("evil.example:{port}");
    let r = action(
        &app,
        &[
            ("content-type", "text/plain"),
            ("origin", "http://evil.example"),
            ("host", &evil_host),
        ],
    )
    .await;
    assert!(matches!(r.status(), Some(403 | 415 | 421)), "{}", r.head());
    assert_eq!(app.failover.snapshot().mode, Mode::Primary);

    let r = action(&app, &[json, ("origin", "http://evil.example")]).await;
    assert_refused(&r, 403, "origin", &app);
    // Another site on the same host is another origin.
    let r = action(&app, &[json, ("origin", "http://localhost:3000")]).await;
    assert_refused(&r, 403, "origin", &app);
    let r = action(&app, &[json, ("origin", "null")]).await;
    assert_refused(&r, 403, "origin", &app);
    // DNS rebinding: the page's own name in Host, on the admin's address.
    let r = action(&app, &[json, ("host", &evil_host)]).await;
    assert_refused(&r, 421, "host", &app);

    // A local client is served: its own origin, or a loopback name.
    let own = format!("http://{}", app.admin_addr);
    let localhost = format!("localhost:{port}");
    let r = action(&app, &[json, ("origin", &own), ("host", &localhost)]).await;
    assert_eq!(r.status(), Some(200), "{}\n{}", r.head(), r.body_str());
    assert_eq!(app.failover.snapshot().mode, Mode::FailoverReadOnly);
    app.shutdown().await;
}

#[tokio::test]
async fn with_a_token_any_host_is_served_but_a_foreign_origin_is_not() {
    let (app, _dir) = start(Some("guard-token\n")).await;
    let json = ("content-type", "application/json");
    let auth = ("authorization", "Bearer guard-token");

    let r = action(&app, &[json, auth, ("origin", "http://evil.example")]).await;
    assert_refused(&r, 403, "origin", &app);
    // Behind a load balancer or a port-forward, Host names anything.
    let r = action(&app, &[json, auth, ("host", "failway-admin.internal:443")]).await;
    assert_eq!(r.status(), Some(200), "{}\n{}", r.head(), r.body_str());
    assert_eq!(app.failover.snapshot().mode, Mode::FailoverReadOnly);
    app.shutdown().await;
}
