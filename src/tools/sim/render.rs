//! JSON representations the simulated API answers with, shaped like Key
//! Protect's: the collection envelope, keys (with `payload` only for
//! standard keys and only where Key Protect returns it), key versions and
//! aliases. Fields a real key has but the simulator does not model (key
//! rings other than `default`, policies, expiration) are fixed or absent.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::api::b64_encode;
use super::key::Key;
use super::region::Region;

pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
pub const VERSION_TYPE: &str = "application/vnd.ibm.kms.key.version+json";
pub const ALIAS_TYPE: &str = "application/vnd.ibm.kms.key_alias+json";
const CREATED_BY: &str = "IBMid-failway-sim";
const ACCOUNT: &str = "00000000000000000000000000000000";

pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `{"metadata": {...}, "resources": [...]}`.
pub fn collection(collection_type: &str, resources: Vec<Value>) -> Value {
    json!({
        "metadata": {"collectionType": collection_type, "collectionTotal": resources.len()},
        "resources": resources,
    })
}

/// A key; `with_payload` adds the material of a standard key.
pub fn key(region: &Region, key: &Key, with_payload: bool) -> Value {
    let current = key.current();
    let mut v = json!({
        "type": KEY_TYPE,
        "id": key.id,
        "name": key.name,
        "state": key.state.code(),
        "extractable": key.extractable,
        "imported": key.imported,
        "crn": format!(
            "crn:v1:bluemix:public:kms:{}:a/{ACCOUNT}:{}:key:{}",
            region.name, region.instance, key.id
        ),
        "algorithmType": "AES",
        "algorithmMetadata": {"bitLength": (current.material.len() * 8).to_string(), "mode": "GCM"},
        "createdBy": CREATED_BY,
        "creationDate": time(key.created),
        "lastUpdateDate": time(key.updated),
        "keyVersion": {"id": current.id, "creationDate": time(current.created)},
        "dualAuthDelete": {"enabled": false},
        "deleted": key.deleted.is_some(),
        "aliases": key.aliases,
        "keyRingID": "default",
    });
    let Value::Object(obj) = &mut v else {
        return v;
    };
    if let Some(d) = &key.description {
        obj.insert("description".into(), json!(d));
    }
    if let Some(t) = key.rotated {
        obj.insert("lastRotateDate".into(), json!(time(t)));
    }
    if let Some(t) = key.deleted {
        obj.insert("deletionDate".into(), json!(time(t)));
        obj.insert("deletedBy".into(), json!(CREATED_BY));
    }
    if with_payload && key.extractable {
        obj.insert("payload".into(), json!(b64_encode(&current.material)));
    }
    v
}

/// One alias record, as alias creation returns it.
pub fn alias(key: &Key, alias: &str) -> Value {
    json!({
        "keyId": key.id,
        "alias": alias,
        "createdBy": CREATED_BY,
        "creationDate": time(key.updated),
    })
}

/// A key's versions, newest first.
pub fn versions(key: &Key) -> Vec<Value> {
    key.versions
        .iter()
        .rev()
        .map(|v| json!({"id": v.id, "creationDate": time(v.created)}))
        .collect()
}
