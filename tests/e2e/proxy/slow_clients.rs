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
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(T, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
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
