use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::*;

#[derive(Clone, Copy)]
enum Answer {
    Ok,
    Error,
    Hang,
}

/// What a receiver saw: each POST's `x-team` header and body.
type Seen = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// A loopback receiver answering every POST as `answer`.
async fn receiver(answer: Answer) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/relay/s3cret-path",
        listener.local_addr().unwrap()
    );
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let team = req
                            .headers()
                            .get("x-team")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        log.lock()
                            .unwrap()
                            .push((team, String::from_utf8_lossy(&body).into_owned()));
                        let status = match answer {
                            Answer::Ok => 200,
                            Answer::Error => 500,
                            Answer::Hang => {
                                std::future::pending::<()>().await;
                                unreachable!()
                            }
                        };
                        let resp = http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

fn hook(url: &str, events: &[HookEvent], timeout_ms: u64, attempts: u32) -> HookConfig {
    HookConfig {
        url: url.parse().unwrap(),
        events: events.to_vec(),
        headers_file: None,
        timeout: Duration::from_millis(timeout_ms),
        max_attempts: attempts,
    }
}

fn count(registry: &Registry, result: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "failway_hook_deliveries_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == result))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "not within 10s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn each_subscribed_event_is_posted_once_in_order_with_the_headers_file() {
    let (url, seen) = receiver(Answer::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    std::fs::write(&headers, "# for the relay\nX-Team: payments\n").unwrap();
    let mut cfg = hook(&url, &[HookEvent::Transition, HookEvent::Drill], 2000, 3);
    cfg.headers_file = Some(headers);
    let registry = Registry::new();
    let hooks = Hooks::start(&[cfg], HookMetrics::register(&registry).unwrap()).unwrap();

    hooks.offer(
        HookEvent::Transition,
        &json!({"kind": "transition", "n": 1}),
    );
    hooks.offer(HookEvent::Operator, &json!({"kind": "operator", "n": 2}));
    hooks.offer(HookEvent::Drill, &json!({"kind": "drill", "n": 3}));
    until("two deliveries", || count(&registry, "delivered") == 2).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        2,
        "the operator event is not subscribed: {seen:?}"
    );
    assert_eq!(seen[0].0.as_deref(), Some("payments"));
    let first: serde_json::Value = serde_json::from_str(&seen[0].1).unwrap();
    let second: serde_json::Value = serde_json::from_str(&seen[1].1).unwrap();
    assert_eq!(
        (first["n"].as_i64(), second["n"].as_i64()),
        (Some(1), Some(3))
    );
}

#[tokio::test]
async fn a_failing_receiver_is_retried_up_to_max_attempts_then_given_up() {
    let (url, seen) = receiver(Answer::Error).await;
    let registry = Registry::new();
    let cfg = hook(&url, &HookEvent::ALL, 2000, 3);
    let hooks = Hooks::start(&[cfg], HookMetrics::register(&registry).unwrap()).unwrap();
    hooks.offer(HookEvent::Latch, &json!({"kind": "latch"}));
    until("given up", || count(&registry, "failed") == 1).await;
    assert_eq!(seen.lock().unwrap().len(), 3, "three attempts");
    assert_eq!(count(&registry, "retried"), 2);
    assert_eq!(count(&registry, "delivered"), 0);
}

#[tokio::test]
async fn a_hanging_receiver_never_blocks_an_offer_and_the_queue_bound_holds() {
    let (url, seen) = receiver(Answer::Hang).await;
    let registry = Registry::new();
    let cfg = hook(&url, &HookEvent::ALL, 60_000, 1);
    let hooks = Hooks::start(&[cfg], HookMetrics::register(&registry).unwrap()).unwrap();
    hooks.offer(HookEvent::Transition, &json!({"n": 0}));
    // The first one is in flight, held by the receiver.
    until("the first POST arrives", || seen.lock().unwrap().len() == 1).await;
    let extra = 40;
    let started = Instant::now();
    for n in 0..QUEUE + extra {
        hooks.offer(HookEvent::Transition, &json!({ "n": n }));
    }
    // Offers only queue: hundreds take well under the hook's timeout.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(count(&registry, "dropped"), extra as u64);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn backoff_doubles_with_jitter_and_is_capped() {
    for failed in 1..6 {
        let cap = BACKOFF_BASE * (1 << (failed - 1));
        let d = backoff(failed);
        assert!(d >= cap / 2 && d <= cap, "{failed}: {d:?}");
    }
    assert!(backoff(40) <= BACKOFF_MAX);
}
