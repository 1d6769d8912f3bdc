//! The `/status` document: mode, since, read-only deadline, latch, each
//! region's health with its last check and last error, and the recent
//! transitions with their triggers and operator reasons. `failway ctl
//! status` reads the same JSON. Timestamps are RFC 3339 (UTC).

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::failover::machine::Transition;
use crate::failover::Snapshot;
use crate::region::Region;

fn ts(t: SystemTime) -> Value {
    Value::from(humantime::format_rfc3339_millis(t).to_string())
}

fn opt_ts(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, ts)
}

pub fn transition_json(t: &Transition) -> Value {
    let mut v = json!({
        "from": t.from.as_str(),
        "to": t.to.as_str(),
        "trigger": t.trigger.as_str(),
        "reason": t.reason,
        "at": ts(t.at),
        "latch_cleared": t.latch_cleared,
    });
    if let Some(by) = &t.by {
        v["by"] = json!(by);
    }
    v
}

/// The status document for `snap`; `urls` are the regions' upstream URLs.
pub fn status_json(snap: &Snapshot, urls: &[String; 2]) -> Value {
    let region = |r: Region| {
        let v = snap.region(r);
        json!({
            "url": urls[r.index()],
            "health": v.health.as_str(),
            "passive_down": v.passive_down,
            "down": v.is_down(),
            "last_check": opt_ts(v.last_check),
            "last_status": v.last_status,
            "last_error": v.last_error,
            "recent_probes": v.recent.results().collect::<Vec<bool>>(),
        })
    };
    let recent: Vec<Value> = snap
        .transitions
        .iter()
        .rev()
        .take(20)
        .rev()
        .map(transition_json)
        .collect();
    json!({
        "mode": snap.mode.as_str(),
        "since": ts(snap.since),
        "failed_over_at": opt_ts(snap.failed_over_at),
        "read_only_deadline": opt_ts(snap.read_only_deadline),
        "replica_writes_latch": snap.latch,
        "operator_hold": snap.operator_hold,
        "failback_blocked": snap.failback_blocked.map(|b| b.as_str()),
        "drill": snap.drill.as_ref().map(|d| json!({
            "started": ts(d.started),
            "ends_at": ts(d.ends_at),
            "reason": d.reason,
            "by": d.by,
        })),
        "shadow": snap.shadow.map(|m| json!({"mode": m.as_str()})),
        "regions": {
            "primary": region(Region::Primary),
            "replica": region(Region::Replica),
        },
        "transitions": recent,
    })
}

/// One service's status: its mode and regions, and its fleet record.
pub fn service_json(svc: &crate::proxy::service::Service) -> Value {
    let d = svc.dynamic();
    let url = |r: Region| {
        let u = &d.upstreams[r.index()];
        format!("{}://{}/", u.scheme, u.authority)
    };
    let urls = [url(Region::Primary), url(Region::Replica)];
    let mut doc = status_json(&svc.failover().snapshot(), &urls);
    doc["fleet"] = match svc.failover().fleet() {
        Some(f) => serde_json::to_value(f.status()).unwrap_or_default(),
        None => Value::Null,
    };
    doc["key_pairs"] = svc.keys().status_json();
    doc
}

/// `/status`: `services` by name; with one service, its fields at the top
/// level too (as the single-pair form always had them).
pub fn document(routes: &crate::proxy::pick::Routes) -> Value {
    let mut services = serde_json::Map::new();
    for svc in routes.services() {
        services.insert(svc.name().to_owned(), service_json(svc));
    }
    let mut doc = match (services.len(), services.values().next()) {
        (1, Some(only)) => only.clone(),
        _ => json!({}),
    };
    doc["services"] = Value::Object(services);
    doc
}
