//! Tests of the end-to-end harness itself: if the fake upstream misreports
//! what it received or answers differently than scripted, every proxy test
//! built on it would be wrong in ways no proxy test could notice.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::upstream::{Behavior, Body, FakeBody, FakeUpstream, Response, MALFORMED_RESPONSE};
use common::{eventually, eventually_async, raw_exchange};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(2);
/// How long to watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(100);

fn client() -> Client<HttpConnector, FakeBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn empty() -> FakeBody {
    FakeBody::from(Body::Bytes(Vec::new()))
}

fn request(method: &str, uri: &str, body: FakeBody) -> http::Request<FakeBody> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .expect("valid test request")
}

async fn send(
    client: &Client<HttpConnector, FakeBody>,
    req: http::Request<FakeBody>,
) -> (http::response::Parts, Bytes) {
    let response = client.request(req).await.expect("request to fake upstream");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    (parts, body)
}

#[tokio::test]
async fn responds_as_scripted_and_records_the_request() {
    let up = FakeUpstream::start().await;
    let client = client();

    let (parts, body) = send(
        &client,
        request("GET", &format!("{}/a%2Fb?x=1", up.url()), empty()),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "ok");

    up.set_behavior(Behavior::Respond(
        Response::status(503).header("retry-after", "1"),
    ));
    let mut req = request("POST", &format!("{}/w", up.url()), empty());
    *req.body_mut() = FakeBody::from(Body::Bytes(b"hello".to_vec()));
    req.headers_mut()
        .insert("x-test", http::HeaderValue::from_static("yes"));
    let (parts, body) = send(&client, req).await;
    assert_eq!(parts.status, 503);
    assert_eq!(parts.headers["retry-after"], "1");
    assert!(body.is_empty());

    let recorded = up.requests();
    assert_eq!(up.request_count(), 2);
    assert_eq!(recorded[0].method, "GET");
    assert_eq!(recorded[0].uri, "/a%2Fb?x=1");
    assert_eq!(recorded[0].version, "HTTP/1.1");
    assert_eq!(recorded[1].method, "POST");
    assert_eq!(recorded[1].header("X-Test").as_deref(), Some("yes"));
    assert_eq!(recorded[1].body, b"hello");
    assert_eq!(recorded[1].body_len, 5);
}

#[tokio::test]
async fn script_sees_the_recorded_request() {
    let up = FakeUpstream::start().await;
    up.set_behavior(Behavior::script(|r| {
        Response::status(201).with_body(Body::Bytes(format!("{} {}", r.method, r.uri).into()))
    }));
    let (parts, body) = send(
        &client(),
        request("DELETE", &format!("{}/k?v=2", up.url()), empty()),
    )
    .await;
    assert_eq!(parts.status, 201);
    assert_eq!(body, "DELETE /k?v=2");
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn delay_answers_late_but_records_at_once() {
    let up = FakeUpstream::start().await;
    let delay = Duration::from_millis(150);
    up.set_behavior(Behavior::Delay(delay, Response::ok("late")));
    let started = Instant::now();
    let pending = tokio::spawn({
        let url = up.url();
        async move { send(&client(), request("GET", &url, empty())).await }
    });
    eventually(WAIT, "delayed request recorded", || up.request_count() == 1).await;
    let (parts, body) = pending.await.expect("client task");
    assert!(
        started.elapsed() >= delay,
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(parts.status, 200);
    assert_eq!(body, "late");
}

#[tokio::test]
async fn echo_streams_back_a_large_body_and_records_it_truncated() {
    const LEN: usize = 5 * 1024 * 1024;
    let up = FakeUpstream::start().await;
    up.set_behavior(Behavior::Echo);
    let mut req = request(
        "PUT",
        &up.url(),
        FakeBody::from(Body::Repeat {
            byte: b'x',
            len: LEN,
        }),
    );
    req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-test"),
    );
    let (parts, body) = send(&client(), req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        parts.headers[http::header::CONTENT_TYPE],
        "application/x-test"
    );
    assert_eq!(body.len(), LEN);
    assert!(body.iter().all(|&b| b == b'x'));

    let recorded = &up.requests()[0];
    assert_eq!(recorded.body_len, LEN);
    assert_eq!(recorded.body.len(), common::upstream::MAX_RECORDED_BODY);
    assert!(up.raw_byte_count() > LEN);
}

#[tokio::test]
async fn chunked_and_repeated_bodies_are_framed_as_promised() {
    let up = FakeUpstream::start().await;
    let get = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

    up.set_behavior(Behavior::Respond(
        Response::status(200).with_body(Body::Chunked(vec![b"ab".to_vec(), b"cde".to_vec()])),
    ));
    let raw = raw_exchange(up.addr(), get, WAIT).await;
    assert!(raw.closed);
    assert_eq!(raw.status(), Some(200));
    assert_eq!(raw.header("Transfer-Encoding").as_deref(), Some("chunked"));
    assert_eq!(raw.header("content-length"), None);
    assert_eq!(raw.body_str(), "2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n");

    up.set_behavior(Behavior::Respond(Response::status(200).with_body(
        Body::Repeat {
            byte: b'z',
            len: 100_000,
        },
    )));
    let raw = raw_exchange(up.addr(), get, WAIT).await;
    assert_eq!(raw.header("content-length").as_deref(), Some("100000"));
    assert_eq!(raw.body(), vec![b'z'; 100_000]);
}

#[tokio::test]
async fn reset_on_accept_fails_the_client_without_a_request() {
    let up = FakeUpstream::start().await;
    up.set_behavior(Behavior::ResetOnAccept);
    let result = client().request(request("GET", &up.url(), empty())).await;
    assert!(result.is_err(), "expected a client error, got {result:?}");

    let raw = raw_exchange(up.addr(), b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", WAIT).await;
    assert!(raw.reset, "{raw:?}");
    assert!(raw.bytes.is_empty());
    assert_eq!(up.connection_count(), 2);
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn close_on_accept_sends_a_clean_eof() {
    let up = FakeUpstream::start().await;
    up.set_behavior(Behavior::CloseOnAccept);
    let raw = raw_exchange(up.addr(), b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", WAIT).await;
    assert!(raw.closed && !raw.reset, "{raw:?}");
    assert!(raw.bytes.is_empty());
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn failures_after_the_request_record_it_first() {
    let up = FakeUpstream::start().await;
    let req = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi";

    up.set_behavior(Behavior::CloseAfterRequest);
    let raw = raw_exchange(up.addr(), req, WAIT).await;
    assert!(raw.closed && !raw.reset && raw.bytes.is_empty(), "{raw:?}");

    up.set_behavior(Behavior::ResetAfterRequest);
    let raw = raw_exchange(up.addr(), req, WAIT).await;
    assert!(raw.reset && raw.bytes.is_empty(), "{raw:?}");

    up.set_behavior(Behavior::Malformed);
    let raw = raw_exchange(up.addr(), req, WAIT).await;
    assert!(raw.closed, "{raw:?}");
    assert_eq!(raw.bytes, MALFORMED_RESPONSE);
    assert_eq!(raw.status(), None);

    assert_eq!(up.request_count(), 3);
    assert!(up.requests().iter().all(|r| r.body == b"hi"));
}

#[tokio::test]
async fn hang_records_the_request_and_keeps_the_connection_open() {
    let up = FakeUpstream::start().await;
    up.set_behavior(Behavior::Hang);
    let mut stream = TcpStream::connect(up.addr()).await.expect("connect");
    stream
        .write_all(b"GET /h HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    eventually(WAIT, "hung request recorded", || up.request_count() == 1).await;
    assert_eq!(up.open_connections(), 1);
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(QUIET, stream.read(&mut buf)).await;
    assert!(read.is_err(), "expected no answer, got {read:?}");

    // A client giving up is visible to the fake.
    drop(stream);
    eventually(WAIT, "hung connection closed", || {
        up.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn behavior_change_applies_to_the_next_request_on_an_open_connection() {
    let up = FakeUpstream::start().await;
    let mut stream = TcpStream::connect(up.addr()).await.expect("connect");
    let get = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    stream.write_all(get).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let mut got = Vec::new();
    while !got.ends_with(b"ok") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }

    up.set_behavior(Behavior::ResetAfterRequest);
    stream.write_all(get).await.expect("write");
    let read = stream.read(&mut buf).await;
    assert!(read.is_err(), "expected a reset, got {read:?}");
    assert_eq!(up.request_count(), 2);
    assert_eq!(up.connection_count(), 1);
}

#[tokio::test]
async fn raw_bytes_are_exact_and_headers_keep_every_value() {
    let up = FakeUpstream::start().await;
    let req: &[u8] = b"POST /x%20y?q=%2F HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: V1\r\n\
        x-mixed-case: v2\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let raw = raw_exchange(up.addr(), req, WAIT).await;
    assert_eq!(raw.status(), Some(200));
    assert_eq!(up.raw_bytes(), req);
    assert_eq!(up.raw_byte_count(), req.len());

    let recorded = &up.requests()[0];
    assert_eq!(recorded.uri, "/x%20y?q=%2F");
    assert_eq!(recorded.header_all("X-MIXED-CASE"), vec!["V1", "v2"]);
    assert!(recorded.headers.iter().all(|(k, _)| *k == k.to_lowercase()));
    assert_eq!(recorded.body_str(), "abc");

    // Bytes hyper cannot parse still land in the log, and are no request.
    let garbage = b"NOT HTTP AT ALL\r\n\r\n";
    raw_exchange(up.addr(), garbage, WAIT).await;
    assert!(up.raw_bytes().ends_with(garbage));
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn stop_refuses_new_connections_and_drops_open_ones() {
    let up = FakeUpstream::start().await;
    let mut open = TcpStream::connect(up.addr()).await.expect("connect");
    eventually(WAIT, "connection accepted", || up.open_connections() == 1).await;

    up.stop().await;
    assert_eq!(up.open_connections(), 0);
    let refused = TcpStream::connect(up.addr()).await;
    assert!(refused.is_err(), "port still accepts after stop");
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(WAIT, open.read(&mut buf))
        .await
        .expect("open connection closed by stop");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_fake() {
    let up = FakeUpstream::start().await;
    let addr = up.addr();
    let other = up.clone();
    drop(up);
    assert!(
        TcpStream::connect(addr).await.is_ok(),
        "a clone keeps it running"
    );
    drop(other);
    eventually_async(WAIT, "port refuses after drop", || async move {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn h2_prior_knowledge_works() {
    let up = FakeUpstream::start_h2().await;
    let client: Client<HttpConnector, FakeBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let (parts, body) = send(
        &client,
        request("GET", &format!("{}/h2?x=1", up.url()), empty()),
    )
    .await;
    assert_eq!(parts.version, http::Version::HTTP_2);
    assert_eq!(body, "ok");

    up.set_behavior(Behavior::Echo);
    let req = request(
        "POST",
        &up.url(),
        FakeBody::from(Body::Chunked(vec![b"a".to_vec(), b"b".to_vec()])),
    );
    let (_, body) = send(&client, req).await;
    assert_eq!(body, "ab");

    let recorded = up.requests();
    assert_eq!(recorded[0].version, "HTTP/2.0");
    assert_eq!(recorded[0].uri, "/h2?x=1");
    assert_eq!(recorded[1].body, b"ab");
    assert!(up.raw_bytes().starts_with(b"PRI * HTTP/2.0\r\n"));
}
