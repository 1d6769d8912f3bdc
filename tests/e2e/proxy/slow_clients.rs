//! Slow and hostile clients: their slowness is theirs, never a region's.

use crate::common;

use std::time::Duration;

use common::failway as fw;
use common::upstream::{Behavior, FakeUpstream};
use failway::config::ByteSize;
use failway::failover::machine::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

/// Sends a POST whose body (`chunks` x 1 KiB, Content-Length framed)
/// trickles in one chunk every `every`, and returns the status line's code.
async fn trickle_upload(addr: std::net::SocketAddr, chunks: usize, every: Duration) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/v2/keys/k1?action=wrap HTTP/1.1\r\nHost: kp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        chunks * 1024
    );
    s.write_all(head.as_bytes()).await.expect("head");
    for _ in 0..chunks {
        tokio::time::sleep(every).await;
        if s.write_all(&[b'a'; 1024]).await.is_err() {
            break;
        }
    }
    common::read_status(&mut s).await
}

/// A body that streams past the replay buffer and trickles in for longer
/// than `per_try_timeout` (but never idles past `body_idle_timeout`) is
/// forwarded whole; the region is not judged for the client's pace, so
/// many such uploads leave a healthy primary in charge.
#[tokio::test]
async fn a_slow_upload_is_forwarded_and_never_fails_a_healthy_region_over() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    primary.set_behavior(Behavior::Echo);
    let mut cfg = fw::config(&primary.url(), &replica.url(), &fw::fast_health(""));
    cfg.retry.buffer_body = ByteSize(1024);
    cfg.retry.per_try_timeout = Duration::from_millis(300);
    cfg.proxy.body_idle_timeout = Duration::from_secs(2);
    cfg.proxy.request_timeout = Duration::from_secs(20);
    cfg.health.passive.min_requests = 4;
    cfg.health.passive.error_ratio = 0.5;
    cfg.health.passive.window = Duration::from_secs(30);
    let app = fw::start_probing(cfg).await;
    common::eventually(T, "primary healthy", || {
        app.failover
            .snapshot()
            .region(failway::region::Region::Primary)
            .health
            == failway::failover::machine::Health::Healthy
    })
    .await;
    let uploads: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(trickle_upload(
                app.proxy_addr,
                4,
                Duration::from_millis(250),
            ))
        })
        .collect();
    let mut statuses = Vec::new();
    for u in uploads {
        statuses.push(u.await.expect("upload task"));
    }
    assert_eq!(
        statuses,
        vec![200; 8],
        "every slow upload is answered by the primary"
    );
    let full = primary
        .requests()
        .iter()
        .filter(|r| r.body_len == 4 * 1024)
        .count();
    assert_eq!(full, 8, "each body reached the primary whole");
    fw::probes_evaluated(&app, failway::region::Region::Primary, 2).await;
    assert_eq!(app.failover.snapshot().mode, Mode::Primary);
    app.shutdown().await;
}

/// Reads from `s` until it closes (`Some(bytes)`), or `None` if it is still
/// open after `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One read holding whole requests and the start of the next head: the
/// partial head is cut at `header_read_timeout` (300 ms), not left for
/// `idle_timeout` (60 s); the whole requests are answered first.
#[tokio::test]
async fn a_pipelined_partial_head_is_cut_at_the_header_read_timeout() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.header_read_timeout = Duration::from_millis(300);
    cfg.proxy.idle_timeout = Duration::from_secs(60);
    let app = fw::start(cfg).await;
    for whole in [
        &b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\ncontent-length:  3\r\n\r\nabc",
    ] {
        let mut s = TcpStream::connect(app.proxy_addr).await.unwrap();
        let mut bytes = whole.to_vec();
        bytes.extend_from_slice(b"GET /c HTTP/1.1\r\nHost: a\r\nX-Slow: ");
        s.write_all(&bytes).await.unwrap();
        // Closed well before idle_timeout: the head timer applied.
        let got = read_until_closed(&mut s, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("still open after 20 s: {:?}", String::from_utf8_lossy(whole)));
        let answered = String::from_utf8_lossy(&got).matches("HTTP/1.1 200").count();
        let expected = String::from_utf8_lossy(whole).matches(" HTTP/1.1\r\n").count();
        assert_eq!(answered, expected, "every whole request is answered first");
    }
    assert!(primary.requests().iter().all(|r| r.uri != "/c"));
    app.shutdown().await;
}

/// A keep-alive connection left idle after its requests is not cut by the
/// head timer.
#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_read_timeout() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.header_read_timeout = Duration::from_millis(300);
    cfg.proxy.idle_timeout = Duration::from_secs(60);
    let app = fw::start(cfg).await;
    let mut s = TcpStream::connect(app.proxy_addr).await.unwrap();
    s.write_all(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\r\n")
        .await
        .unwrap();
    // Open past several head timeouts (a stray CRLF after a body is no head).
    assert!(read_until_closed(&mut s, Duration::from_millis(1500))
        .await
        .is_none());
    s.write_all(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut chunk = [0u8; 1024];
    let n = tokio::time::timeout(T, s.read(&mut chunk))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).contains("HTTP/1.1 200"));
    app.shutdown().await;
}
