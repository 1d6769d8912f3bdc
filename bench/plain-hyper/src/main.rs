//! A bare hyper 1.x reverse proxy (current-thread runtime) forwarding to
//! 127.0.0.1:18080: what the HTTP stack alone costs, measured beside
//! failway by compare.sh.
//!
//! `plain-hyper [MODE] [PORT]` (default `pool 18084`):
//! - `pool`: hyper-util's pooled legacy client, each upstream connection
//!   driven by its own task.
//! - `spawn`: one upstream connection per downstream connection, driven
//!   by its own task (a request crosses tasks twice, as with a pool).
//! - `affinity`: one upstream connection per downstream connection, driven
//!   inside the downstream connection's task (no cross-task wake-up).
//!
//! `spawn` against `affinity` isolates what connection affinity saves.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_http1;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

const ORIGIN: &str = "127.0.0.1:18080";

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "pool".into());
    let port: u16 = args.next().map_or(18084, |p| p.parse().expect("PORT"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        match mode.as_str() {
            "pool" => serve_pooled(listener).await,
            "spawn" => serve_paired(listener, false).await,
            "affinity" => serve_paired(listener, true).await,
            other => panic!("unknown mode {other:?}: pool, spawn or affinity"),
        }
    });
}

async fn serve_pooled(listener: TcpListener) {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(conn);
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let client = client.clone();
        tokio::task::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    *req.uri_mut() = upstream_uri(req.uri());
                    client.request(req).await
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn serve_paired(listener: TcpListener, affinity: bool) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        tokio::task::spawn(async move {
            let up = TcpStream::connect(ORIGIN).await.unwrap();
            up.set_nodelay(true).unwrap();
            let (sender, up_conn) = client_http1::handshake::<_, Incoming>(TokioIo::new(up))
                .await
                .unwrap();
            let sender = Arc::new(Mutex::new(sender));
            let svc = service_fn(move |req: Request<Incoming>| {
                let sender = sender.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    parts.uri = upstream_uri(&parts.uri);
                    let mut sender = sender.lock().await;
                    sender.send_request(Request::from_parts(parts, body)).await
                }
            });
            let down = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            if affinity {
                // Both connections are polled by this task: a request and
                // its response never wake another task. FuturesUnordered
                // gives each its own waker, so a wake polls only the side
                // that has work (tokio::join! would poll both every time).
                let mut both: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
                both.push(Box::pin(async move {
                    let _ = down.await;
                }));
                both.push(Box::pin(async move {
                    let _ = up_conn.await;
                }));
                while both.next().await.is_some() {}
            } else {
                tokio::task::spawn(up_conn);
                let _ = down.await;
            }
        });
    }
}

fn upstream_uri(uri: &Uri) -> Uri {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("http://{ORIGIN}{pq}").parse().unwrap()
}
