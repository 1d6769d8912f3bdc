//! Operator actions: `POST /admin/failover`, `/admin/enable-writes`,
//! `/admin/failback` with a JSON body `{"reason": "...", "force": false}`.
//!
//! With `admin.token_file` set, each action needs `Authorization: Bearer
//! <token>`, compared in constant time; the token file is re-read when it
//! changes, so rotating the secret needs no restart. Answers are JSON:
//! 200 (changed, no-op, hold set), 409 naming the current mode (also when,
//! in fleet mode, other instances kept changing the record first), 503 when
//! the fleet record cannot be changed (naming why), 400 naming what is wrong
//! with the body, 401 without a valid token.

use std::path::PathBuf;

use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::status::transition_json;
use crate::failover::machine::{Command, CommandOutcome};
use crate::failover::CommandError;
use crate::watched_file::Cached;

/// The largest action body accepted; a reason is a sentence, not a file.
pub const MAX_BODY: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    reason: Option<String>,
    #[serde(default)]
    force: bool,
    /// Required when more than one service exists.
    service: Option<String>,
    /// `/admin/drill` only.
    duration: Option<String>,
}

/// The service an action or query names: `name`, or the only one.
pub fn pick_service(
    routes: &crate::proxy::pick::Routes,
    name: Option<&str>,
) -> Result<std::sync::Arc<crate::proxy::service::Service>, (StatusCode, Value)> {
    let names: Vec<&str> = routes.services().map(|s| s.name()).collect();
    match name {
        Some(n) => routes.service(n).cloned().ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                json!({"error": format!("no service named {n:?}; the services are: {}", names.join(", ")), "services": names}),
            )
        }),
        None => match routes.services().collect::<Vec<_>>().as_slice() {
            [only] => Ok((*only).clone()),
            _ => Err((
                StatusCode::BAD_REQUEST,
                json!({"error": format!("service: required with more than one service; the services are: {}", names.join(", ")), "services": names}),
            )),
        },
    }
}

/// Which action a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failover,
    EnableWrites,
    Failback,
    Drill,
    DrillStop,
    /// Runs the service's key-pair checks now.
    KeysVerify,
}

impl Action {
    /// As in the audit line.
    pub fn name(self) -> &'static str {
        match self {
            Action::Failover => "failover",
            Action::EnableWrites => "enable-writes",
            Action::Failback => "failback",
            Action::Drill => "drill",
            Action::DrillStop => "drill-stop",
            Action::KeysVerify => "keys-verify",
        }
    }

    pub fn from_path(path: &str) -> Option<Action> {
        match path {
            "/admin/failover" => Some(Action::Failover),
            "/admin/enable-writes" => Some(Action::EnableWrites),
            "/admin/failback" => Some(Action::Failback),
            "/admin/drill" => Some(Action::Drill),
            "/admin/drill/stop" => Some(Action::DrillStop),
            "/admin/keys/verify" => Some(Action::KeysVerify),
            _ => None,
        }
    }
}

/// `admin.token_file`, read again when it changes.
pub struct AdminToken {
    file: Cached<Vec<u8>>,
}

impl AdminToken {
    pub fn new(path: PathBuf) -> AdminToken {
        AdminToken {
            file: Cached::new(path),
        }
    }

    /// The token now; also a start-up check, so a bad path fails early.
    pub fn load(&self) -> std::io::Result<Vec<u8>> {
        self.file.get(|path| {
            let text = std::fs::read_to_string(path)?;
            let token = text.trim().as_bytes().to_vec();
            if token.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the token file is empty",
                ));
            }
            Ok(token)
        })
    }

    pub fn path(&self) -> &std::path::Path {
        self.file.path()
    }

    /// Whether `headers` carry `Authorization: Bearer <token>` (the scheme
    /// in any case, as RFC 9110 has it).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Ok(expected) = self.load() else {
            // An unreadable token file refuses everyone rather than no one.
            tracing::error!(path = %self.path().display(), "admin.token_file cannot be read; refusing operator actions");
            return false;
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
        else {
            return false;
        };
        constant_time_eq(given, &expected)
    }
}

/// The credentials of a `Bearer` authorization value: the scheme matched
/// case-insensitively, then one or more spaces.
pub(super) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

/// The operator's reason, trimmed: required, and plain text on one line,
/// since it is stored, logged and printed by `failway ctl` (no terminal
/// escape, NUL or line break rides along).
fn reason_of(raw: Option<String>) -> Result<String, String> {
    let reason = raw.map(|r| r.trim().to_owned()).unwrap_or_default();
    if reason.is_empty() {
        return Err(
            "reason: required, a non-empty string saying why (it is logged and kept in /status)"
                .to_owned(),
        );
    }
    if let Some(c) = reason.chars().find(|c| c.is_control()) {
        return Err(format!(
            "reason: must not contain control characters (found U+{:04X}); write it as one line of plain text",
            c as u32
        ));
    }
    Ok(reason)
}

/// Compares without an early exit, so the time taken does not reveal how
/// much of a guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who sent an operator action, for its audit line.
pub struct Caller {
    pub source: std::net::SocketAddr,
    pub correlation_id: String,
    /// The name of the token used (`admin.tokens_file`), never the token.
    pub by: Option<String>,
}

impl Caller {
    fn record(&self, action: Action, reason: &str) -> crate::audit::Record {
        crate::audit::Record {
            action: Some(action.name().to_owned()),
            reason: Some(reason.to_owned()),
            source: Some(self.source),
            correlation_id: Some(self.correlation_id.clone()),
            by: self.by.clone(),
            ..crate::audit::Record::new(crate::audit::Kind::Operator, std::time::SystemTime::now())
        }
    }
}

/// Runs an action; returns the status and JSON body to answer.
pub async fn run(
    routes: &crate::proxy::pick::Routes,
    action: Action,
    body: &Bytes,
    caller: &Caller,
) -> (StatusCode, Value) {
    let parsed: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody {
            reason: None,
            force: false,
            service: None,
            duration: None,
        }
    } else {
        match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("invalid JSON body: {e}; expected {{\"reason\": \"...\", \"force\": false}}")}),
                )
            }
        }
    };
    let svc = match pick_service(routes, parsed.service.as_deref()) {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    // A check takes no reason: it changes nothing.
    if action == Action::KeysVerify {
        return keys_verify(&svc).await;
    }
    let failover = svc.failover();
    let reason = match reason_of(parsed.reason) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, json!({ "error": e })),
    };
    if action != Action::Drill && parsed.duration.is_some() {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "duration: only /admin/drill takes a duration"}),
        );
    }
    let command = match action {
        Action::Failover => Command::Failover {
            force: parsed.force,
            reason,
        },
        Action::EnableWrites => Command::EnableWrites {
            force: parsed.force,
            reason,
        },
        Action::Failback => Command::Failback {
            force: parsed.force,
            reason,
        },
        Action::KeysVerify => return keys_verify(&svc).await,
        Action::Drill | Action::DrillStop => {
            let max = svc.dynamic().settings.max_drill;
            match super::drill::command(
                action == Action::DrillStop,
                parsed.duration,
                parsed.force,
                max,
                reason,
            ) {
                Ok(c) => c,
                Err(e) => return (StatusCode::BAD_REQUEST, json!({ "error": e })),
            }
        }
    };
    let command = match command {
        Command::Drill {
            duration, reason, ..
        } => Command::Drill {
            duration,
            reason,
            by: caller.by.clone(),
        },
        other => other,
    };
    let record = caller.record(action, command.reason());
    let answer = failover.command_recorded(command, Some(record)).await;
    if action == Action::Drill && matches!(answer, Ok(Err(_))) {
        failover.metrics().drills.refused();
    }
    answer_of(failover, answer)
}

/// `POST /admin/keys/verify`: every pair of the service checked now; 200
/// with `"interchangeable"` true only when each pair is.
async fn keys_verify(svc: &crate::proxy::service::Service) -> (StatusCode, Value) {
    let reports = svc.keys().verify().await;
    let all = reports
        .iter()
        .all(|r| r.result == crate::keycheck::CheckResult::Ok);
    let pairs: Vec<Value> = reports.iter().map(crate::keycheck::report_json).collect();
    (
        StatusCode::OK,
        json!({"service": svc.name(), "interchangeable": all, "key_pairs": pairs}),
    )
}

/// The HTTP answer to a command's outcome.
fn answer_of(
    failover: &crate::failover::Failover,
    answer: Result<Result<CommandOutcome, crate::failover::machine::Conflict>, CommandError>,
) -> (StatusCode, Value) {
    match answer {
        Err(e @ CommandError::Contended(_)) => (
            StatusCode::CONFLICT,
            json!({
                "error": e.to_string(),
                "code": "fleet_record_changed",
                "mode": failover.snapshot().mode.as_str(),
            }),
        ),
        Err(e @ CommandError::AuditUnwritable(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "error": e.to_string(),
                "code": crate::audit::AUDIT_WRITE_ERROR_CODE,
                "mode": failover.snapshot().mode.as_str(),
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        ),
        Ok(Err(conflict)) => (
            StatusCode::CONFLICT,
            json!({
                "error": conflict.message,
                "code": conflict.kind.as_str(),
                "mode": conflict.current.as_str(),
            }),
        ),
        Ok(Ok(outcome)) => {
            let mode = failover.snapshot().mode.as_str();
            let body = match outcome {
                CommandOutcome::Changed(t) => {
                    json!({"result": "changed", "mode": mode, "transition": transition_json(&t)})
                }
                CommandOutcome::NoOp => json!({"result": "no_op", "mode": mode}),
                CommandOutcome::HoldSet => json!({"result": "hold_set", "mode": mode}),
            };
            (StatusCode::OK, body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let token = AdminToken::new(path.clone());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer first".parse().unwrap());
        assert!(token.allows(&h));
        std::fs::write(&path, "second-token\n").unwrap();
        assert!(!token.allows(&h));
        h.insert(
            header::AUTHORIZATION,
            "Bearer second-token".parse().unwrap(),
        );
        assert!(token.allows(&h));
        h.insert(header::AUTHORIZATION, "Basic second-token".parse().unwrap());
        assert!(!token.allows(&h));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER   abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Basic abc"), None);
    }

    #[test]
    fn reasons_are_one_line_of_plain_text() {
        assert_eq!(
            reason_of(Some("  incident 42 ".into())).unwrap(),
            "incident 42"
        );
        assert!(reason_of(None).unwrap_err().starts_with("reason: required"));
        assert!(reason_of(Some("  ".into()))
            .unwrap_err()
            .starts_with("reason: required"));
        for bad in ["ok\u{1b}[31mred", "a\u{0}b", "two\nlines", "tab\there"] {
            let err = reason_of(Some(bad.into())).unwrap_err();
            assert!(
                err.starts_with("reason: must not contain control characters"),
                "{err}"
            );
        }
        assert!(reason_of(Some("ok\u{1b}x".into()))
            .unwrap_err()
            .contains("U+001B"));
        assert_eq!(
            reason_of(Some("région de secours".into())).unwrap(),
            "région de secours"
        );
    }
}
