//! End-to-end write blocking during read-only failover: every Key Protect
//! write is answered by failway itself in the profile's error format and never
//! reaches a region, every read (wrap/unwrap/rewrap included) is served by the
//! replica byte for byte, method overrides change nothing, custom rules
//! override the profile, and region IDs are mapped on the way to the replica.

mod common;

use std::time::Duration;

use common::eventually;
use common::failway::{self as fw, send, Answer};
use common::upstream::FakeUpstream;
use failway::app::Running;
use failway::failover::machine::Mode;

const T: Duration = Duration::from_secs(10);

/// A key ID as Key Protect makes them (a UUID).
const KEY: &str = "2b3e1f4c-7a9d-4e2b-8c1a-0f9e8d7c6b5a";
/// A registration's resource CRN, percent-encoded into one segment.
const CRN: &str =
    "crn%3Av1%3Abluemix%3Apublic%3Acloud-object-storage%3Aglobal%3Aa%2F1234%3A%3Abucket%3Ab1";

/// `{id}` in a request target becomes [`KEY`], `{crn}` becomes [`CRN`].
fn target(t: &str) -> String {
    t.replace("{id}", KEY).replace("{crn}", CRN)
}

/// Every kind of Key Protect write (and what fails closed): method, target, body.
const WRITES: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/api/v2/keys",
        r#"{"metadata":{},"resources":[{"name":"k","extractable":false}]}"#,
    ),
    (
        "POST",
        "/api/v2/keys",
        r#"{"resources":[{"name":"imp","payload":"AAAA","extractable":false}]}"#,
    ),
    (
        "POST",
        "/api/v2/keys_with_policy_overrides",
        r#"{"resources":[{"name":"k"}]}"#,
    ),
    ("DELETE", "/api/v2/keys/{id}?force=true", ""),
    ("DELETE", "/api/v2/keys/{id}/purge", ""),
    ("POST", "/api/v2/keys/{id}/restore", "{}"),
    ("POST", "/api/v2/keys/{id}?action=restore", "{}"),
    ("POST", "/api/v2/keys/{id}/actions/rotate", ""),
    ("POST", "/api/v2/keys/{id}?action=rotate", ""),
    ("POST", "/api/v2/keys/{id}/actions/enable", ""),
    ("POST", "/api/v2/keys/{id}/actions/disable", ""),
    ("POST", "/api/v2/keys/{id}?action=enable", ""),
    ("POST", "/api/v2/keys/{id}/actions/setKeyForDeletion", ""),
    ("POST", "/api/v2/keys/{id}/actions/unsetKeyForDeletion", ""),
    ("POST", "/api/v2/keys/{id}?action=setKeyForDeletion", ""),
    (
        "PUT",
        "/api/v2/keys/{id}/policies?policy=rotation",
        r#"{"resources":[{"rotation":{"interval_month":3}}]}"#,
    ),
    (
        "PUT",
        "/api/v2/instance/policies?policy=dualAuthDelete",
        r#"{"resources":[{"policy_type":"dualAuthDelete"}]}"#,
    ),
    ("POST", "/api/v2/keys/{id}/aliases/payroll-key", ""),
    ("DELETE", "/api/v2/keys/{id}/aliases/payroll-key", ""),
    ("POST", "/api/v2/key_rings/ring-1", ""),
    ("DELETE", "/api/v2/key_rings/ring-1?force=true", ""),
    ("PATCH", "/api/v2/keys/{id}", r#"{"keyRingID":"ring-2"}"#),
    (
        "POST",
        "/api/v2/import_token",
        r#"{"expiration":600,"maxAllowedRetrievals":1}"#,
    ),
    ("GET", "/api/v2/import_token", ""),
    (
        "POST",
        "/api/v2/keys/{id}/registrations/{crn}",
        r#"{"preventKeyDeletion":true}"#,
    ),
    (
        "PUT",
        "/api/v2/keys/{id}/registrations/{crn}",
        r#"{"preventKeyDeletion":false}"#,
    ),
    (
        "PATCH",
        "/api/v2/keys/{id}/registrations/{crn}",
        r#"{"description":"d"}"#,
    ),
    ("DELETE", "/api/v2/keys/{id}/registrations/{crn}", ""),
    ("POST", "/api/v2/event_ack", r#"{"eventId":"e1"}"#),
    ("POST", "/api/v2/keys/{id}/actions/wrap?action=rotate", "{}"),
    ("POST", "/api/v2/keys/{id}/actions/Wrap", "{}"),
    ("POST", "/api/v2/not_a_route", "{}"),
    ("PROPFIND", "/api/v2/keys", ""),
];

/// Reads that must keep working from the replica: method, target, body.
const READS: &[(&str, &str, &str)] = &[
    ("GET", "/api/v2/keys/{id}", ""),
    ("GET", "/api/v2/keys?limit=10&offset=0&state=", ""),
    ("GET", "/api/v2/keys?state=1,2&extractable=false", ""),
    ("HEAD", "/api/v2/keys?state=", ""),
    ("GET", "/api/v2/keys/{id}/metadata", ""),
    (
        "GET",
        "/api/v2/keys/{id}/versions?limit=5&totalCount=true",
        "",
    ),
    (
        "POST",
        "/api/v2/keys/{id}/actions/wrap",
        r#"{"plaintext":"cGxhaW4="}"#,
    ),
    (
        "POST",
        "/api/v2/keys/{id}?action=wrap",
        r#"{"plaintext":"cGxhaW4="}"#,
    ),
    (
        "POST",
        "/api/v2/keys/{id}/actions/unwrap",
        r#"{"ciphertext":"Y2lwaGVy"}"#,
    ),
    (
        "POST",
        "/api/v2/keys/{id}?action=unwrap",
        r#"{"ciphertext":"Y2lwaGVy"}"#,
    ),
    (
        "POST",
        "/api/v2/keys/{id}/actions/rewrap",
        r#"{"ciphertext":"Y2lwaGVy"}"#,
    ),
    (
        "POST",
        "/api/v2/keys/{id}?action=rewrap",
        r#"{"ciphertext":"Y2lwaGVy"}"#,
    ),
    ("GET", "/api/v2/keys/{id}/policies?policy=rotation", ""),
    ("GET", "/api/v2/instance/policies?policy=allowedNetwork", ""),
    ("GET", "/api/v2/key_rings?limit=10&totalCount=true", ""),
    (
        "GET",
        "/api/v2/keys/registrations?urlEncodedResourceCRNQuery={crn}",
        "",
    ),
];

async fn pair() -> (FakeUpstream, FakeUpstream) {
    (FakeUpstream::start().await, FakeUpstream::start().await)
}

/// failway without probes between `primary` and `replica`.
async fn start(primary: &FakeUpstream, replica: &FakeUpstream, extra: &str) -> Running {
    fw::start(fw::config(&primary.url(), &replica.url(), extra)).await
}

async fn admin(app: &Running, method: &str, path: &str, body: &str) -> Answer {
    let url = format!("http://{}{path}", app.admin_addr);
    let headers = [("content-type", "application/json")];
    send(&fw::client(), method, &url, &headers, body.to_owned()).await
}

/// Operator failover (forced: without probes the replica's health is unknown).
async fn fail_over(app: &Running) {
    let body = r#"{"reason":"write-blocking test","force":true}"#;
    let ans = admin(app, "POST", "/admin/failover", body).await;
    assert_eq!(ans.status, 200, "{}", String::from_utf8_lossy(&ans.body));
    eventually(T, "mode failover_read_only", || {
        app.failover.snapshot().mode == Mode::FailoverReadOnly
    })
    .await;
}

/// Sends `method target` to failway's proxy listener.
async fn call(
    app: &Running,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let url = format!("{}{target}", fw::url(app));
    send(&fw::client(), method, &url, headers, body.to_owned()).await
}

/// The value of one sample (`name{labels}`) in the admin `/metrics` text.
async fn metric(app: &Running, sample: &str) -> f64 {
    let text = admin(app, "GET", "/metrics", "").await.body;
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no sample {sample} in /metrics:\n{text}"))
}

/// The blocked-write headers every failway answer in read-only failover has.
fn assert_refusal_headers(ans: &Answer, what: &str, cid: &str) {
    assert_eq!(
        ans.header("failway-mode"),
        Some("failover_read_only"),
        "{what}"
    );
    assert!(
        ans.header("failway-region").is_none(),
        "{what}: failway answered, no region"
    );
    assert_eq!(ans.header("correlation-id"), Some(cid), "{what}");
}

/// A Key Protect-shaped 409 refusal with every field the clients read.
fn assert_kp_refusal(ans: &Answer, what: &str, cid: &str) -> serde_json::Value {
    assert_eq!(
        ans.status,
        409,
        "{what}: {}",
        String::from_utf8_lossy(&ans.body)
    );
    assert_eq!(
        ans.header("content-type"),
        Some("application/vnd.ibm.kms.error+json"),
        "{what}"
    );
    assert!(
        ans.header("retry-after").is_none(),
        "{what}: Retry-After only with 503/429"
    );
    assert_refusal_headers(ans, what, cid);
    let v = ans.json();
    assert_eq!(
        v["metadata"]["collectionType"], "application/vnd.ibm.kms.error+json",
        "{what}"
    );
    assert_eq!(v["metadata"]["collectionTotal"], 1, "{what}");
    let resource = &v["resources"][0];
    assert!(
        resource["errorMsg"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    let reason = &resource["reasons"][0];
    for field in ["code", "message", "moreInfo"] {
        assert!(
            reason[field].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: {field} in {v}"
        );
    }
    assert_eq!(reason["status"], 409, "{what}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("read-only failover"), "{what}: {message}");
    v
}

#[tokio::test]
async fn every_write_kind_is_refused_in_read_only_failover_and_never_forwarded() {
    let (primary, replica) = pair().await;
    let app = start(&primary, &replica, "").await;
    fail_over(&app).await;
    let deadline = admin(&app, "GET", "/status", "").await.json()["read_only_deadline"]
        .as_str()
        .expect("a read-only deadline with the default 6h window")
        .to_owned();

    for (i, (method, t, body)) in WRITES.iter().enumerate() {
        let t = target(t);
        let what = format!("{method} {t}");
        let cid = format!("cid-write-{i}");
        let headers = [
            ("bluemix-instance", "inst-primary"),
            ("authorization", "Bearer tok"),
            ("correlation-id", cid.as_str()),
        ];
        let ans = call(&app, method, &t, &headers, body).await;
        let v = assert_kp_refusal(&ans, &what, &cid);
        let at = ans
            .header("failway-writes-enabled-at")
            .unwrap_or_else(|| panic!("{what}: no failway-writes-enabled-at"));
        assert!(
            humantime::parse_rfc3339(at).is_ok(),
            "{what}: {at} is not RFC 3339"
        );
        assert_eq!(
            at.get(..19),
            deadline.get(..19),
            "{what}: header {at} vs /status {deadline}"
        );
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("expected back") && message.contains(at),
            "{what}: {message}"
        );
    }

    assert_eq!(replica.request_count(), 0, "no write reached the replica");
    assert_eq!(
        primary.request_count() + primary.raw_byte_count(),
        0,
        "nor the primary"
    );
    // The replica is reachable: a read goes there, and none of the writes did.
    let read = call(&app, "GET", "/api/v2/keys?state=", &[], "").await;
    assert_eq!(read.header("failway-region"), Some("replica"));
    assert_eq!(replica.request_count(), 1);
    let raw = String::from_utf8_lossy(&replica.raw_bytes()).into_owned();
    for (method, t, _) in WRITES {
        let line = format!("{method} {} HTTP/1.1", target(t));
        assert!(!raw.contains(&line), "{line} reached the replica");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn reads_reach_the_replica_byte_identical_during_read_only_failover() {
    let (primary, replica) = pair().await;
    let app = start(&primary, &replica, "").await;
    fail_over(&app).await;
    for (method, t, body) in READS {
        let t = target(t);
        let ans = call(&app, method, &t, &[("bluemix-instance", "inst-1")], body).await;
        assert_eq!(
            ans.status,
            200,
            "{method} {t}: {}",
            String::from_utf8_lossy(&ans.body)
        );
        assert_eq!(
            ans.header("failway-region"),
            Some("replica"),
            "{method} {t}"
        );
    }
    let got = replica.requests();
    assert_eq!(got.len(), READS.len());
    for (r, (method, t, body)) in got.iter().zip(READS) {
        assert_eq!(
            (r.method.as_str(), r.uri.as_str()),
            (*method, target(t).as_str())
        );
        assert_eq!(r.body_str(), *body, "{method} {t}");
        assert_eq!(r.header("bluemix-instance").as_deref(), Some("inst-1"));
    }
    assert_eq!(primary.request_count(), 0, "nothing goes to the primary");
    app.shutdown().await;
}

#[tokio::test]
async fn a_window_of_never_sends_no_deadline_and_names_the_operator() {
    let (primary, replica) = pair().await;
    let app = start(
        &primary,
        &replica,
        "[failover]\nread_only_window = \"never\"",
    )
    .await;
    fail_over(&app).await;
    assert!(admin(&app, "GET", "/status", "").await.json()["read_only_deadline"].is_null());
    let ans = call(
        &app,
        "POST",
        &target("/api/v2/keys/{id}/actions/rotate"),
        &[("correlation-id", "c-never")],
        "",
    )
    .await;
    let v = assert_kp_refusal(&ans, "rotate", "c-never");
    assert!(ans.header("failway-writes-enabled-at").is_none());
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("operator") && !message.contains("expected back"),
        "{message}"
    );
    assert_eq!(replica.request_count(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_503_refusal_carries_retry_after_from_the_config() {
    let (primary, replica) = pair().await;
    let extra = "[failover]\nblocked_write_status = 503\nblocked_retry_after = \"7s\"";
    let app = start(&primary, &replica, extra).await;
    fail_over(&app).await;
    let ans = call(
        &app,
        "POST",
        "/api/v2/keys",
        &[("correlation-id", "c-503")],
        "{}",
    )
    .await;
    assert_eq!(ans.status, 503);
    assert_eq!(ans.header("retry-after"), Some("7"));
    assert_eq!(
        ans.header("content-type"),
        Some("application/vnd.ibm.kms.error+json")
    );
    assert_refusal_headers(&ans, "create", "c-503");
    assert_eq!(ans.json()["resources"][0]["reasons"][0]["status"], 503);
    assert_eq!(replica.request_count(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn the_http_methods_profile_refuses_with_503_and_problem_json() {
    let (primary, replica) = pair().await;
    let extra = "[classify]\nprofile = \"http-methods\"\n[failover]\nblocked_retry_after = \"12s\"";
    let app = start(&primary, &replica, extra).await;
    fail_over(&app).await;
    let ans = call(
        &app,
        "PUT",
        "/things/1",
        &[("correlation-id", "c-http")],
        "{}",
    )
    .await;
    assert_eq!(ans.status, 503);
    assert_eq!(ans.header("retry-after"), Some("12"));
    assert_eq!(ans.header("content-type"), Some("application/problem+json"));
    assert_refusal_headers(&ans, "PUT", "c-http");
    assert!(ans.header("failway-writes-enabled-at").is_some());
    let v = ans.json();
    for field in ["type", "title", "detail", "code"] {
        assert!(
            v[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} in {v}"
        );
    }
    assert_eq!(v["status"], 503);
    assert_eq!(replica.request_count(), 0);
    let read = call(&app, "GET", "/things/1", &[], "").await;
    assert_eq!(read.header("failway-region"), Some("replica"));
    app.shutdown().await;
}

#[tokio::test]
async fn method_override_headers_neither_turn_writes_into_reads_nor_reach_upstream() {
    let (primary, replica) = pair().await;
    let app = start(&primary, &replica, "").await;
    fail_over(&app).await;
    let overrides = [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ];
    for name in overrides {
        let ans = call(
            &app,
            "POST",
            "/api/v2/keys",
            &[(name, "GET"), ("correlation-id", "c-o")],
            "{}",
        )
        .await;
        assert_kp_refusal(&ans, name, "c-o");
        let rotate = target("/api/v2/keys/{id}/actions/rotate");
        let ans = call(
            &app,
            "POST",
            &rotate,
            &[(name, "HEAD"), ("correlation-id", "c-o")],
            "",
        )
        .await;
        assert_kp_refusal(&ans, name, "c-o");
    }
    assert_eq!(replica.request_count(), 0);

    // Forwarded reads lose the headers (in both directions of abuse).
    let all: Vec<(&str, &str)> = overrides.iter().map(|n| (*n, "DELETE")).collect();
    let ans = call(&app, "GET", &target("/api/v2/keys/{id}"), &all, "").await;
    assert_eq!(ans.header("failway-region"), Some("replica"));
    let unwrap = target("/api/v2/keys/{id}/actions/unwrap");
    let ans = call(&app, "POST", &unwrap, &all, r#"{"ciphertext":"x"}"#).await;
    assert_eq!(ans.header("failway-region"), Some("replica"));
    let got = replica.requests();
    assert_eq!(got.len(), 2);
    for r in &got {
        for name in overrides {
            assert!(
                r.header(name).is_none(),
                "{name} was forwarded on {} {}",
                r.method,
                r.uri
            );
        }
    }
    assert_eq!(
        (got[0].method.as_str(), got[1].method.as_str()),
        ("GET", "POST")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn custom_classify_rules_override_the_profile() {
    let (primary, replica) = pair().await;
    let extra = r#"
[[classify.rules]]
methods = ["POST"]
path = "/api/v2/reports/**"
class = "read"

[[classify.rules]]
methods = ["GET"]
path = "/api/v2/keys/*/secret"
class = "write"
"#;
    let app = start(&primary, &replica, extra).await;
    fail_over(&app).await;
    let report = "/api/v2/reports/usage/monthly?format=csv";
    let ans = call(&app, "POST", report, &[], r#"{"month":"2024-05"}"#).await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.header("failway-region"), Some("replica"));
    let ans = call(
        &app,
        "GET",
        &target("/api/v2/keys/{id}/secret"),
        &[("correlation-id", "c-r")],
        "",
    )
    .await;
    assert_kp_refusal(&ans, "GET secret", "c-r");
    // Outside the rule's pattern the profile decides again.
    let ans = call(
        &app,
        "POST",
        "/api/v2/reporting",
        &[("correlation-id", "c-r")],
        "{}",
    )
    .await;
    assert_kp_refusal(&ans, "POST reporting", "c-r");
    let got = replica.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].method.as_str(), got[0].uri.as_str()),
        ("POST", report)
    );
    app.shutdown().await;
}

const UUID_A: &str = "11111111-2222-4333-8444-555555555555";
const UUID_B: &str = "99999999-8888-4777-8666-555555555555";
const UNMAPPED: &str = "abcdefab-cdef-4abc-8def-abcdefabcdef";

#[tokio::test]
async fn region_ids_are_mapped_only_towards_the_replica_and_misses_are_counted() {
    let (primary, replica) = pair().await;
    let extra = format!(
        r#"
[[rewrite]]
header = "bluemix-instance"
primary = "inst-primary"
replica = "inst-replica"

[[rewrite]]
path_segment = true
primary = "{UUID_A}"
replica = "{UUID_B}"
"#
    );
    let app = start(&primary, &replica, &extra).await;
    let misses = |kind: &'static str| format!("failway_rewrite_misses_total{{kind=\"{kind}\"}}");
    let unwrap = |id: &str| format!("/api/v2/keys/{id}/actions/unwrap?note={UUID_A}&x=%2F");
    let body = r#"{"ciphertext":"Y2lwaGVy"}"#;

    // Primary mode: the primary gets the originals, nothing counts as a miss.
    let ans = call(
        &app,
        "POST",
        &unwrap(UUID_A),
        &[("bluemix-instance", "inst-primary")],
        body,
    )
    .await;
    assert_eq!(ans.header("failway-region"), Some("primary"));
    let ans = call(
        &app,
        "POST",
        &unwrap(UNMAPPED),
        &[("bluemix-instance", "inst-other")],
        body,
    )
    .await;
    assert_eq!(ans.header("failway-region"), Some("primary"));
    let got = primary.requests();
    assert_eq!(got[0].uri, unwrap(UUID_A));
    assert_eq!(
        got[0].header("bluemix-instance").as_deref(),
        Some("inst-primary")
    );
    assert_eq!(got[1].uri, unwrap(UNMAPPED));
    assert_eq!(metric(&app, &misses("path_segment")).await, 0.0);
    assert_eq!(metric(&app, &misses("header")).await, 0.0);

    // Failover: the replica gets its own IDs; the query is left alone.
    fail_over(&app).await;
    let ans = call(
        &app,
        "POST",
        &unwrap(UUID_A),
        &[("bluemix-instance", "inst-primary")],
        body,
    )
    .await;
    assert_eq!(ans.header("failway-region"), Some("replica"));
    let got = replica.requests();
    assert_eq!(
        got[0].uri,
        format!("/api/v2/keys/{UUID_B}/actions/unwrap?note={UUID_A}&x=%2F")
    );
    assert_eq!(got[0].header_all("bluemix-instance"), ["inst-replica"]);
    assert_eq!(got[0].body_str(), body);

    // Unmapped values pass unchanged and are counted, never guessed.
    let ans = call(
        &app,
        "POST",
        &unwrap(UNMAPPED),
        &[("bluemix-instance", "inst-primary")],
        body,
    )
    .await;
    assert_eq!(ans.status, 200);
    let ans = call(
        &app,
        "GET",
        &format!("/api/v2/keys/{UUID_A}"),
        &[("bluemix-instance", "inst-other")],
        "",
    )
    .await;
    assert_eq!(ans.status, 200);
    let got = replica.requests();
    assert_eq!(got[1].uri, unwrap(UNMAPPED));
    assert_eq!(
        got[1].header("bluemix-instance").as_deref(),
        Some("inst-replica")
    );
    assert_eq!(got[2].uri, format!("/api/v2/keys/{UUID_B}"));
    assert_eq!(
        got[2].header("bluemix-instance").as_deref(),
        Some("inst-other")
    );
    assert_eq!(metric(&app, &misses("path_segment")).await, 1.0);
    assert_eq!(metric(&app, &misses("header")).await, 1.0);
    assert_eq!(primary.request_count(), 2);
    app.shutdown().await;
}
