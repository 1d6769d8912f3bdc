//! End-to-end tests of `failway sim`, the Key Protect region simulator: the
//! API subset, real wrap/unwrap, header checks and the error format,
//! replication between two simulators, and every fault, all on loopback
//! ephemeral ports.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::failway::{client, req, Answer};
use common::{eventually, eventually_async, raw_exchange};
use failway::tools::sim::{remapped_id, SimArgs, Simulator, DEFAULT_INSTANCE};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::{json, Value};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(5);
const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";

type C = Client<HttpConnector, Full<Bytes>>;

async fn sim(args: SimArgs) -> Simulator {
    Simulator::start(args).await.expect("simulator starts")
}

/// A request to the simulated API with valid headers for `instance`.
async fn kp_as(
    c: &C,
    sim: &Simulator,
    instance: &str,
    method: &str,
    path: &str,
    body: Value,
) -> Answer {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    req(method, &format!("http://{}{path}", sim.addr()))
        .header("bluemix-instance", instance)
        .header("authorization", "Bearer test-token")
        .header("prefer", "return=representation")
        .body(body)
        .send_on(c)
        .await
}

async fn kp(c: &C, sim: &Simulator, method: &str, path: &str, body: Value) -> Answer {
    kp_as(c, sim, DEFAULT_INSTANCE, method, path, body).await
}

async fn control(c: &C, sim: &Simulator, method: &str, path: &str, body: Value) -> Answer {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    req(method, &format!("http://{}{path}", sim.control_addr()))
        .body(body)
        .send_on(c)
        .await
}

fn key_body(name: &str, extractable: bool, payload: Option<&str>) -> Value {
    let mut res = json!({"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": extractable});
    if let Some(p) = payload {
        res["payload"] = json!(p);
    }
    json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1}, "resources": [res]})
}

async fn create_root(c: &C, s: &Simulator, name: &str) -> String {
    let a = kp(c, s, "POST", "/api/v2/keys", key_body(name, false, None)).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.json()["resources"][0]["id"]
        .as_str()
        .expect("key id")
        .to_owned()
}

async fn wrap(c: &C, s: &Simulator, id: &str, body: Value) -> Value {
    let a = kp(
        c,
        s,
        "POST",
        &format!("/api/v2/keys/{id}/actions/wrap"),
        body,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.json()
}

/// Asserts the Key Protect error shape and returns the reason code.
fn kp_error(a: &Answer, status: u16) -> String {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.header("content-type"), Some(ERROR_TYPE));
    let b = a.json();
    assert_eq!(b["metadata"]["collectionType"], ERROR_TYPE);
    assert_eq!(b["metadata"]["collectionTotal"], 1);
    let r = &b["resources"][0];
    assert!(r["errorMsg"].as_str().is_some_and(|m| !m.is_empty()));
    let reason = &r["reasons"][0];
    assert_eq!(reason["status"], status);
    assert!(reason["moreInfo"].as_str().is_some());
    assert_eq!(b["message"], reason["message"]);
    reason["code"].as_str().expect("code").to_owned()
}

#[tokio::test]
async fn key_lifecycle_create_list_get_delete_restore() {
    let s = sim(SimArgs::ephemeral("primary")).await;
    let c = client();
    let root = create_root(&c, &s, "root-1").await;
    let created = kp(
        &c,
        &s,
        "POST",
        "/api/v2/keys",
        key_body("std-1", true, Some("c2VjcmV0")),
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("content-type"), Some("application/json"));
    let std_key = created.json()["resources"][0].clone();
    assert_eq!(std_key["imported"], true);
    let std_id = std_key["id"].as_str().unwrap().to_owned();

    let got = kp(
        &c,
        &s,
        "GET",
        &format!("/api/v2/keys/{std_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["resources"][0]["payload"], "c2VjcmV0");
    let got = kp(&c, &s, "GET", &format!("/api/v2/keys/{root}"), Value::Null).await;
    let r = &got.json()["resources"][0];
    assert_eq!(
        (r["state"].clone(), r["extractable"].clone()),
        (json!(1), json!(false))
    );
    assert!(r.get("payload").is_none(), "root key material never leaves");

    let list = kp(&c, &s, "GET", "/api/v2/keys?limit=10&state=", Value::Null).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["metadata"]["collectionTotal"], 2);
    let head = kp(&c, &s, "HEAD", "/api/v2/keys", Value::Null).await;
    assert_eq!(head.header("key-total"), Some("2"));
    let page = kp(&c, &s, "GET", "/api/v2/keys?limit=1&offset=1", Value::Null).await;
    assert_eq!(page.json()["resources"][0]["id"], std_id.as_str());

    let del = kp(
        &c,
        &s,
        "DELETE",
        &format!("/api/v2/keys/{root}"),
        Value::Null,
    )
    .await;
    assert_eq!(del.status, 200);
    assert_eq!(del.json()["resources"][0]["state"], 5);
    let gone = kp(&c, &s, "GET", &format!("/api/v2/keys/{root}"), Value::Null).await;
    assert_eq!(kp_error(&gone, 410), "KEY_DELETED_ERR");
    let meta = kp(
        &c,
        &s,
        "GET",
        &format!("/api/v2/keys/{root}/metadata"),
        Value::Null,
    )
    .await;
    assert_eq!(meta.status, 200);
    assert_eq!(meta.json()["resources"][0]["deleted"], true);
    let head = kp(&c, &s, "HEAD", "/api/v2/keys", Value::Null).await;
    assert_eq!(head.header("key-total"), Some("1"));
    let deleted = kp(&c, &s, "GET", "/api/v2/keys?state=5", Value::Null).await;
    assert_eq!(deleted.json()["resources"][0]["id"], root.as_str());

    let restored = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{root}/restore"),
        Value::Null,
    )
    .await;
    assert_eq!(restored.status, 201, "{:?}", restored.body);
    let again = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{root}?action=restore"),
        Value::Null,
    )
    .await;
    assert_eq!(kp_error(&again, 409), "KEY_ACTION_INVALID_STATE_ERR");
    let got = kp(&c, &s, "GET", &format!("/api/v2/keys/{root}"), Value::Null).await;
    assert_eq!(got.status, 200);

    let missing = kp(
        &c,
        &s,
        "GET",
        "/api/v2/keys/00000000-0000-4000-8000-000000000000",
        Value::Null,
    )
    .await;
    assert_eq!(kp_error(&missing, 404), "KEY_NOT_FOUND_ERR");
    let stats = s.stats();
    assert_eq!((stats.writes, stats.wraps), (5, 0));
    s.stop().await;
}

#[tokio::test]
async fn wrap_and_unwrap_are_real_authenticated_encryption() {
    let s = sim(SimArgs::ephemeral("primary")).await;
    let c = client();
    let id = create_root(&c, &s, "root").await;
    let dek = "AAECAwQFBgcICQoLDA0ODw==";
    let aad = json!(["tenant-1", "db-7"]);
    let w = wrap(&c, &s, &id, json!({"plaintext": dek, "aad": aad})).await;
    let ct = w["ciphertext"].as_str().unwrap().to_owned();
    assert!(w.get("plaintext").is_none());
    assert!(!ct.contains(dek));
    let unwrap = format!("/api/v2/keys/{id}/actions/unwrap");
    let u = kp(
        &c,
        &s,
        "POST",
        &unwrap,
        json!({"ciphertext": ct, "aad": aad}),
    )
    .await;
    assert_eq!(u.status, 200);
    assert_eq!(u.header("content-type"), Some("application/json"));
    assert_eq!(u.json()["plaintext"], dek);
    assert_eq!(u.json()["keyVersion"]["id"], w["keyVersion"]["id"]);

    let wrong_aad = kp(
        &c,
        &s,
        "POST",
        &unwrap,
        json!({"ciphertext": ct, "aad": ["tenant-2", "db-7"]}),
    )
    .await;
    assert_eq!(kp_error(&wrong_aad, 422), "UNPROCESSABLE_CIPHERTEXT_ERR");
    let no_aad = kp(&c, &s, "POST", &unwrap, json!({"ciphertext": ct})).await;
    assert_eq!(kp_error(&no_aad, 422), "UNPROCESSABLE_CIPHERTEXT_ERR");
    // Flip one character in the middle of the ciphertext.
    let mut tampered = ct.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let bad = kp(
        &c,
        &s,
        "POST",
        &unwrap,
        json!({"ciphertext": tampered, "aad": aad}),
    )
    .await;
    assert_eq!(kp_error(&bad, 422), "UNPROCESSABLE_CIPHERTEXT_ERR");
    // Another key cannot unwrap it.
    let other = create_root(&c, &s, "other").await;
    let foreign = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{other}/actions/unwrap"),
        json!({"ciphertext": ct, "aad": aad}),
    )
    .await;
    assert_eq!(kp_error(&foreign, 422), "UNPROCESSABLE_CIPHERTEXT_ERR");

    // No plaintext: a generated 32-byte DEK comes back with its ciphertext;
    // the legacy ?action= form works the same.
    let g = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}?action=wrap"),
        Value::Null,
    )
    .await;
    assert_eq!(g.status, 200);
    let g = g.json();
    let generated = g["plaintext"].as_str().expect("generated DEK");
    assert_eq!(generated.len(), 44, "32 bytes in base64");
    let u = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}?action=unwrap"),
        json!({"ciphertext": g["ciphertext"]}),
    )
    .await;
    assert_eq!(u.json()["plaintext"], generated);

    // Standard keys do not wrap; disabled keys neither, until enabled.
    let std = kp(&c, &s, "POST", "/api/v2/keys", key_body("std", true, None)).await;
    let std_id = std.json()["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{std_id}/actions/wrap"),
        Value::Null,
    )
    .await;
    assert_eq!(kp_error(&a, 400), "KEY_ROOT_REQ_ERR");
    let d = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}/actions/disable"),
        Value::Null,
    )
    .await;
    assert_eq!(d.status, 204);
    let a = kp(
        &c,
        &s,
        "POST",
        &unwrap,
        json!({"ciphertext": ct, "aad": aad}),
    )
    .await;
    assert_eq!(kp_error(&a, 422), "KEY_INVALID_STATE_ERR");
    let e = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}/actions/enable"),
        Value::Null,
    )
    .await;
    assert_eq!(e.status, 204);
    // Deleted keys are gone for the wrap family.
    kp(&c, &s, "DELETE", &format!("/api/v2/keys/{id}"), Value::Null).await;
    let a = kp(
        &c,
        &s,
        "POST",
        &unwrap,
        json!({"ciphertext": ct, "aad": aad}),
    )
    .await;
    assert_eq!(kp_error(&a, 410), "KEY_DELETED_ERR");
    assert!(s.stats().wraps >= 8);
}

#[tokio::test]
async fn rotate_keeps_old_ciphertexts_unwrappable() {
    let s = sim(SimArgs::ephemeral("primary")).await;
    let c = client();
    let id = create_root(&c, &s, "root").await;
    let old = wrap(&c, &s, &id, json!({"plaintext": "b2xkLWRlaw=="})).await;
    let r = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}/actions/rotate"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let current = r.json()["resources"][0]["keyVersion"]["id"].clone();
    assert_ne!(current, old["keyVersion"]["id"]);
    let versions = kp(
        &c,
        &s,
        "GET",
        &format!("/api/v2/keys/{id}/versions"),
        Value::Null,
    )
    .await;
    let v = versions.json();
    assert_eq!(v["metadata"]["collectionTotal"], 2);
    assert_eq!(v["resources"][0]["id"], current, "newest first");

    let u = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}/actions/unwrap"),
        json!({"ciphertext": old["ciphertext"]}),
    )
    .await;
    assert_eq!(u.status, 200);
    let u = u.json();
    assert_eq!(u["plaintext"], "b2xkLWRlaw==");
    assert_eq!(u["keyVersion"]["id"], old["keyVersion"]["id"]);
    assert_eq!(u["rewrappedKeyVersion"]["id"], current);
    let fresh = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}/actions/unwrap"),
        json!({"ciphertext": u["ciphertext"]}),
    )
    .await;
    assert_eq!(fresh.json()["keyVersion"]["id"], current);
    assert!(fresh.json().get("rewrappedKeyVersion").is_none());

    let rw = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}/actions/rewrap"),
        json!({"ciphertext": old["ciphertext"]}),
    )
    .await;
    assert_eq!(rw.status, 200);
    assert_eq!(rw.json()["keyVersion"]["id"], current);
    let back = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}?action=unwrap"),
        json!({"ciphertext": rw.json()["ciphertext"]}),
    )
    .await;
    assert_eq!(back.json()["plaintext"], "b2xkLWRlaw==");
}

#[tokio::test]
async fn aliases_address_keys() {
    let s = sim(SimArgs::ephemeral("primary")).await;
    let c = client();
    let id = create_root(&c, &s, "root").await;
    let other = create_root(&c, &s, "other").await;
    let a = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}/aliases/payments-kek"),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.json()["resources"][0]["keyId"], id.as_str());
    let got = kp(&c, &s, "GET", "/api/v2/keys/payments-kek", Value::Null).await;
    assert_eq!(got.json()["resources"][0]["id"], id.as_str());
    assert_eq!(
        got.json()["resources"][0]["aliases"],
        json!(["payments-kek"])
    );
    let w = wrap(&c, &s, "payments-kek", json!({})).await;
    let u = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{id}/actions/unwrap"),
        json!({"ciphertext": w["ciphertext"]}),
    )
    .await;
    assert_eq!(u.json()["plaintext"], w["plaintext"]);
    let dup = kp(
        &c,
        &s,
        "POST",
        &format!("/api/v2/keys/{other}/aliases/payments-kek"),
        Value::Null,
    )
    .await;
    assert_eq!(kp_error(&dup, 409), "KEY_ALIAS_NOT_UNIQUE_ERR");
    let d = kp(
        &c,
        &s,
        "DELETE",
        &format!("/api/v2/keys/{id}/aliases/payments-kek"),
        Value::Null,
    )
    .await;
    assert_eq!(d.status, 204);
    let missing = kp(
        &c,
        &s,
        "GET",
        "/api/v2/keys/payments-kek/metadata",
        Value::Null,
    )
    .await;
    assert_eq!(kp_error(&missing, 404), "KEY_NOT_FOUND_ERR");
    let mut body = key_body("with-alias", false, None);
    body["resources"][0]["aliases"] = json!(["born-with-it"]);
    let created = kp(&c, &s, "POST", "/api/v2/keys", body).await;
    assert_eq!(created.status, 201);
    let got = kp(
        &c,
        &s,
        "GET",
        "/api/v2/keys/born-with-it/metadata",
        Value::Null,
    )
    .await;
    assert_eq!(got.json()["resources"][0]["name"], "with-alias");
}

#[tokio::test]
async fn headers_are_enforced_with_key_protect_errors() {
    let mut args = SimArgs::ephemeral("primary");
    args.token = Some("sekrit".into());
    let s = sim(args).await;
    let c = client();
    let url = format!("http://{}/api/v2/keys", s.addr());
    let no_instance = req("GET", &url)
        .header("authorization", "Bearer sekrit")
        .send_on(&c)
        .await;
    assert_eq!(kp_error(&no_instance, 400), "BAD_HEADER_ERR");
    let no_auth = req("GET", &url)
        .header("bluemix-instance", DEFAULT_INSTANCE)
        .send_on(&c)
        .await;
    assert_eq!(kp_error(&no_auth, 401), "UNAUTHORIZED_ERR");
    let wrong_token = req("GET", &url)
        .header("bluemix-instance", DEFAULT_INSTANCE)
        .header("authorization", "Bearer other")
        .send_on(&c)
        .await;
    assert_eq!(kp_error(&wrong_token, 401), "UNAUTHORIZED_ERR");
    let basic = req("GET", &url)
        .header("bluemix-instance", DEFAULT_INSTANCE)
        .header("authorization", "Basic sekrit")
        .send_on(&c)
        .await;
    assert_eq!(kp_error(&basic, 401), "UNAUTHORIZED_ERR");
    let other_instance = req("GET", &url)
        .header("bluemix-instance", "11111111-2222-4333-8444-555555555555")
        .header("authorization", "Bearer sekrit")
        .send_on(&c)
        .await;
    assert_eq!(kp_error(&other_instance, 401), "UNAUTHORIZED_ERR");
    let ok = req("GET", &url)
        .header("Bluemix-Instance", DEFAULT_INSTANCE)
        .header("Authorization", "Bearer sekrit")
        .header("correlation-id", "abc-123")
        .send_on(&c)
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("correlation-id"), Some("abc-123"));
    let not_api = req("GET", &format!("http://{}/api/v2/keyrings", s.addr()))
        .header("bluemix-instance", DEFAULT_INSTANCE)
        .header("authorization", "Bearer sekrit")
        .send_on(&c)
        .await;
    assert_eq!(kp_error(&not_api, 404), "NOT_FOUND_ERR");
    let bad_body = req("POST", &url)
        .header("bluemix-instance", DEFAULT_INSTANCE)
        .header("authorization", "Bearer sekrit")
        .body("{not json")
        .send_on(&c)
        .await;
    assert_eq!(kp_error(&bad_body, 400), "BAD_BODY_ERR");
}

/// A replica (read-only, as during Key Protect's own failover) and a primary
/// replicating into it after `lag`.
async fn pair(lag: Duration, replica_args: SimArgs) -> (Simulator, Simulator) {
    let replica = sim(replica_args).await;
    let mut args = SimArgs::ephemeral("primary");
    args.replicate_to = Some(format!("http://{}", replica.control_addr()));
    args.replication_lag = lag;
    (sim(args).await, replica)
}

async fn status_of(c: &C, s: &Simulator, instance: &str, path: &str) -> u16 {
    kp_as(c, s, instance, "GET", path, Value::Null).await.status
}

#[tokio::test]
async fn replication_keeps_ids_honours_lag_and_survives_a_replica_outage() {
    let lag = Duration::from_millis(700);
    let mut replica_args = SimArgs::ephemeral("replica");
    replica_args.read_only = true;
    let (primary, replica) = pair(lag, replica_args).await;
    let c = client();
    let started = Instant::now();
    let id = create_root(&c, &primary, "replicated").await;
    let w = wrap(&c, &primary, &id, json!({"aad": ["x"]})).await;
    let path = format!("/api/v2/keys/{id}");
    assert_eq!(
        status_of(&c, &replica, DEFAULT_INSTANCE, &path).await,
        404,
        "not before the lag"
    );
    eventually_async(T, "the key reaches the replica", || async {
        status_of(&client(), &replica, DEFAULT_INSTANCE, &path).await == 200
    })
    .await;
    assert!(
        started.elapsed() >= lag,
        "arrived after {:?}",
        started.elapsed()
    );

    let u = kp(
        &c,
        &replica,
        "POST",
        &format!("{path}/actions/unwrap"),
        json!({"ciphertext": w["ciphertext"], "aad": ["x"]}),
    )
    .await;
    assert_eq!(u.status, 200, "{:?}", u.body);
    assert_eq!(u.json()["plaintext"], w["plaintext"]);

    // The replica refuses writes itself, but replication still applies.
    let refused = kp(
        &c,
        &replica,
        "POST",
        "/api/v2/keys",
        key_body("nope", false, None),
    )
    .await;
    assert_eq!(kp_error(&refused, 409), "READ_ONLY_REGION_ERR");
    let refused = kp(
        &c,
        &replica,
        "POST",
        &format!("{path}/actions/rotate"),
        Value::Null,
    )
    .await;
    assert_eq!(kp_error(&refused, 409), "READ_ONLY_REGION_ERR");
    assert_eq!(replica.stats().refused_read_only, 2);

    // Changes made while the replica's API is down arrive anyway (through its
    // control port), in order: rotate, then an alias.
    replica.faults().set_outage(true);
    let r = kp(
        &c,
        &primary,
        "POST",
        &format!("{path}/actions/rotate"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    let a = kp(
        &c,
        &primary,
        "POST",
        &format!("{path}/aliases/orders"),
        Value::Null,
    )
    .await;
    assert_eq!(a.status, 201);
    let before = replica.stats().replicated_in;
    eventually(T, "both changes replicated", || {
        replica.stats().replicated_in >= before + 2
    })
    .await;
    eventually(T, "the primary counts them acknowledged", || {
        primary.stats().replicated_out == replica.stats().replicated_in
    })
    .await;
    replica.faults().clear();
    let c = client();
    eventually_async(T, "replica API back", || async {
        tokio::net::TcpStream::connect(replica.addr()).await.is_ok()
    })
    .await;
    let versions = kp(
        &c,
        &replica,
        "GET",
        "/api/v2/keys/orders/versions",
        Value::Null,
    )
    .await;
    assert_eq!(versions.status, 200, "{:?}", versions.body);
    assert_eq!(versions.json()["metadata"]["collectionTotal"], 2);
    primary.stop().await;
    replica.stop().await;
}

#[tokio::test]
async fn remap_ids_gives_replica_copies_their_own_ids() {
    let replica_instance = "9a2b0c1d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
    let mut replica_args = SimArgs::ephemeral("replica");
    replica_args.remap_ids = true;
    replica_args.instance = replica_instance.into();
    let (primary, replica) = pair(Duration::ZERO, replica_args).await;
    let c = client();
    let id = create_root(&c, &primary, "duplicated").await;
    let w = wrap(&c, &primary, &id, json!({})).await;
    let mapped = remapped_id(&id);
    assert_ne!(mapped, id);
    eventually_async(T, "the copy reaches the replica", || async {
        status_of(
            &client(),
            &replica,
            replica_instance,
            &format!("/api/v2/keys/{mapped}"),
        )
        .await
            == 200
    })
    .await;
    let original = status_of(
        &c,
        &replica,
        replica_instance,
        &format!("/api/v2/keys/{id}"),
    )
    .await;
    assert_eq!(original, 404);
    let wrong_instance = status_of(
        &c,
        &replica,
        DEFAULT_INSTANCE,
        &format!("/api/v2/keys/{mapped}"),
    )
    .await;
    assert_eq!(wrong_instance, 401);
    let got = kp_as(
        &c,
        &replica,
        replica_instance,
        "GET",
        &format!("/api/v2/keys/{mapped}"),
        Value::Null,
    )
    .await;
    let crn = got.json()["resources"][0]["crn"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        crn.contains(replica_instance) && crn.ends_with(&mapped),
        "{crn}"
    );
    let u = kp_as(
        &c,
        &replica,
        replica_instance,
        "POST",
        &format!("/api/v2/keys/{mapped}/actions/unwrap"),
        json!({"ciphertext": w["ciphertext"]}),
    )
    .await;
    assert_eq!(u.status, 200, "{:?}", u.body);
    assert_eq!(u.json()["plaintext"], w["plaintext"]);
    // Deletion replicates too.
    kp(
        &c,
        &primary,
        "DELETE",
        &format!("/api/v2/keys/{id}"),
        Value::Null,
    )
    .await;
    eventually_async(T, "the deletion reaches the replica", || async {
        status_of(
            &client(),
            &replica,
            replica_instance,
            &format!("/api/v2/keys/{mapped}"),
        )
        .await
            == 410
    })
    .await;
}

async fn connect_refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test]
async fn outage_refuses_connections_and_recovers_on_the_same_port() {
    let s = sim(SimArgs::ephemeral("primary")).await;
    let c = client();
    let id = create_root(&c, &s, "root").await;
    // An idle keep-alive connection open before the outage is dropped.
    let idle = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let on = control(&c, &s, "POST", "/faults", json!({"outage": true})).await;
    assert_eq!(on.status, 200);
    assert_eq!(on.json()["outage"], true);
    eventually_async(T, "connections refused", || connect_refused(s.addr())).await;
    let mut buf = [0u8; 1];
    use tokio::io::AsyncReadExt;
    let mut idle = idle;
    let read = tokio::time::timeout(T, idle.read(&mut buf))
        .await
        .expect("idle connection ends");
    assert!(matches!(read, Ok(0) | Err(_)));
    let faults = control(&c, &s, "GET", "/faults", Value::Null).await;
    assert_eq!(faults.json()["outage"], true);

    let off = control(&c, &s, "POST", "/faults/clear", Value::Null).await;
    assert_eq!(off.json()["outage"], false);
    eventually_async(T, "the port is served again", || async {
        tokio::net::TcpStream::connect(s.addr()).await.is_ok()
    })
    .await;
    let got = kp(
        &client(),
        &s,
        "GET",
        &format!("/api/v2/keys/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(got.status, 200, "state survives an outage");
}

#[tokio::test]
async fn hang_reads_the_request_and_answers_only_when_lifted() {
    let s = sim(SimArgs::ephemeral("primary")).await;
    let c = client();
    let on = control(&c, &s, "POST", "/faults", json!({"hang": true})).await;
    assert_eq!(on.json()["hang"], true);
    let req = format!(
        "GET /api/v2/keys HTTP/1.1\r\nhost: x\r\nbluemix-instance: {DEFAULT_INSTANCE}\r\nauthorization: Bearer t\r\n\r\n"
    );
    let hung = raw_exchange(s.addr(), req.as_bytes(), Duration::from_millis(300)).await;
    assert!(hung.bytes.is_empty() && !hung.closed, "{hung:?}");
    eventually(T, "the hung request was read", || s.stats().reads == 1).await;

    let addr = s.addr();
    let req = req.replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n");
    let pending = tokio::spawn(async move { raw_exchange(addr, req.as_bytes(), T).await });
    eventually(T, "second request read", || s.stats().reads == 2).await;
    s.faults().set_hang(false);
    let answered = pending.await.unwrap();
    assert_eq!(answered.status(), Some(200), "{answered:?}");
}

#[tokio::test]
async fn error_503_with_and_without_retry_after() {
    let s = sim(SimArgs::ephemeral("primary")).await;
    let c = client();
    control(
        &c,
        &s,
        "POST",
        "/faults",
        json!({"error_503": {"retry_after": 1}}),
    )
    .await;
    let a = kp(&c, &s, "GET", "/api/v2/keys", Value::Null).await;
    assert_eq!(kp_error(&a, 503), "SERVICE_UNAVAILABLE_ERR");
    assert_eq!(a.header("retry-after"), Some("1"));
    let f = control(&c, &s, "POST", "/faults", json!({"error_503": {}})).await;
    assert_eq!(f.json()["error_503"], json!({"retry_after": null}));
    let a = kp(&c, &s, "GET", "/api/v2/keys", Value::Null).await;
    assert_eq!(a.status, 503);
    assert!(a.header("retry-after").is_none());
    control(&c, &s, "POST", "/faults", json!({"error_503": null})).await;
    let a = kp(&c, &s, "GET", "/api/v2/keys", Value::Null).await;
    assert_eq!(a.status, 200);
    let stats = control(&c, &s, "GET", "/stats", Value::Null).await;
    assert_eq!(stats.json()["reads"], 3);
    let typo = control(&c, &s, "POST", "/faults", json!({"eror_503": {}})).await;
    assert_eq!(typo.status, 400);
}

#[tokio::test]
async fn latency_delays_answers() {
    let s = sim(SimArgs::ephemeral("primary")).await;
    let c = client();
    control(&c, &s, "POST", "/faults", json!({"latency_ms": 250})).await;
    let t0 = Instant::now();
    let a = kp(&c, &s, "GET", "/api/v2/keys", Value::Null).await;
    assert_eq!(a.status, 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    s.faults().set_latency(Duration::ZERO);
    assert_eq!(
        control(&c, &s, "GET", "/faults", Value::Null).await.json()["latency_ms"],
        0
    );
}

#[tokio::test]
async fn reset_after_n_bytes_cuts_the_response() {
    let s = sim(SimArgs::ephemeral("primary")).await;
    let c = client();
    control(&c, &s, "POST", "/faults", json!({"reset_after_bytes": 10})).await;
    let req = format!(
        "GET /api/v2/keys HTTP/1.1\r\nhost: x\r\nbluemix-instance: {DEFAULT_INSTANCE}\r\nauthorization: Bearer t\r\n\r\n"
    );
    let cut = raw_exchange(s.addr(), req.as_bytes(), T).await;
    assert!(cut.reset, "{cut:?}");
    assert_eq!(cut.bytes, b"HTTP/1.1 2", "{cut:?}");
    control(
        &c,
        &s,
        "POST",
        "/faults",
        json!({"reset_after_bytes": null}),
    )
    .await;
    let whole = kp(&c, &s, "GET", "/api/v2/keys", Value::Null).await;
    assert_eq!(whole.status, 200);
}
