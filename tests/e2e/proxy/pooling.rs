//! Pooled upstream connections and writes: a connection the region is
//! about to close is not where a write goes.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::failway as fw;
use common::upstream::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/1.1 region that closes a connection idle for `keep_alive`, as
/// nginx or Node do, and says so in `Keep-Alive: timeout=` when `announce`.
/// It plays the race out every time: a request that arrives after
/// `keep_alive` of idleness finds the connection closing (its close won);
/// idle connections are closed a little later.
struct ShortKeepAlive {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ShortKeepAlive {
    async fn start(keep_alive: Duration, announce: bool) -> ShortKeepAlive {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(s, keep_alive, announce, counted.clone()));
            }
        });
        ShortKeepAlive {
            addr,
            requests,
            task,
        }
    }
}

impl Drop for ShortKeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut s: TcpStream, keep_alive: Duration, announce: bool, n: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A head, then its Content-Length body.
        let idle_since = tokio::time::Instant::now();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let grace = keep_alive + Duration::from_millis(300);
            match tokio::time::timeout(grace, s.read(&mut chunk)).await {
                Ok(Ok(m)) if m > 0 => buf.extend_from_slice(&chunk[..m]),
                _ => return,
            }
            if idle_since.elapsed() >= keep_alive {
                // Closed (with a reset, as a closed socket answers data).
                let _ = s.set_zero_linger();
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match s.read(&mut chunk).await {
                Ok(m) if m > 0 => buf.extend_from_slice(&chunk[..m]),
                _ => return,
            }
        }
        buf.drain(..head_end + len);
        n.fetch_add(1, Ordering::SeqCst);
        let ka = if announce {
            format!("Keep-Alive: timeout={}\r\n", keep_alive.as_secs())
        } else {
            String::new()
        };
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{ka}\r\nok");
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Writes spaced by the region's keep-alive hit pooled connections just as
/// the region closes them. None may end "outcome unknown": each is
/// answered, and each reached the region exactly once.
async fn writes_at_the_keep_alive_edge(announce: bool) {
    let region = ShortKeepAlive::start(Duration::from_secs(1), announce).await;
    let replica = FakeUpstream::start().await;
    let app = fw::start(fw::config(
        &format!("http://{}", region.addr),
        &replica.url(),
        "",
    ))
    .await;
    let url = format!("{}/api/v2/keys", fw::url(&app));
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = fw::client();
                let mut failed = Vec::new();
                // Staggered so that reuse lands all around the close.
                tokio::time::sleep(Duration::from_millis(w * 7)).await;
                for _ in 0..5 {
                    let ans = fw::req("POST", &url).body("{}").send_on(&client).await;
                    if ans.status != 200 {
                        failed.push((ans.status, ans.header("failway-outcome").map(str::to_owned)));
                    }
                    tokio::time::sleep(Duration::from_millis(1050 + w * 10)).await;
                }
                failed
            })
        })
        .collect();
    let mut failed = Vec::new();
    for w in writers {
        failed.extend(w.await.unwrap());
    }
    assert_eq!(
        failed,
        vec![],
        "writes not answered 200 (announce: {announce})"
    );
    assert_eq!(
        region.requests.load(Ordering::SeqCst),
        40,
        "each write reached the region once"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn writes_never_race_a_keep_alive_the_region_announced() {
    writes_at_the_keep_alive_edge(true).await;
}

#[tokio::test]
async fn writes_never_race_a_short_keep_alive_the_region_kept_quiet() {
    writes_at_the_keep_alive_edge(false).await;
}
