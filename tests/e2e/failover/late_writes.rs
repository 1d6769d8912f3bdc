//! A write's right to reach a region is checked when the write is sent,
//! not when its head arrived: an operator action or a lapsed lease while
//! its body trickles in decides where (and whether) it goes.

use crate::common;

use std::time::Duration;

use common::failway::{self as fw, Answer};
use common::upstream::FakeUpstream;
use failway::app::Running;
use failway::failover::machine::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

async fn admin(app: &Running, action: &str, body: &str) -> Answer {
    fw::req("POST", &format!("http://{}/admin/{action}", app.admin_addr))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
}

/// Reads one response head from `s` and returns its status code.
async fn status_of(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(T, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no response head in {text:?}"))
}

#[tokio::test]
async fn a_forced_failback_while_a_writes_body_arrives_keeps_it_off_the_replica() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    assert_eq!(
        admin(&app, "failover", r#"{"reason":"t"}"#).await.status,
        200
    );
    assert_eq!(
        admin(&app, "enable-writes", r#"{"reason":"t"}"#)
            .await
            .status,
        200
    );
    assert_eq!(app.failover.snapshot().mode, Mode::FailoverReadWrite);

    let mut s = TcpStream::connect(app.proxy_addr).await.unwrap();
    s.write_all(b"POST /api/v2/keys HTTP/1.1\r\nHost: kp\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a\":")
        .await
        .unwrap();
    // The head is in and the write routed; the operator fails back (force:
    // the replica's writes are given up) before the body is complete.
    // Time for the head to be routed (no event tells it from outside).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = admin(&app, "failback", r#"{"reason":"t","force":true}"#).await;
    assert_eq!(back.status, 200, "{:?}", back.body);
    assert!(!app.failover.snapshot().latch);
    s.write_all(b"\"b\"}\n").await.unwrap();
    let code = status_of(&mut s).await;
    assert_eq!(code, 503, "the write is refused, not sent");
    assert_eq!(replica.request_count(), 0, "nothing reached the replica");
    assert_eq!(primary.request_count(), 0, "nor the primary");
    assert!(
        !app.failover.snapshot().latch,
        "the latch stays as the operator left it"
    );
    app.shutdown().await;
}
