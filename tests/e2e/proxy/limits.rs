//! Resource limits of a gateway: upstream connections per region, clients
//! that stop reading, and failway's own file descriptors. Running out of
//! them is failway's problem, never a region's: no failover follows.

use crate::common;

use std::time::Duration;

use common::failway as fw;
use common::upstream::{Behavior, Body, FakeUpstream, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

const T: Duration = Duration::from_secs(10);

/// The default `upstreams.*.max_connections`.
const DEFAULT_CAP: usize = 256;

/// A few h2 client connections opening 600 streams at once against a
/// region that never answers take at most the region's cap of upstream
/// connections; the streams past it wait, then get 503 (nothing was sent),
/// and the admin API answers all the while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_fan_out_stays_within_the_regions_connection_cap() {
    const STREAMS: usize = 600;
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    primary.set_behavior(Behavior::Hang);
    let mut cfg = fw::config(
        &primary.url(),
        &replica.url(),
        "[classify]\nprofile = \"http-methods\"",
    );
    cfg.retry.max_attempts = 1;
    cfg.proxy.shutdown_grace = Duration::from_millis(200);
    let app = fw::start(cfg).await;
    // The server takes 256 streams per connection: three connections.
    let clients: Vec<_> = (0..3).map(|_| fw::h2_client()).collect();
    let mut streams = JoinSet::new();
    for i in 0..STREAMS {
        let client = clients[i % clients.len()].clone();
        let url = format!("{}/keys/{i}", fw::url(&app));
        streams.spawn(async move { fw::req("GET", &url).send_on(&client).await });
    }
    let admin = format!("http://{}/status", app.admin_addr);
    let mut most = 0;
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers.len() < STREAMS - DEFAULT_CAP {
        most = most.max(primary.open_connections());
        let status = tokio::time::timeout(T, fw::req("GET", &admin).send())
            .await
            .expect("the admin API answers while the streams wait");
        assert_eq!(status.status, 200);
        assert_eq!(status.json()["mode"], "primary");
        tokio::select! {
            Some(done) = streams.join_next() => answers.push(done.expect("stream task")),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{} of {STREAMS} streams answered; {most} upstream connections at most",
            answers.len()
        );
    }
    most = most.max(primary.open_connections());
    assert!(
        most <= DEFAULT_CAP && primary.connection_count() <= DEFAULT_CAP,
        "{most} upstream connections open at once, {} made (cap {DEFAULT_CAP})",
        primary.connection_count()
    );
    for a in &answers {
        assert_eq!(a.status, 503, "{:?}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.json()["code"], "FAILWAY_UPSTREAM_BUSY_ERR");
        assert!(a.header("retry-after").is_some());
        assert!(a.header("failway-region").is_none());
    }
    assert_eq!(
        replica.request_count(),
        0,
        "a busy region is no reason to move"
    );
    assert_eq!(app.failover.snapshot().mode.as_str(), "primary");
    drop(streams);
    app.shutdown().await;
}

/// Over h2 to the region, the cap counts requests awaiting their answer:
/// they share one connection, and those past the cap wait, then get 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_regions_cap_bounds_the_requests_awaiting_an_answer() {
    const CAP: usize = 8;
    const REQUESTS: usize = 20;
    let (primary, replica) = (FakeUpstream::start_h2().await, FakeUpstream::start().await);
    primary.set_behavior(Behavior::Hang);
    let mut cfg = fw::config(
        &primary.url(),
        &replica.url(),
        "[classify]\nprofile = \"http-methods\"",
    );
    cfg.upstreams.primary.http2 = true;
    cfg.upstreams.primary.max_connections = CAP;
    cfg.retry.max_attempts = 1;
    cfg.proxy.shutdown_grace = Duration::from_millis(200);
    let app = fw::start(cfg).await;
    let client = fw::h2_client();
    let mut requests = JoinSet::new();
    for i in 0..REQUESTS {
        let client = client.clone();
        let url = format!("{}/keys/{i}", fw::url(&app));
        requests.spawn(async move { fw::req("GET", &url).send_on(&client).await });
    }
    let mut answers = Vec::new();
    while answers.len() < REQUESTS - CAP {
        let done = tokio::time::timeout(Duration::from_secs(20), requests.join_next())
            .await
            .expect("the requests past the cap are answered")
            .expect("a request is left");
        answers.push(done.expect("request task"));
    }
    for a in &answers {
        assert_eq!(a.status, 503, "{:?}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.json()["code"], "FAILWAY_UPSTREAM_BUSY_ERR");
    }
    assert_eq!(primary.request_count(), CAP);
    // Usually one multiplexed connection; requests racing the first
    // connect may open a few, never more than the cap.
    assert!(
        primary.connection_count() <= CAP,
        "{} connections",
        primary.connection_count()
    );
    drop(requests);
    app.shutdown().await;
}

/// 256 MiB: more than every socket buffer between the region and a client
/// that stopped reading holds.
const LARGE: usize = 256 * 1024 * 1024;

/// A region answering LARGE bodies behind failway with a 500 ms
/// `proxy.response_idle_timeout`.
async fn large_answers() -> (FakeUpstream, FakeUpstream, failway::app::Running) {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    primary.set_behavior(Behavior::Respond(Response::status(200).with_body(
        Body::Repeat {
            byte: b'x',
            len: LARGE,
        },
    )));
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.response_idle_timeout = Duration::from_millis(500);
    let app = fw::start(cfg).await;
    (primary, replica, app)
}

/// A client that sends a request and never reads the large answer is cut
/// off after `proxy.response_idle_timeout`, and the upstream connection
/// that carried the answer is released.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_its_upstream_connection_released() {
    let (primary, _replica, app) = large_answers().await;
    let mut s = TcpStream::connect(app.proxy_addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(T, s.read(&mut head))
        .await
        .expect("the answer starts")
        .unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    // The client reads nothing more.
    common::eventually(T, "the upstream connection released", || {
        primary.connection_count() == 1 && primary.open_connections() == 0
    })
    .await;
    // What the kernel buffered drains, then the connection ends.
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0usize;
    loop {
        match tokio::time::timeout(T, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => read += n,
            Err(_) => panic!("the client connection is still open after {read} bytes"),
        }
    }
    assert!(read < LARGE, "the whole answer was sent");
    app.shutdown().await;
}

/// On h2, a stream whose flow-control window stays closed (the client does
/// not read its body) is reset after `proxy.response_idle_timeout` and its
/// upstream connection released; the client connection keeps serving.
#[tokio::test]
async fn an_h2_stream_left_unread_is_reset_and_the_connection_keeps_serving() {
    let (primary, _replica, app) = large_answers().await;
    let client = fw::h2_client();
    let req = http::Request::get(format!("{}/big", fw::url(&app)))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(T, client.request(req))
        .await
        .expect("the answer starts")
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The body is held, not read: the stream's window closes.
    common::eventually(T, "the upstream connection released", || {
        primary.connection_count() == 1 && primary.open_connections() == 0
    })
    .await;
    let body = tokio::time::timeout(T, resp.into_body().collect())
        .await
        .expect("the stream ended");
    assert!(body.is_err(), "the stream was reset, not completed");
    primary.set_behavior(Behavior::Respond(Response::ok("small")));
    let again = fw::req("GET", &format!("{}/small", fw::url(&app)))
        .send_on(&client)
        .await;
    assert_eq!((again.status, &again.body[..]), (200, &b"small"[..]));
    app.shutdown().await;
}
