//! End-to-end tests of the data path: failway in-process between a test
//! client and scripted fake upstreams, all on loopback ephemeral ports.

use crate::common;

use std::time::Duration;

use common::failway as fw;
use common::upstream::{Behavior, Body, FakeUpstream, Response};
use common::{eventually, raw_exchange};
use failway::config::ByteSize;

const T: Duration = Duration::from_secs(5);

async fn pair() -> (FakeUpstream, FakeUpstream) {
    (FakeUpstream::start().await, FakeUpstream::start().await)
}

#[tokio::test]
async fn forwards_method_path_query_headers_and_bodies_unchanged() {
    let (primary, replica) = pair().await;
    primary.set_behavior(Behavior::Script(std::sync::Arc::new(|_req| {
        Response::ok("answer-body")
            .header("x-upstream", "yes")
            .header("content-type", "application/vnd.ibm.kms.key+json")
    })));
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let target =
        "/api/v2/keys/abc%2Fdef/registrations/crn%3Av1%3Abluemix?state=&limit=10&x=%7B%22a%22%7D";
    let ans = fw::req("PUT", &format!("{}{target}", fw::url(&app)))
        .header("authorization", "Bearer tok")
        .header("bluemix-instance", "inst-1")
        .header("x-custom", "v1")
        .header("correlation-id", "cid-42")
        .body("request-body")
        .send()
        .await;
    assert_eq!(ans.status, 200);
    assert_eq!(&ans.body[..], b"answer-body");
    assert_eq!(ans.header("x-upstream"), Some("yes"));
    assert_eq!(
        ans.header("content-type"),
        Some("application/vnd.ibm.kms.key+json")
    );
    assert_eq!(ans.header("failway-region"), Some("primary"));

    let reqs = primary.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "PUT");
    assert_eq!(r.uri, target, "path and query are forwarded byte for byte");
    assert_eq!(r.body, b"request-body");
    assert_eq!(r.header("authorization").as_deref(), Some("Bearer tok"));
    assert_eq!(r.header("bluemix-instance").as_deref(), Some("inst-1"));
    assert_eq!(r.header("x-custom").as_deref(), Some("v1"));
    assert_eq!(r.header("correlation-id").as_deref(), Some("cid-42"));
    assert_eq!(r.header("host"), Some(primary.addr().to_string()));
    assert_eq!(r.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        r.header("x-forwarded-host"),
        Some(app.proxy_addr.to_string())
    );
    assert_eq!(
        replica.request_count(),
        0,
        "nothing goes to the replica in primary mode"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn upstream_statuses_pass_through_and_a_correlation_id_is_added() {
    let (primary, replica) = pair().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    // Writes: an upstream's answer is relayed as it is, never retried.
    for status in [201u16, 204, 404, 409, 429, 500, 503] {
        primary.set_behavior(Behavior::Respond(Response::status(status)));
        let ans = fw::req("POST", &format!("{}/s", fw::url(&app)))
            .send()
            .await;
        assert_eq!(ans.status, status);
        assert_eq!(ans.header("failway-region"), Some("primary"));
    }
    let reqs = primary.requests();
    let id = reqs[0]
        .header("correlation-id")
        .expect("a correlation id is added");
    assert_eq!(id.len(), 36);
    // X-Correlation-ID (the Python SDK's) is copied into correlation-id.
    fw::req("GET", &format!("{}/s", fw::url(&app)))
        .header("x-correlation-id", "py-sdk-id")
        .send()
        .await;
    let last = primary.requests().pop().unwrap();
    assert_eq!(last.header("correlation-id").as_deref(), Some("py-sdk-id"));
    app.shutdown().await;
}

#[tokio::test]
async fn host_header_preserve_keeps_the_clients_host() {
    let (primary, replica) = pair().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.host_header = failway::config::HostHeader::Preserve;
    let app = fw::start(cfg).await;
    fw::req("GET", &format!("{}/", fw::url(&app)))
        .header("host", "kms.example")
        .send()
        .await;
    assert_eq!(
        primary.requests()[0].header("host").as_deref(),
        Some("kms.example")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn trusted_proxies_keep_forwarded_for_others_replace_it() {
    let (primary, replica) = pair().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    fw::req("GET", &format!("{}/", fw::url(&app)))
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await;
    assert_eq!(
        primary.requests()[0].header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    app.shutdown().await;

    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let app = fw::start(cfg).await;
    fw::req("GET", &format!("{}/", fw::url(&app)))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await;
    assert_eq!(
        primary.requests()[1].header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let (primary, replica) = pair().await;
    primary.set_behavior(Behavior::Respond(
        Response::ok("x")
            .header("connection", "x-resp-hop")
            .header("x-resp-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("x-resp-keep", "1"),
    ));
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let raw = raw_exchange(
        app.proxy_addr,
        b"GET /h HTTP/1.1\r\nHost: a\r\nConnection: x-req-hop\r\nX-Req-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: Basic x\r\nX-HTTP-Method-Override: DELETE\r\nX-Req-Keep: 1\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(raw.status(), Some(200));
    assert!(raw.header("x-resp-hop").is_none());
    assert!(raw.header("keep-alive").is_none());
    assert_eq!(raw.header("x-resp-keep").as_deref(), Some("1"));
    let r = &primary.requests()[0];
    for gone in [
        "x-req-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-http-method-override",
    ] {
        assert!(
            r.header(gone).is_none(),
            "{gone} must not reach the upstream"
        );
    }
    assert_eq!(r.header("x-req-keep").as_deref(), Some("1"));
    app.shutdown().await;
}

#[tokio::test]
async fn large_bodies_stream_both_ways_byte_identical() {
    let (primary, replica) = pair().await;
    primary.set_behavior(Behavior::Echo);
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.max_request_body = ByteSize(16 << 20);
    let app = fw::start(cfg).await;
    let body: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let ans = fw::req("POST", &format!("{}/echo", fw::url(&app)))
        .body(body.clone())
        .send()
        .await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.body.len(), body.len());
    assert!(ans.body[..] == body[..], "echoed body differs");

    primary.set_behavior(Behavior::Respond(Response {
        status: 200,
        headers: vec![],
        body: Body::Repeat {
            byte: b'z',
            len: 10 * 1024 * 1024,
        },
    }));
    let ans = fw::req("GET", &format!("{}/big", fw::url(&app)))
        .send()
        .await;
    assert_eq!(ans.body.len(), 10 * 1024 * 1024);
    assert!(ans.body.iter().all(|&b| b == b'z'));
    app.shutdown().await;
}

#[tokio::test]
async fn chunked_request_and_response_bodies_are_forwarded() {
    let (primary, replica) = pair().await;
    primary.set_behavior(Behavior::Respond(Response {
        status: 200,
        headers: vec![],
        body: Body::Chunked(vec![b"ab".to_vec(), b"cd".to_vec()]),
    }));
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let raw = raw_exchange(
        app.proxy_addr,
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        T,
    )
    .await;
    assert_eq!(raw.status(), Some(200));
    assert!(raw.body_str().contains('a'));
    let r = &primary.requests()[0];
    assert_eq!(r.body, b"hello world");
    assert!(r.header("transfer-encoding").is_none() || r.header("content-length").is_none());
    app.shutdown().await;
}

// ----- limits and bad input: each answer is checked, and the upstream got nothing -----

async fn refused(app: &failway::app::Running, request: &[u8]) -> common::RawResponse {
    raw_exchange(app.proxy_addr, request, Duration::from_secs(2)).await
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431_and_nothing_is_forwarded() {
    let (primary, replica) = pair().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let r = refused(&app, big.as_bytes()).await;
    assert_eq!(r.status(), Some(431));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/vnd.ibm.kms.error+json")
    );
    assert!(r.body_str().contains("FAILWAY_HEADERS_TOO_LARGE_ERR"));

    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..120 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = refused(&app, many.as_bytes()).await;
    assert_eq!(r.status(), Some(431));
    // Far past every limit: hyper's own parser refuses it, still 431.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let r = refused(&app, huge.as_bytes()).await;
    assert_eq!(r.status(), Some(431));
    assert_eq!(
        primary.raw_byte_count(),
        0,
        "upstream must receive zero bytes"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_declared_or_chunked() {
    let (primary, replica) = pair().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.max_request_body = ByteSize(1000);
    let app = fw::start(cfg).await;
    let r = refused(
        &app,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), Some(413));
    assert!(r.closed, "the connection is closed after a refused body");
    let mut chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"190\r\n");
        chunked.extend_from_slice(&[b'x'; 400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = refused(&app, &chunked).await;
    assert_eq!(r.status(), Some(413));
    assert_eq!(
        primary.raw_byte_count(),
        0,
        "a body over the limit within the buffer sends nothing"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_large_chunked_body_over_the_limit_stops_mid_stream_with_413() {
    let (primary, replica) = pair().await;
    primary.set_behavior(Behavior::Echo);
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.max_request_body = ByteSize(256 * 1024);
    let app = fw::start(cfg).await;
    let mut chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..40 {
        chunked.extend_from_slice(b"2000\r\n");
        chunked.extend_from_slice(&[b'x'; 0x2000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = refused(&app, &chunked).await;
    assert_eq!(r.status(), Some(413));
    assert!(
        primary.raw_byte_count() <= 300 * 1024,
        "nothing past the limit is forwarded"
    );
    assert_eq!(
        primary.request_count(),
        0,
        "the upstream never sees a complete request"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let (primary, replica) = pair().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.body_idle_timeout = Duration::from_millis(300);
    let app = fw::start(cfg).await;
    let r = refused(
        &app,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    assert_eq!(r.status(), Some(408));
    assert!(r.body_str().contains("FAILWAY_BODY_TIMEOUT_ERR"));
    assert_eq!(primary.raw_byte_count(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn upgrade_and_connect_get_501() {
    let (primary, replica) = pair().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let r = refused(
        &app,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), Some(501));
    let r = refused(
        &app,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), Some(501));
    assert_eq!(primary.raw_byte_count(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn connection_naming_a_relied_on_header_gets_400() {
    let (primary, replica) = pair().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    for named in ["Host", "Authorization", "X-Forwarded-For", "correlation-id"] {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nConnection: {named}\r\n\r\n"
        );
        let r = refused(&app, req.as_bytes()).await;
        assert_eq!(r.status(), Some(400), "Connection: {named}");
        assert!(r.closed);
    }
    assert_eq!(primary.raw_byte_count(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn ambiguous_framing_gets_400_closes_and_sends_nothing_upstream() {
    let (primary, replica) = pair().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let attacks: &[&[u8]] = &[
        // obfuscated transfer-coding
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        // differing duplicate content-length, bad content-length
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
        // bad chunk sizes
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        // HTTP/1.0 with transfer-encoding
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    for (i, attack) in attacks.iter().enumerate() {
        let r = refused(&app, attack).await;
        assert_eq!(
            r.status(),
            Some(400),
            "attack #{i}: {:?}",
            String::from_utf8_lossy(attack)
        );
        assert!(r.closed, "attack #{i}: connection must be closed");
    }
    assert_eq!(
        primary.raw_byte_count(),
        0,
        "the upstream must receive zero bytes"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn content_length_with_chunked_is_framed_by_chunked_and_nothing_is_smuggled() {
    let (primary, replica) = pair().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let r = refused(
        &app,
        b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    // RFC 9112 §6.3: Transfer-Encoding wins, and the connection closes after
    // the response, so the trailing bytes are never read as a request.
    assert_eq!(r.status(), Some(200));
    assert!(r.closed, "the connection must close after such a request");
    assert_eq!(
        r.bytes.windows(9).filter(|w| w == b"HTTP/1.1 ").count(),
        1,
        "one response only"
    );
    let reqs = primary.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].uri, "/first");
    assert!(reqs[0].body.is_empty());
    let raw = String::from_utf8_lossy(&primary.raw_bytes()).to_string();
    assert!(
        !raw.contains("smuggled"),
        "smuggled request reached the upstream: {raw}"
    );
    app.shutdown().await;
}

// ----- upstream failures map to 502/504 in the profile's format -----

#[tokio::test]
async fn upstream_failures_map_to_502_and_504() {
    let (primary, replica) = pair().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.request_timeout = Duration::from_millis(500);
    cfg.retry.per_try_timeout = Duration::from_millis(500);
    let app = fw::start(cfg).await;
    let get = || async { fw::req("GET", &format!("{}/x", fw::url(&app))).send().await };

    primary.set_behavior(Behavior::Malformed);
    let ans = get().await;
    assert_eq!(ans.status, 502);
    assert_eq!(
        ans.json()["resources"][0]["reasons"][0]["code"],
        "FAILWAY_UPSTREAM_PROTOCOL_ERR"
    );
    assert!(
        ans.header("failway-region").is_none(),
        "failway's own answers name no region"
    );

    // Reset by both regions (a read's last attempt goes to the replica).
    primary.set_behavior(Behavior::ResetAfterRequest);
    replica.set_behavior(Behavior::ResetAfterRequest);
    assert_eq!(get().await.status, 502);

    primary.set_behavior(Behavior::Hang);
    let started = std::time::Instant::now();
    let ans = get().await;
    assert_eq!(ans.status, 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // Both regions refuse: a read tried on each still ends in a 502.
    primary.stop().await;
    replica.stop().await;
    let ans = get().await;
    assert_eq!(ans.status, 502);
    assert_eq!(
        ans.json()["resources"][0]["reasons"][0]["code"],
        "FAILWAY_UPSTREAM_CONNECT_ERR"
    );
    assert_eq!(
        ans.json()["message"],
        "the upstream region could not be reached"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_malformed_upstream_connection_is_not_reused() {
    let (primary, replica) = pair().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    primary.set_behavior(Behavior::Malformed);
    let get = || async { fw::req("GET", &format!("{}/x", fw::url(&app))).send().await };
    assert_eq!(get().await.status, 502);
    primary.set_behavior(Behavior::Respond(Response::ok("fine")));
    assert_eq!(get().await.status, 200);
    assert_eq!(
        primary.connection_count(),
        2,
        "a fresh connection after the malformed one"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn http_methods_profile_answers_problem_json() {
    let (primary, replica) = pair().await;
    let app = fw::start(fw::config(
        &primary.url(),
        &replica.url(),
        "[classify]\nprofile = \"http-methods\"",
    ))
    .await;
    primary.stop().await;
    // A write never moves to the replica: after its retries on the primary,
    // failway answers 502 itself.
    let ans = fw::req("POST", &format!("{}/x", fw::url(&app)))
        .send()
        .await;
    assert_eq!(ans.status, 502);
    assert_eq!(replica.request_count(), 0);
    assert_eq!(ans.header("content-type"), Some("application/problem+json"));
    assert_eq!(ans.json()["code"], "FAILWAY_UPSTREAM_CONNECT_ERR");
    app.shutdown().await;
}

// ----- connections: limits, timeouts, h2, shutdown -----

#[tokio::test]
async fn max_connections_closes_the_excess_and_keeps_serving_the_rest() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (primary, replica) = pair().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.max_connections = 2;
    let app = fw::start(cfg).await;
    let mut a = tokio::net::TcpStream::connect(app.proxy_addr)
        .await
        .unwrap();
    let mut b = tokio::net::TcpStream::connect(app.proxy_addr)
        .await
        .unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    a.write_all(get).await.unwrap();
    b.write_all(get).await.unwrap();
    let mut buf = [0u8; 512];
    assert!(a.read(&mut buf).await.unwrap() > 0);
    assert!(b.read(&mut buf).await.unwrap() > 0);
    // The third is closed at once.
    let mut c = tokio::net::TcpStream::connect(app.proxy_addr)
        .await
        .unwrap();
    let _ = c.write_all(get).await;
    let n = tokio::time::timeout(T, c.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "third connection must be closed"
    );
    // The first two still work.
    a.write_all(get).await.unwrap();
    let n = a.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    app.shutdown().await;
}

#[tokio::test]
async fn slowloris_heads_are_cut_off_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (primary, replica) = pair().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.header_read_timeout = Duration::from_millis(300);
    cfg.proxy.idle_timeout = Duration::from_secs(60);
    let app = fw::start(cfg).await;
    let mut s = tokio::net::TcpStream::connect(app.proxy_addr)
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)));
    // Closed long before idle_timeout (60 s): the head timer applied.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(primary.raw_byte_count(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_slow_head_after_keep_alive_requests_is_cut_off_on_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (primary, replica) = pair().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.header_read_timeout = Duration::from_millis(300);
    cfg.proxy.idle_timeout = Duration::from_secs(60);
    let app = fw::start(cfg).await;
    let mut s = tokio::net::TcpStream::connect(app.proxy_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    // Idle for a while (keep-alive allows it), then a head that never ends.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let forwarded = primary.raw_byte_count();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "cut off after {took:?}, header_read_timeout is 300 ms"
    );
    assert_eq!(primary.raw_byte_count(), forwarded);
    app.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_timeout_until_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (primary, replica) = pair().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.header_read_timeout = Duration::from_millis(200);
    cfg.proxy.idle_timeout = Duration::from_millis(900);
    let app = fw::start(cfg).await;
    let mut s = tokio::net::TcpStream::connect(app.proxy_addr)
        .await
        .unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut buf = [0u8; 512];
    s.write_all(get).await.unwrap();
    assert!(s.read(&mut buf).await.unwrap() > 0);
    // Idle past the header timeout, within the idle timeout: still usable.
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.write_all(get).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then idle past the idle timeout: closed.
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(T, s.read(&mut buf))
        .await
        .expect("closed when idle");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(started.elapsed() >= Duration::from_millis(700));
    app.shutdown().await;
}

#[tokio::test]
async fn h2c_downstream_and_h2_upstream_work() {
    let primary = FakeUpstream::start_h2().await;
    let replica = FakeUpstream::start().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    app.shutdown().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.upstreams.primary.http2 = true;
    let app = fw::start(cfg).await;
    let ans = fw::req("POST", &format!("{}/h2?q=1", fw::url(&app)))
        .body("b")
        .send_on(&fw::h2_client())
        .await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.header("failway-region"), Some("primary"));
    let r = &primary.requests()[0];
    assert_eq!(r.uri, "/h2?q=1");
    assert_eq!(r.version, "HTTP/2.0");
    assert_eq!(r.body, b"b");
    app.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let (primary, replica) = pair().await;
    primary.set_behavior(Behavior::Delay(
        Duration::from_millis(600),
        Response::ok("late"),
    ));
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let url = format!("{}/slow", fw::url(&app));
    let addr = app.proxy_addr;
    let inflight = tokio::spawn(async move { fw::req("GET", &url).send().await });
    eventually(T, "request reached the upstream", || {
        primary.connection_count() == 1
    })
    .await;
    let clean = app.shutdown().await;
    assert!(clean, "in-flight request finished within the grace period");
    let ans = inflight.await.unwrap();
    assert_eq!(ans.status, 200);
    assert_eq!(&ans.body[..], b"late");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn upstream_connections_are_reused_after_bodies_end_and_closed_when_idle() {
    let (primary, replica) = pair().await;
    // Large enough that the answer is still streaming when its head arrives.
    let big = vec![b'x'; 512 * 1024];
    primary.set_behavior(Behavior::Script(std::sync::Arc::new(move |_req| {
        Response::ok(big.clone())
    })));
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.upstreams.primary.pool_idle_timeout = Duration::from_millis(300);
    let app = fw::start(cfg).await;
    let client = fw::client();
    for _ in 0..5 {
        let ans = fw::req("GET", &format!("{}/big", fw::url(&app)))
            .send_on(&client)
            .await;
        assert_eq!(ans.status, 200);
        assert_eq!(ans.body.len(), 512 * 1024);
    }
    assert_eq!(
        primary.connection_count(),
        1,
        "sequential requests share one upstream connection once each body is read"
    );
    eventually(T, "the idle upstream connection is closed", || {
        primary.open_connections() == 0
    })
    .await;
    let ans = fw::req("GET", &format!("{}/again", fw::url(&app)))
        .send_on(&client)
        .await;
    assert_eq!(ans.status, 200);
    assert_eq!(
        primary.connection_count(),
        2,
        "a new connection after the idle one closed"
    );
    app.shutdown().await;
}

/// `n` GETs of `url` at once, each on its own client connection.
async fn get_concurrently(url: &str, n: usize) -> Vec<common::failway::Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { fw::req("GET", &url).send().await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("request task"));
    }
    answers
}

#[tokio::test]
async fn concurrent_requests_use_separate_upstream_connections() {
    let (primary, replica) = pair().await;
    primary.set_behavior(Behavior::Delay(
        Duration::from_millis(200),
        Response::ok("slow"),
    ));
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    let url = format!("{}/slow", fw::url(&app));
    for a in get_concurrently(&url, 4).await {
        assert_eq!(a.status, 200);
        assert_eq!(&a.body[..], b"slow");
    }
    assert_eq!(
        primary.connection_count(),
        4,
        "HTTP/1.1 sends one request per connection at a time"
    );
    // Then they are all pooled: four more concurrent requests make none.
    for a in get_concurrently(&url, 4).await {
        assert_eq!(a.status, 200);
    }
    assert_eq!(
        primary.connection_count(),
        4,
        "pooled connections are reused"
    );
    app.shutdown().await;
}
