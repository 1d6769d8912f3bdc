//! End-to-end write blocking during read-only failover: every Key Protect
//! write is answered by failway itself in the profile's error format and never
//! reaches a region, every read (wrap/unwrap/rewrap included) is served by the
//! replica byte for byte, method overrides (headers or query parameters) and
//! ambiguous action parameters or path bytes change nothing, custom rules
//! override the profile, and region IDs are mapped on the way to the replica.

use crate::common;

use std::time::Duration;

use common::eventually;
use common::failway::{self as fw, send, Answer};
use common::upstream::{Behavior, FakeUpstream, Response};
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
#[rustfmt::skip] // one request a line
const WRITES: &[(&str, &str, &str)] = &[
    ("POST", "/api/v2/keys", r#"{"metadata":{},"resources":[{"name":"k","extractable":false}]}"#),
    ("POST", "/api/v2/keys", r#"{"resources":[{"name":"imp","payload":"AAAA","extractable":false}]}"#),
    ("POST", "/api/v2/keys_with_policy_overrides", r#"{"resources":[{"name":"k"}]}"#),
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
    ("PUT", "/api/v2/keys/{id}/policies?policy=rotation", r#"{"resources":[{"rotation":{"interval_month":3}}]}"#),
    ("PUT", "/api/v2/instance/policies?policy=dualAuthDelete", r#"{"resources":[{"policy_type":"dualAuthDelete"}]}"#),
    ("POST", "/api/v2/keys/{id}/aliases/payroll-key", ""),
    ("DELETE", "/api/v2/keys/{id}/aliases/payroll-key", ""),
    ("POST", "/api/v2/key_rings/ring-1", ""),
    ("DELETE", "/api/v2/key_rings/ring-1?force=true", ""),
    ("PATCH", "/api/v2/keys/{id}", r#"{"keyRingID":"ring-2"}"#),
    ("POST", "/api/v2/import_token", r#"{"expiration":600,"maxAllowedRetrievals":1}"#),
    ("GET", "/api/v2/import_token", ""),
    ("POST", "/api/v2/keys/{id}/registrations/{crn}", r#"{"preventKeyDeletion":true}"#),
    ("PUT", "/api/v2/keys/{id}/registrations/{crn}", r#"{"preventKeyDeletion":false}"#),
    ("PATCH", "/api/v2/keys/{id}/registrations/{crn}", r#"{"description":"d"}"#),
    ("DELETE", "/api/v2/keys/{id}/registrations/{crn}", ""),
    ("POST", "/api/v2/event_ack", r#"{"eventId":"e1"}"#),
    ("POST", "/api/v2/keys/{id}/actions/wrap?action=rotate", "{}"),
    ("POST", "/api/v2/keys/{id}/actions/Wrap", "{}"),
    ("POST", "/api/v2/not_a_route", "{}"),
    ("PROPFIND", "/api/v2/keys", ""),
];

/// Reads that must keep working from the replica: method, target, body.
#[rustfmt::skip] // one request a line
const READS: &[(&str, &str, &str)] = &[
    ("GET", "/api/v2/keys/{id}", ""),
    ("GET", "/api/v2/keys?limit=10&offset=0&state=", ""),
    ("GET", "/api/v2/keys?state=1,2&extractable=false", ""),
    ("HEAD", "/api/v2/keys?state=", ""),
    ("GET", "/api/v2/keys/{id}/metadata", ""),
    ("GET", "/api/v2/keys/{id}/versions?limit=5&totalCount=true", ""),
    ("POST", "/api/v2/keys/{id}/actions/wrap", r#"{"plaintext":"cGxhaW4="}"#),
    ("POST", "/api/v2/keys/{id}?action=wrap", r#"{"plaintext":"cGxhaW4="}"#),
    ("POST", "/api/v2/keys/{id}/actions/unwrap", r#"{"ciphertext":"Y2lwaGVy"}"#),
    ("POST", "/api/v2/keys/{id}?action=unwrap", r#"{"ciphertext":"Y2lwaGVy"}"#),
    ("POST", "/api/v2/keys/{id}/actions/rewrap", r#"{"ciphertext":"Y2lwaGVy"}"#),
    ("POST", "/api/v2/keys/{id}?action=rewrap", r#"{"ciphertext":"Y2lwaGVy"}"#),
    ("GET", "/api/v2/keys/{id}/policies?policy=rotation", ""),
    ("GET", "/api/v2/instance/policies?policy=allowedNetwork", ""),
    ("GET", "/api/v2/key_rings?limit=10&totalCount=true", ""),
    ("GET", "/api/v2/keys/registrations?urlEncodedResourceCRNQuery={crn}", ""),
];

const CID: &str = "correlation-id";
const INSTANCE: &str = "bluemix-instance";
const KP_ERROR: &str = "application/vnd.ibm.kms.error+json";

/// failway without probes between two fresh fake regions.
struct Setup {
    app: Running,
    primary: FakeUpstream,
    replica: FakeUpstream,
}

async fn setup(extra: &str) -> Setup {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = fw::start(fw::config(&primary.url(), &replica.url(), extra)).await;
    Setup {
        app,
        primary,
        replica,
    }
}

impl Setup {
    async fn admin(&self, method: &str, path: &str, body: &str) -> Answer {
        let url = format!("http://{}{path}", self.app.admin_addr);
        let headers = [("content-type", "application/json")];
        send(&fw::client(), method, &url, &headers, body.to_owned()).await
    }

    /// Operator failover (forced: without probes the replica's health is
    /// unknown).
    async fn fail_over(&self) {
        let body = r#"{"reason":"write-blocking test","force":true}"#;
        let ans = self.admin("POST", "/admin/failover", body).await;
        assert_eq!(ans.status, 200, "{}", String::from_utf8_lossy(&ans.body));
        eventually(T, "mode failover_read_only", || {
            self.app.failover.snapshot().mode == Mode::FailoverReadOnly
        })
        .await;
    }

    /// Sends `"METHOD target"` (see [`target`]) to failway's proxy listener.
    async fn call(&self, request: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let (method, t) = request.split_once(' ').expect("\"METHOD target\"");
        let url = format!("{}{}", fw::url(&self.app), target(t));
        send(&fw::client(), method, &url, headers, body.to_owned()).await
    }

    /// The value of one sample (`name{labels}`) in the admin `/metrics` text.
    async fn metric(&self, sample: &str) -> f64 {
        let text = self.admin("GET", "/metrics", "").await.body;
        let text = String::from_utf8_lossy(&text).into_owned();
        common::sample_value(&text, sample)
            .unwrap_or_else(|| panic!("no sample {sample} in /metrics:\n{text}"))
    }

    async fn status(&self) -> serde_json::Value {
        self.admin("GET", "/status", "").await.json()
    }
}

/// The headers every write refused in read-only failover carries.
fn assert_refusal_headers(ans: &Answer, what: &str, cid: &str) {
    let mode = ans.header("failway-mode");
    assert_eq!(mode, Some("failover_read_only"), "{what}");
    let region = ans.header("failway-region");
    assert!(region.is_none(), "{what}: failway answered, no region");
    assert_eq!(ans.header(CID), Some(cid), "{what}");
}

/// A Key Protect-shaped 409 refusal with every field the clients read.
fn assert_kp_refusal(ans: &Answer, what: &str, cid: &str) -> serde_json::Value {
    let body = String::from_utf8_lossy(&ans.body);
    assert_eq!(ans.status, 409, "{what}: {body}");
    assert_eq!(ans.header("content-type"), Some(KP_ERROR), "{what}");
    let retry_after = ans.header("retry-after");
    assert!(
        retry_after.is_none(),
        "{what}: Retry-After only with 503/429"
    );
    assert_refusal_headers(ans, what, cid);
    let v = ans.json();
    assert_eq!(v["metadata"]["collectionType"], KP_ERROR, "{what}");
    assert_eq!(v["metadata"]["collectionTotal"], 1, "{what}");
    let text = |v: &serde_json::Value| v.as_str().is_some_and(|s| !s.is_empty());
    assert!(text(&v["resources"][0]["errorMsg"]), "{what}: {v}");
    let reason = &v["resources"][0]["reasons"][0];
    for field in ["code", "message", "moreInfo"] {
        assert!(text(&reason[field]), "{what}: {field} in {v}");
    }
    assert_eq!(reason["status"], 409, "{what}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("read-only failover"), "{what}: {message}");
    v
}

#[tokio::test]
async fn every_write_kind_is_refused_in_read_only_failover_and_never_forwarded() {
    let s = setup("").await;
    s.fail_over().await;
    let deadline = s.status().await["read_only_deadline"]
        .as_str()
        .expect("a read-only deadline with the default 6h window")
        .to_owned();

    for (i, (method, t, body)) in WRITES.iter().enumerate() {
        let what = format!("{method} {t}");
        let cid = format!("cid-write-{i}");
        let headers = [
            (INSTANCE, "inst-1"),
            ("authorization", "Bearer t"),
            (CID, &cid),
        ];
        let ans = s.call(&what, &headers, body).await;
        let v = assert_kp_refusal(&ans, &what, &cid);
        let at = ans.header("failway-writes-enabled-at");
        let at = at.unwrap_or_else(|| panic!("{what}: no failway-writes-enabled-at"));
        assert!(humantime::parse_rfc3339(at).is_ok(), "{what}: {at}");
        // /status has milliseconds, the header whole seconds.
        assert_eq!(
            at.get(..19),
            deadline.get(..19),
            "{what}: {at} vs {deadline}"
        );
        let message = v["message"].as_str().unwrap_or_default();
        let says_when = message.contains("expected back") && message.contains(at);
        assert!(says_when, "{what}: {message}");
    }

    assert_eq!(s.replica.request_count(), 0, "no write reached the replica");
    let (primary_bytes, primary_requests) = (s.primary.raw_byte_count(), s.primary.request_count());
    assert_eq!((primary_bytes, primary_requests), (0, 0), "nor the primary");
    let n = WRITES.len() as f64;
    let blocked = "failway_writes_blocked_total{reason=\"read_only\"}";
    assert_eq!(s.metric(blocked).await, n);
    let local = "failway_requests_total{class=\"write\",code_class=\"4xx\",region=\"none\"}";
    assert_eq!(s.metric(local).await, n);
    // The replica is reachable: a read goes there, and none of the writes did.
    let read = s.call("GET /api/v2/keys?state=", &[], "").await;
    assert_eq!(read.header("failway-region"), Some("replica"));
    assert_eq!(s.replica.request_count(), 1);
    let raw = String::from_utf8_lossy(&s.replica.raw_bytes()).into_owned();
    for (method, t, _) in WRITES {
        let line = format!("{method} {} HTTP/1.1", target(t));
        assert!(!raw.contains(&line), "{line} reached the replica");
    }
    s.app.shutdown().await;
}

#[tokio::test]
async fn reads_reach_the_replica_byte_identical_during_read_only_failover() {
    let s = setup("").await;
    s.fail_over().await;
    for (method, t, body) in READS {
        let what = format!("{method} {t}");
        let ans = s.call(&what, &[(INSTANCE, "inst-1")], body).await;
        let text = String::from_utf8_lossy(&ans.body);
        assert_eq!(ans.status, 200, "{what}: {text}");
        assert_eq!(ans.header("failway-region"), Some("replica"), "{what}");
    }
    let got = s.replica.requests();
    assert_eq!(got.len(), READS.len());
    for (r, (method, t, body)) in got.iter().zip(READS) {
        let sent = (*method, target(t));
        assert_eq!((r.method.as_str(), r.uri.clone()), sent, "byte-identical");
        assert_eq!(r.body_str(), *body, "{method} {t}");
        assert_eq!(r.header(INSTANCE).as_deref(), Some("inst-1"));
    }
    assert_eq!(s.primary.request_count(), 0, "nothing goes to the primary");
    s.app.shutdown().await;
}

#[tokio::test]
async fn a_window_of_never_sends_no_deadline_and_names_the_operator() {
    let s = setup("[failover]\nread_only_window = \"never\"").await;
    s.fail_over().await;
    assert!(s.status().await["read_only_deadline"].is_null());
    let rotate = "POST /api/v2/keys/{id}/actions/rotate";
    let ans = s.call(rotate, &[(CID, "c-never")], "").await;
    let v = assert_kp_refusal(&ans, rotate, "c-never");
    assert!(ans.header("failway-writes-enabled-at").is_none());
    let message = v["message"].as_str().unwrap_or_default();
    let names_operator = message.contains("operator") && !message.contains("expected back");
    assert!(names_operator, "{message}");
    assert_eq!(s.replica.request_count(), 0);
    s.app.shutdown().await;
}

#[tokio::test]
async fn a_503_refusal_carries_retry_after_from_the_config() {
    let s = setup("[failover]\nblocked_write_status = 503\nblocked_retry_after = \"7s\"").await;
    s.fail_over().await;
    let ans = s.call("POST /api/v2/keys", &[(CID, "c-503")], "{}").await;
    assert_eq!(ans.status, 503);
    assert_eq!(ans.header("retry-after"), Some("7"));
    assert_eq!(ans.header("content-type"), Some(KP_ERROR));
    assert_refusal_headers(&ans, "create", "c-503");
    assert_eq!(ans.json()["resources"][0]["reasons"][0]["status"], 503);
    assert_eq!(s.replica.request_count(), 0);
    s.app.shutdown().await;
}

#[tokio::test]
async fn the_http_methods_profile_refuses_with_503_and_problem_json() {
    let s =
        setup("[classify]\nprofile = \"http-methods\"\n[failover]\nblocked_retry_after = \"12s\"")
            .await;
    s.fail_over().await;
    let ans = s.call("PUT /things/1", &[(CID, "c-http")], "{}").await;
    assert_eq!(ans.status, 503);
    assert_eq!(ans.header("retry-after"), Some("12"));
    assert_eq!(ans.header("content-type"), Some("application/problem+json"));
    assert_refusal_headers(&ans, "PUT", "c-http");
    assert!(ans.header("failway-writes-enabled-at").is_some());
    let v = ans.json();
    for field in ["type", "title", "detail", "code"] {
        let text = v[field].as_str().is_some_and(|s| !s.is_empty());
        assert!(text, "{field} in {v}");
    }
    assert_eq!(v["status"], 503);
    assert_eq!(s.replica.request_count(), 0);
    let read = s.call("GET /things/1", &[], "").await;
    assert_eq!(read.header("failway-region"), Some("replica"));
    s.app.shutdown().await;
}

#[tokio::test]
async fn method_override_headers_neither_turn_writes_into_reads_nor_reach_upstream() {
    let s = setup("").await;
    s.fail_over().await;
    let overrides = [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        "X-Original-Method",
        "X-Forwarded-Method",
    ];
    for name in overrides {
        let create = "POST /api/v2/keys";
        let ans = s.call(create, &[(name, "GET"), (CID, "c-o")], "{}").await;
        assert_kp_refusal(&ans, name, "c-o");
        let rotate = "POST /api/v2/keys/{id}/actions/rotate";
        let ans = s.call(rotate, &[(name, "HEAD"), (CID, "c-o")], "").await;
        assert_kp_refusal(&ans, name, "c-o");
    }
    assert_eq!(s.replica.request_count(), 0);

    // Forwarded reads lose the headers, whatever they ask for; so do the
    // headers some frameworks take as the request's URL.
    let rotate = target("/api/v2/keys/{id}/actions/rotate");
    let url_overrides = [("X-Original-URL", &rotate), ("X-Rewrite-URL", &rotate)];
    let mut all: Vec<(&str, &str)> = overrides.iter().map(|n| (*n, "DELETE")).collect();
    all.extend(url_overrides.iter().map(|(n, v)| (*n, v.as_str())));
    let ans = s.call("GET /api/v2/keys/{id}", &all, "").await;
    assert_eq!(ans.header("failway-region"), Some("replica"));
    let unwrap = "POST /api/v2/keys/{id}/actions/unwrap";
    let ans = s.call(unwrap, &all, r#"{"ciphertext":"x"}"#).await;
    assert_eq!(ans.header("failway-region"), Some("replica"));
    let got = s.replica.requests();
    let methods: Vec<&str> = got.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST"]);
    for r in &got {
        for (name, _) in &all {
            let (m, u) = (&r.method, &r.uri);
            assert!(r.header(name).is_none(), "{name} forwarded on {m} {u}");
        }
    }
    s.app.shutdown().await;
}

/// Requests an upstream could read as something other than what failway
/// classifies: action parameters in other spellings, method overrides in the
/// query, and encoded query, fragment or NUL bytes in the path.
#[rustfmt::skip] // one request a line
const AMBIGUOUS: &[&str] = &[
    "POST /api/v2/keys/{id}?action[]=rotate&action=wrap",
    "POST /api/v2/keys/{id}?action=wrap&action%5B%5D=rotate",
    "POST /api/v2/keys/{id}?%20action=rotate&action=wrap",
    "POST /api/v2/keys/{id}?action=wrap&action=wrap",
    "POST /api/v2/keys/{id}/actions/unwrap?_method=DELETE",
    "POST /api/v2/keys/{id}/actions/wrap?X-HTTP-Method-Override=DELETE",
    "GET /api/v2/keys/{id}?_method=DELETE",
    "GET /api/v2/import_token%3Fx",
    "GET /api/v2/import_token%00",
    "GET /api/v2/import_token%23",
    "POST /api/v2/keys/{id}/actions/wrap%00",
];

#[tokio::test]
async fn ambiguous_actions_query_overrides_and_encoded_separators_are_refused_in_read_only() {
    let s = setup("").await;
    // In primary mode such a request goes to the primary, query and path
    // byte for byte.
    let odd = "POST /api/v2/keys/{id}/actions/unwrap?action[]=x&%20action=y&_method=DELETE";
    let ans = s.call(odd, &[], "{}").await;
    assert_eq!(ans.header("failway-region"), Some("primary"));
    let sent = target(odd.split_once(' ').unwrap().1);
    assert_eq!(s.primary.requests()[0].uri, sent);

    s.fail_over().await;
    for (i, request) in AMBIGUOUS.iter().enumerate() {
        let cid = format!("cid-ambiguous-{i}");
        let ans = s.call(request, &[(CID, &cid)], "{}").await;
        assert_kp_refusal(&ans, request, &cid);
    }
    assert_eq!(s.replica.request_count(), 0, "none reached the replica");
    assert_eq!(s.primary.request_count(), 1, "nor the primary");
    let blocked = "failway_writes_blocked_total{reason=\"read_only\"}";
    assert_eq!(s.metric(blocked).await, AMBIGUOUS.len() as f64);

    // One literal read action among other parameters is still a read.
    let wrap = "POST /api/v2/keys/{id}?actions[]=1&action=wrap&method_name=x";
    let ans = s.call(wrap, &[], "{}").await;
    assert_eq!(ans.header("failway-region"), Some("replica"));
    let got = s.replica.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uri, target(wrap.split_once(' ').unwrap().1));
    s.app.shutdown().await;
}

#[tokio::test]
async fn custom_classify_rules_override_the_profile() {
    let s = setup(
        r#"
[[classify.rules]]
methods = ["POST"]
path = "/api/v2/reports/**"
class = "read"

[[classify.rules]]
methods = ["GET"]
path = "/api/v2/keys/*/secret"
class = "write"
"#,
    )
    .await;
    s.fail_over().await;
    let report = "/api/v2/reports/usage/monthly?format=csv";
    let ans = s.call(&format!("POST {report}"), &[], "{}").await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.header("failway-region"), Some("replica"));
    let secret = "GET /api/v2/keys/{id}/secret";
    let ans = s.call(secret, &[(CID, "c-r")], "").await;
    assert_kp_refusal(&ans, secret, "c-r");
    // Outside the rule's pattern the profile decides again.
    let reporting = "POST /api/v2/reporting";
    let ans = s.call(reporting, &[(CID, "c-r")], "{}").await;
    assert_kp_refusal(&ans, reporting, "c-r");
    let got = s.replica.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].method.as_str(), got[0].uri.as_str()),
        ("POST", report)
    );
    s.app.shutdown().await;
}

const UUID_A: &str = "11111111-2222-4333-8444-555555555555";
const UUID_B: &str = "99999999-8888-4777-8666-555555555555";
const UNMAPPED: &str = "abcdefab-cdef-4abc-8def-abcdefabcdef";

/// An unwrap of key `id`; the query carries a mapped ID that must stay.
fn unwrap(id: &str) -> String {
    format!("/api/v2/keys/{id}/actions/unwrap?note={UUID_A}&x=%2F")
}

/// One header and one path-segment mapping.
fn rewrites(extra: &str) -> String {
    format!(
        r#"
[[rewrite]]
header = "bluemix-instance"
primary = "inst-primary"
replica = "inst-replica"

[[rewrite]]
path_segment = true
primary = "{UUID_A}"
replica = "{UUID_B}"
{extra}
"#
    )
}

fn misses(kind: &str) -> String {
    format!("failway_rewrite_misses_total{{kind=\"{kind}\"}}")
}

#[tokio::test]
async fn region_ids_are_mapped_only_towards_the_replica_and_misses_are_counted() {
    let s = setup(&rewrites("")).await;
    let body = r#"{"ciphertext":"Y2lwaGVy"}"#;
    let setup = &s;
    let unwrap_as = |id: &str, instance: &'static str| {
        let request = format!("POST {}", unwrap(id));
        async move { setup.call(&request, &[(INSTANCE, instance)], body).await }
    };

    // Primary mode: the primary gets the originals, nothing counts as a miss.
    let ans = unwrap_as(UUID_A, "inst-primary").await;
    assert_eq!(ans.header("failway-region"), Some("primary"));
    unwrap_as(UNMAPPED, "inst-other").await;
    let got = s.primary.requests();
    assert_eq!(got[0].uri, unwrap(UUID_A));
    assert_eq!(got[0].header(INSTANCE).as_deref(), Some("inst-primary"));
    assert_eq!((got[1].uri.clone(), got.len()), (unwrap(UNMAPPED), 2));
    assert_eq!(s.metric(&misses("path_segment")).await, 0.0);
    assert_eq!(s.metric(&misses("header")).await, 0.0);

    // Failover: the replica gets its own IDs; the query is left alone.
    s.fail_over().await;
    let ans = unwrap_as(UUID_A, "inst-primary").await;
    assert_eq!(ans.header("failway-region"), Some("replica"));
    let got = s.replica.requests();
    let mapped = format!("/api/v2/keys/{UUID_B}/actions/unwrap?note={UUID_A}&x=%2F");
    assert_eq!(got[0].uri, mapped);
    assert_eq!(got[0].header_all(INSTANCE), ["inst-replica"]);
    assert_eq!(got[0].body_str(), body);

    // Unmapped values pass unchanged and are counted, never guessed.
    assert_eq!(unwrap_as(UNMAPPED, "inst-primary").await.status, 200);
    let get_key = format!("GET /api/v2/keys/{UUID_A}");
    let ans = s.call(&get_key, &[(INSTANCE, "inst-other")], "").await;
    assert_eq!(ans.status, 200);
    let got = s.replica.requests();
    assert_eq!(got[1].uri, unwrap(UNMAPPED));
    assert_eq!(got[1].header(INSTANCE).as_deref(), Some("inst-replica"));
    assert_eq!(got[2].uri, format!("/api/v2/keys/{UUID_B}"));
    assert_eq!(got[2].header(INSTANCE).as_deref(), Some("inst-other"));
    assert_eq!(s.metric(&misses("path_segment")).await, 1.0);
    assert_eq!(s.metric(&misses("header")).await, 1.0);
    assert_eq!(s.primary.request_count(), 2);
    s.app.shutdown().await;
}

#[tokio::test]
async fn a_read_retried_on_the_replica_counts_its_misses_once() {
    let s = setup(&rewrites(
        "[retry]\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"",
    ))
    .await;
    s.replica
        .set_behavior(Behavior::Respond(Response::status(503)));
    s.fail_over().await;
    let get_key = format!("GET /api/v2/keys/{UNMAPPED}");
    let ans = s.call(&get_key, &[(INSTANCE, "inst-other")], "").await;
    assert_eq!(ans.status, 503);
    assert_eq!(s.replica.request_count(), 3, "max_attempts tries");
    assert_eq!(s.metric(&misses("path_segment")).await, 1.0, "one request");
    assert_eq!(s.metric(&misses("header")).await, 1.0, "one request");
    s.app.shutdown().await;
}
