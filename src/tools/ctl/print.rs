//! What `failway ctl` prints: the `status` and `fleet status` tables, one
//! line per action answer, and every string from the server with control
//! characters escaped.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// `text` with control characters (terminal escapes, NUL, line breaks) and
/// the bidirectional overrides (which reorder what a terminal shows)
/// written as escapes: the strings come from the server, and a state file
/// written by an older version may hold reasons the admin now refuses.
pub(super) fn printable(text: &str) -> Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if c.is_control() => out.extend(c.escape_debug()),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn s(v: &Value) -> Cow<'_, str> {
    printable(v.as_str().unwrap_or("-"))
}

/// "2026-11-29T10:00:00.000Z (in 5h 59m)" style, relative to `now`.
fn when(v: &Value, now: SystemTime) -> String {
    let Some(text) = v.as_str() else {
        return "-".into();
    };
    let Ok(t) = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')) else {
        return printable(text).into_owned();
    };
    let rel = match t.duration_since(now) {
        Ok(d) => format!("in {}", short(d)),
        Err(e) => format!("{} ago", short(e.duration())),
    };
    format!("{text} ({rel})")
}

fn short(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// What `status` prints: the one service's table as it always was when
/// failway has one and none is named; the named service's block; or one
/// block per service. `Err`: the named service does not exist.
pub fn status_output(
    v: &Value,
    service: Option<&str>,
    json: bool,
    now: SystemTime,
) -> Result<String, String> {
    let pretty = |v: &Value| format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default());
    let services = v["services"].as_object();
    match (service, services) {
        (Some(name), _) => {
            let Some(entry) = services.and_then(|m| m.get(name)) else {
                let names: Vec<Cow<'_, str>> = services
                    .map(|m| m.keys().map(|n| printable(n)).collect())
                    .unwrap_or_default();
                return Err(format!(
                    "no service named \"{}\"; the services are: {}",
                    printable(name),
                    if names.is_empty() {
                        "(none listed)".into()
                    } else {
                        names.join(", ")
                    }
                ));
            };
            Ok(if json {
                pretty(entry)
            } else {
                service_block(name, entry, now)
            })
        }
        _ if json => Ok(pretty(v)),
        (None, Some(m)) if m.len() > 1 => Ok(m
            .iter()
            .map(|(name, entry)| service_block(name, entry, now))
            .collect::<Vec<_>>()
            .join("\n")),
        (None, _) => Ok(status_table(v, now)),
    }
}

/// One service's `status` table under a line naming it.
fn service_block(name: &str, v: &Value, now: SystemTime) -> String {
    format!(
        "{:<22}{}\n{}",
        "service",
        printable(name),
        status_table(v, now)
    )
}

/// The readable `status` table.
pub fn status_table(v: &Value, now: SystemTime) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, val: String| out.push_str(&format!("{k:<22}{val}\n"));
    line(
        &mut out,
        "mode",
        format!("{} since {}", s(&v["mode"]), when(&v["since"], now)),
    );
    line(
        &mut out,
        "read-only deadline",
        when(&v["read_only_deadline"], now),
    );
    line(
        &mut out,
        "replica-writes latch",
        if v["replica_writes_latch"] == Value::Bool(true) {
            "SET (automatic failback refused)".into()
        } else {
            "clear".into()
        },
    );
    line(
        &mut out,
        "failback blocked",
        printable(v["failback_blocked"].as_str().unwrap_or("no")).into_owned(),
    );
    out.push('\n');
    out.push_str(&format!(
        "{:<9}{:<11}{:<6}{:<8}{:<34}{}\n",
        "region", "health", "down", "status", "last check", "last error"
    ));
    for r in ["primary", "replica"] {
        let reg = &v["regions"][r];
        out.push_str(&format!(
            "{:<9}{:<11}{:<6}{:<8}{:<34}{}\n",
            r,
            s(&reg["health"]),
            if reg["down"] == Value::Bool(true) {
                "yes"
            } else {
                "no"
            },
            reg["last_status"]
                .as_u64()
                .map_or("-".into(), |c| c.to_string()),
            s(&reg["last_check"]),
            s(&reg["last_error"]),
        ));
    }
    if let Some(ts) = v["transitions"].as_array().filter(|t| !t.is_empty()) {
        out.push_str("\nrecent transitions:\n");
        for t in ts {
            out.push_str(&format!(
                "  {}  {} -> {}  [{}]  {}\n",
                s(&t["at"]),
                s(&t["from"]),
                s(&t["to"]),
                s(&t["trigger"]),
                s(&t["reason"])
            ));
        }
    }
    out
}

/// The `history` table: one line per record, oldest first.
pub fn history_table(v: &Value) -> String {
    let records = v["records"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = format!(
        "{:<26}{:<12}{:<12}{:<48}{:<14}{:<14}{}\n",
        "time", "kind", "service", "what", "outcome", "by", "reason"
    );
    for r in records {
        let what = match (r["from"].as_str(), r["to"].as_str(), r["action"].as_str()) {
            (_, _, Some(a)) if r["kind"] == "operator" => match r["to"].as_str() {
                Some(to) => format!("{a}: {} -> {to}", s(&r["from"])),
                None => a.to_owned(),
            },
            (Some(from), Some(to), _) => format!("{from} -> {to} [{}]", s(&r["trigger"])),
            (_, _, Some(a)) => a.to_owned(),
            _ => s(&r["trigger"]).into_owned(),
        };
        out.push_str(&format!(
            "{:<26}{:<12}{:<12}{:<48}{:<14}{:<14}{}\n",
            s(&r["time"]),
            s(&r["kind"]),
            s(&r["service"]),
            printable(&what),
            s(&r["outcome"]),
            s(&r["by"]),
            s(&r["reason"]),
        ));
    }
    if records.is_empty() {
        out.push_str("(no records)\n");
    }
    if v["source"] == "status" {
        out.push_str("no [audit] path is set: these are the transitions /status keeps\n");
    }
    out
}

/// The `fleet status` table: one line per instance.
pub fn fleet_table(v: &Value, now: SystemTime) -> String {
    let mut out = format!(
        "{:<28}{:<22}{:<14}{:<17}{:<8}{}\n",
        "instance", "mode", "primary_down", "replica_healthy", "epoch", "age"
    );
    let yes_no = |b: &Value| if b == &Value::Bool(true) { "yes" } else { "no" };
    for r in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        let age = r["at_unix_ms"]
            .as_u64()
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms))
            .map_or("-".into(), |at| match now.duration_since(at) {
                Ok(d) => format!("{} ago", short(d)),
                Err(_) => "0s ago".into(),
            });
        out.push_str(&format!(
            "{:<28}{:<22}{:<14}{:<17}{:<8}{}\n",
            s(&r["instance_id"]),
            s(&r["mode"]),
            yes_no(&r["primary_down"]),
            yes_no(&r["replica_healthy"]),
            r["epoch_seen"].as_u64().unwrap_or(0),
            age
        ));
    }
    out
}

/// `keys verify`: one line a pair (result, HTTP status and reason code,
/// both sides' key versions, the detail).
pub fn keys_table(v: &Value) -> String {
    let mut out = format!(
        "{:<24}{:<16}{:<8}{:<32}{:<38}{:<38}{}\n",
        "pair", "result", "status", "code", "primary_version", "replica_version", "detail"
    );
    for p in v["key_pairs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let status = p["http_status"]
            .as_u64()
            .map_or("-".to_owned(), |n| n.to_string());
        out.push_str(&format!(
            "{:<24}{:<16}{:<8}{:<32}{:<38}{:<38}{}\n",
            s(&p["name"]),
            s(&p["result"]),
            status,
            s(&p["error_code"]),
            s(&p["versions"]["primary"]),
            s(&p["versions"]["replica"]),
            s(&p["detail"]),
        ));
    }
    out
}

pub(super) fn action_line(status: u16, v: &Value) -> String {
    match (status, v["result"].as_str()) {
        (200, Some("changed")) => format!(
            "changed: {} -> {}",
            s(&v["transition"]["from"]),
            s(&v["transition"]["to"])
        ),
        (200, Some("no_op")) => format!("nothing to do: already {}", s(&v["mode"])),
        (200, Some("hold_set")) => format!(
            "already {}; automatic failback now waits for an operator",
            s(&v["mode"])
        ),
        // The admin API names its JSON field; on this command line it is a flag.
        (409, _) => format!(
            "refused (mode {}): {}",
            s(&v["mode"]),
            s(&v["error"]).replace("send \"force\": true", "add --force")
        ),
        _ => format!("error {status}: {}", s(&v["error"])),
    }
}
