//! End to end on loopback, in one process: an origin (a bare hyper server
//! answering like the Key Protect API would: a 2-byte read, a 300-byte wrap
//! answer), failway in front of it with its default configuration
//! (classification, metrics, retry buffering, passive health on; probes off
//! so the origin sees only the measured traffic), and a pooled client.
//! Each benchmark sends requests one after another, so a figure is the
//! latency of one proxied request; `direct` is the same request to the
//! origin, for the ratio.
//!
//! `cargo bench --bench loopback -- --warm-up-time 1 --measurement-time 3`
//!
//! For throughput side by side with nginx and HAProxy, see bench/README.md.

// Real sockets, real time: these measure the wall clock.
#![allow(clippy::disallowed_methods)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use failway::app::{Running, StartOptions};
use failway::config::Config;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

const WRAP_REQUEST: &str = r#"{"plaintext":"c2VjcmV0IGRhdGEgZW5jcnlwdGlvbiBrZXkgbWF0ZXJpYWwgZm9yIGJlbmNobWFyayByZXF1ZXN0cyBvbmx5IQ==","aad":["tenant-42","service-a"],"keyVersion":{"id":"02fd6835-6001-4482-a892-13bd2085f75d"},"z":"pad"}"#;

/// A 300-byte JSON answer shaped like Key Protect's wrap response.
fn wrap_answer() -> Bytes {
    let mut s = String::from(r#"{"ciphertext":""#);
    while s.len() < 260 {
        s.push('A');
    }
    s.push_str(r#"","keyVersion":{"id":"02fd6835-6001-4482-a892-13bd2085f75d"}}"#);
    Bytes::from(s)
}

async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin address");
    let wrap = wrap_answer();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let wrap = wrap.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let wrap = wrap.clone();
                    async move {
                        let post = req.method() == Method::POST;
                        // Read the whole request body, as a real API does.
                        let _ = req.into_body().collect().await;
                        let body = if post {
                            wrap
                        } else {
                            Bytes::from_static(b"ok")
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(body)))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(origin: SocketAddr, replica: SocketAddr) -> Config {
    let text = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[upstreams.primary]
url = "http://{origin}"

[upstreams.replica]
url = "http://{replica}"
"#
    );
    Config::from_toml_str(&text, Path::new(".")).expect("bench config is valid")
}

struct Setup {
    rt: Runtime,
    client: Client<HttpConnector, Full<Bytes>>,
    origin: SocketAddr,
    failway: Running,
}

fn setup() -> Setup {
    // One worker, as failway runs in the side-by-side benchmark.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (origin, failway) = rt.block_on(async {
        let origin = origin().await;
        // Another origin stands in for the replica (never used here).
        let replica = self::origin().await;
        let options = StartOptions {
            active_health_checks: false,
            ..Default::default()
        };
        let failway = failway::app::start_with(config(origin, replica), options)
            .await
            .expect("failway starts");
        (origin, failway)
    });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    Setup {
        rt,
        client,
        origin,
        failway,
    }
}

async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &Method,
    url: &str,
    body: &'static str,
) {
    let req = Request::builder()
        .method(method.clone())
        .uri(url)
        .header("content-type", "application/json")
        .header("bluemix-instance", "a8b9c0d1-0000-4000-8000-000000000001")
        .header("authorization", "Bearer bench-token")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let resp = client.request(req).await.expect("answered");
    assert!(resp.status().is_success(), "status {}", resp.status());
    resp.into_body().collect().await.expect("body");
}

fn loopback(c: &mut Criterion) {
    let Setup {
        rt,
        client,
        origin,
        failway,
    } = setup();
    let proxy = failway.proxy_addr;
    let cases = [
        (
            "get_2_bytes",
            Method::GET,
            "/api/v2/keys/02fd6835-6001-4482-a892-13bd2085f75d",
            "",
        ),
        (
            "wrap_200_bytes",
            Method::POST,
            "/api/v2/keys/02fd6835-6001-4482-a892-13bd2085f75d/actions/wrap",
            WRAP_REQUEST,
        ),
    ];
    let mut g = c.benchmark_group("loopback");
    g.throughput(Throughput::Elements(1));
    for (name, method, path, body) in &cases {
        for (via, addr) in [("direct", origin), ("failway", proxy)] {
            let url = format!("http://{addr}{path}");
            g.bench_function(format!("{name}/{via}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            exchange(&client, method, &url, body).await;
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    g.finish();
    rt.block_on(failway.shutdown());
}

criterion_group!(
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = loopback
);
criterion_main!(benches);
