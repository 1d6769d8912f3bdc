//! `GET /history?service=NAME&since=1h`: the audit file's records, oldest
//! first (`"source": "audit_file"`), or without `[audit] path` the
//! transitions `/status` keeps (`"source": "status"`, the last 20 per
//! service, nothing else). Reload records carry no service and are left
//! out when a service is asked for.

use std::time::SystemTime;

use http::StatusCode;
use serde_json::{json, Value};

use super::AdminState;
use crate::audit::{Kind, Record};

/// The answer's status and body.
pub async fn history(state: &AdminState, query: Option<&str>) -> (StatusCode, Value) {
    let param = |name: &str| crate::query::query_param(query, name);
    let service = param("service");
    let since = match param("since").map(|s| humantime::parse_duration(&s)) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("since: {e} (e.g. \"1h\", \"30m\")")}),
            )
        }
    };
    let routes = state.proxy.routes();
    if let Some(name) = &service {
        if let Err(answer) = super::actions::pick_service(&routes, Some(name)) {
            return answer;
        }
    }
    let (source, records) = match state.audit.log() {
        Some(log) => {
            let log = log.clone();
            match tokio::task::spawn_blocking(move || log.read_all()).await {
                Ok(Ok(r)) => ("audit_file", r),
                Ok(Err(e)) => {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": format!("cannot read the audit file: {e}")}),
                    )
                }
                Err(e) => {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"error": e.to_string()}),
                    )
                }
            }
        }
        None => ("status", from_status(&routes)),
    };
    let cutoff = since.and_then(|d| SystemTime::now().checked_sub(d));
    let kept: Vec<&Record> = records
        .iter()
        .filter(|r| match &service {
            Some(name) => r.service.as_deref() == Some(name.as_str()),
            None => true,
        })
        .filter(|r| match (cutoff, humantime::parse_rfc3339_weak(&r.time)) {
            (Some(cut), Ok(at)) => at >= cut,
            _ => true,
        })
        .collect();
    (StatusCode::OK, json!({"source": source, "records": kept}))
}

/// The transitions each service's snapshot keeps, as records, oldest first.
fn from_status(routes: &crate::proxy::pick::Routes) -> Vec<Record> {
    let mut out = Vec::new();
    for svc in routes.services() {
        let snap = svc.failover().snapshot();
        for t in &snap.transitions {
            let mut r = Record::new(Kind::Transition, t.at);
            r.service = Some(svc.name().to_owned());
            r.from = Some(t.from.as_str().to_owned());
            r.to = Some(t.to.as_str().to_owned());
            r.trigger = Some(t.trigger.as_str().to_owned());
            r.reason = Some(t.reason.clone());
            out.push(r);
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time));
    out
}
