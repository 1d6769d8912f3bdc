//! Secrets never reach the logs, even at trace level: the Authorization
//! header, tokens and request/response bodies (wrap/unwrap carry key
//! material) are never written, while the access log still shows each
//! request with its correlation id. The key-pair check's plaintexts,
//! ciphertexts and token are never written either.
//!
//! This test binary installs a global trace-level subscriber, so it holds a
//! single test.

// Real sockets, real time: these measure the wall clock.
#![allow(clippy::disallowed_methods)]

#[path = "e2e/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::failway::{self as fw, send};
use common::upstream::{Behavior, FakeUpstream, Response};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

const TOKEN: &str = "Bearer s3cr3t-iam-token-7f1c";
const KEY_MATERIAL: &str = "cGxhaW50ZXh0LWtleS1tYXRlcmlhbA-SECRETBODY";
const WRAPPED: &str = "ZW5jcnlwdGVkLWRlay1TRUNSRVRSRVNQT05TRQ";
const CHECK_TOKEN: &str = "kp-check-token-5e2d";
const CHECK_CIPHERTEXT: &str = "Y2hlY2stY2lwaGVydGV4dC1TRUNSRVQ=";

/// A request of the key-pair check (not of a client).
fn is_check(r: &common::upstream::Recorded) -> bool {
    r.header("user-agent")
        .is_some_and(|ua| ua.starts_with("failway-keycheck/"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_trace_level() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .init();

    let primary = FakeUpstream::start().await;
    let replica = FakeUpstream::start().await;
    // Key-pair checks run beside the traffic: each region wraps into a
    // secret ciphertext and unwraps to other bytes (a mismatch, logged).
    let answer = |r: &common::upstream::Recorded| {
        let body = match r.uri.rsplit('/').next() {
            Some("wrap") if is_check(r) => format!("{{\"ciphertext\":\"{CHECK_CIPHERTEXT}\"}}"),
            Some("unwrap") if is_check(r) => "{\"plaintext\":\"b3RoZXI=\"}".to_owned(),
            _ => format!("{{\"plaintext\":\"{WRAPPED}\"}}"),
        };
        Response::ok(body).header("content-type", "application/json")
    };
    primary.set_behavior(Behavior::script(answer));
    replica.set_behavior(Behavior::script(answer));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("kp-token");
    std::fs::write(&token_file, CHECK_TOKEN).unwrap();
    let checks = format!(
        "[[key_pairs]]\nname = \"p\"\nprimary = \"k1\"\nreplica = \"k2\"\n[key_check]\ninterval = \"100ms\"\nauthorization_file = {:?}\n",
        token_file.display().to_string()
    );
    let app = fw::start(fw::config(&primary.url(), &replica.url(), &checks)).await;
    let unwrapped = |up: &FakeUpstream| {
        up.requests()
            .iter()
            .any(|r| is_check(r) && r.uri.ends_with("/unwrap"))
    };
    common::eventually(
        std::time::Duration::from_secs(10),
        "a check both ways",
        || unwrapped(&primary) && unwrapped(&replica),
    )
    .await;
    let url = format!("{}/api/v2/keys/k1/actions/unwrap", fw::url(&app));
    let headers = [
        ("authorization", TOKEN),
        ("bluemix-instance", "inst"),
        ("correlation-id", "trace-me-123"),
        ("x-api-key", TOKEN),
    ];
    let body = format!("{{\"ciphertext\":\"{KEY_MATERIAL}\"}}");
    let ans = send(&fw::client(), "POST", &url, &headers, body.clone()).await;
    assert_eq!(ans.status, 200);
    // Errors too: a malformed upstream answer and a refused body.
    primary.set_behavior(Behavior::Malformed);
    let ans = send(&fw::client(), "POST", &url, &headers, body.clone()).await;
    assert_eq!(ans.status, 502);
    primary.stop().await;
    replica.stop().await;
    let ans = send(&fw::client(), "POST", &url, &headers, body).await;
    assert_eq!(ans.status, 502);
    app.shutdown().await;

    // The check's random plaintexts, as it sent them.
    let plaintexts: Vec<String> = [&primary, &replica]
        .iter()
        .flat_map(|up| up.requests())
        .filter(|r| is_check(r) && r.uri.ends_with("/wrap"))
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            Some(v["plaintext"].as_str()?.to_owned())
        })
        .collect();
    assert!(!plaintexts.is_empty());
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    assert!(logs.contains("key pair check"), "the mismatch was logged");
    for secret in plaintexts
        .iter()
        .map(String::as_str)
        .chain([CHECK_CIPHERTEXT, CHECK_TOKEN])
    {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
    assert!(
        logs.contains("failway::access"),
        "the access log was captured"
    );
    assert!(
        logs.contains("trace-me-123"),
        "the access log shows the correlation id"
    );
    assert!(logs.contains("TRACE"), "trace level was captured");
    for secret in [
        "s3cr3t-iam-token",
        "SECRETBODY",
        "SECRETRESPONSE",
        KEY_MATERIAL,
        WRAPPED,
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}
