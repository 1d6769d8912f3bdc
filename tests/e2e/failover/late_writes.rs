//! A write's right to reach a region is checked when the write is sent,
//! not when its head arrived: an operator action or a lapsed lease while
//! its body trickles in decides where (and whether) it goes.

use crate::common;

use std::time::Duration;

use common::failway as fw;
use common::upstream::FakeUpstream;
use failway::failover::machine::Mode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_forced_failback_while_a_writes_body_arrives_keeps_it_off_the_replica() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = fw::start(fw::config(&primary.url(), &replica.url(), "")).await;
    assert_eq!(
        fw::admin_post(&app, "failover", r#"{"reason":"t"}"#)
            .await
            .status,
        200
    );
    assert_eq!(
        fw::admin_post(&app, "enable-writes", r#"{"reason":"t"}"#)
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
    let back = fw::admin_post(&app, "failback", r#"{"reason":"t","force":true}"#).await;
    assert_eq!(back.status, 200, "{:?}", back.body);
    assert!(!app.failover.snapshot().latch);
    s.write_all(b"\"b\"}\n").await.unwrap();
    let code = common::read_status(&mut s).await;
    assert_eq!(code, 503, "the write is refused, not sent");
    assert_eq!(replica.request_count(), 0, "nothing reached the replica");
    assert_eq!(primary.request_count(), 0, "nor the primary");
    assert!(
        !app.failover.snapshot().latch,
        "the latch stays as the operator left it"
    );
    app.shutdown().await;
}
