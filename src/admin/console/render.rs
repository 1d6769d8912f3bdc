//! The console's HTML, rendered on the server from the `/status` document,
//! so the page shows the state without JavaScript and the live stream
//! (`/events`) carries the same fragment the page starts with: one renderer,
//! not one in Rust and another in the browser.
//!
//! It reads the document defensively: a field that is absent or of another
//! type is left out rather than failing the page, so sections added to
//! `/status` later (drills, shadow mode, key pairs) show as soon as they
//! appear. Every value is escaped; nothing secret is in the document.

use std::fmt::Write;
use std::time::SystemTime;

use serde_json::Value;

/// `text` with `& < > " '` escaped, for element content and attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A JSON scalar as text; objects and arrays as compact JSON.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "\u{2014}".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The words an operator reads for a mode name.
pub fn mode_label(mode: &str) -> &str {
    match mode {
        "primary" => "primary",
        "failover_read_only" => "read-only failover",
        "failover_read_write" => "read-write failover",
        other => other,
    }
}

/// `m:ss` (or `h:mm:ss`) until `deadline`, `0:00` once past.
pub fn countdown(deadline: SystemTime, now: SystemTime) -> String {
    let s = deadline.duration_since(now).map_or(0, |d| d.as_secs());
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

fn time_el(ts: &str) -> String {
    format!("<time datetime=\"{0}\">{0}</time>", esc(ts))
}

/// The live part of the page: one section per service.
pub fn services(doc: &Value, now: SystemTime) -> String {
    let mut out = String::new();
    if let Some(map) = doc.get("services").and_then(Value::as_object) {
        for (name, svc) in map {
            out.push_str(&service(name, svc, now));
        }
    }
    out
}

fn service(name: &str, svc: &Value, now: SystemTime) -> String {
    let mode = str_of(svc, "mode").unwrap_or("unknown");
    let latch = svc["replica_writes_latch"].as_bool().unwrap_or(false);
    let replica_down = svc["regions"]["replica"]["down"].as_bool().unwrap_or(false);
    let n = esc(name);
    let mut out = format!(
        "<section class=\"service\" data-service=\"{n}\" data-latch=\"{latch}\" data-replica-down=\"{replica_down}\" aria-labelledby=\"svc-{n}\">\
<h2 id=\"svc-{n}\">{n}</h2>\
<p class=\"badge mode-{m}\" data-mode=\"{m}\" data-service=\"{n}\">{label}</p>",
        m = esc(mode),
        label = esc(mode_label(mode)),
    );
    out.push_str(&summary(svc, now));
    out.push_str(&regions(svc));
    out.push_str(&transitions(svc));
    out.push_str(&extras(svc));
    out.push_str("</section>");
    out
}

/// Since when, why, the deadline, the latch and what blocks a failback.
fn summary(svc: &Value, now: SystemTime) -> String {
    let mut dl = String::from("<dl class=\"summary\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(dl, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    };
    if let Some(since) = str_of(svc, "since") {
        row("since", time_el(since));
    }
    let last = svc["transitions"].as_array().and_then(|t| t.last());
    if let Some(t) = last {
        row(
            "last transition",
            format!(
                "{} \u{2192} {}, trigger <b>{}</b>{}",
                esc(&scalar(&t["from"])),
                esc(&scalar(&t["to"])),
                esc(&scalar(&t["trigger"])),
                str_of(t, "reason").map_or(String::new(), |r| format!(": {}", esc(r))),
            ),
        );
    }
    if let Some(deadline) = str_of(svc, "read_only_deadline") {
        let left = humantime::parse_rfc3339(deadline)
            .map(|d| countdown(d, now))
            .unwrap_or_default();
        row(
            "writes come back at",
            format!(
                "{} <span class=\"countdown\" data-deadline=\"{}\">{}</span>",
                time_el(deadline),
                esc(deadline),
                esc(&left)
            ),
        );
    }
    row("replica-writes latch", latch_text(svc));
    if let Some(b) = str_of(svc, "failback_blocked") {
        row("failback blocked", format!("<b>{}</b>", esc(b)));
    }
    if svc["operator_hold"].as_bool() == Some(true) {
        row(
            "operator hold",
            "set: no automatic failback until an operator fails back".to_owned(),
        );
    }
    dl.push_str("</dl>");
    dl
}

/// Set or clear, with the first replica write when the document has it
/// (else the transition into `failover_read_write` that allowed it).
fn latch_text(svc: &Value) -> String {
    if svc["replica_writes_latch"].as_bool() != Some(true) {
        return "clear".to_owned();
    }
    let first = str_of(svc, "latch_set_at").map(time_el).or_else(|| {
        svc["transitions"].as_array().and_then(|ts| {
            ts.iter()
                .rev()
                .find(|t| t["to"] == "failover_read_write")
                .and_then(|t| str_of(t, "at"))
                .map(|at| format!("writes allowed since {}", time_el(at)))
        })
    });
    match first {
        Some(when) => format!("<b class=\"warn\">set</b>: {when}"),
        None => "<b class=\"warn\">set</b>".to_owned(),
    }
}

fn regions(svc: &Value) -> String {
    let mut out = String::from(
        "<table class=\"regions\"><caption>Regions</caption><thead><tr><th scope=\"col\">region</th><th scope=\"col\">health</th><th scope=\"col\">last check</th><th scope=\"col\">last error</th><th scope=\"col\">last probes</th></tr></thead><tbody>",
    );
    for name in ["primary", "replica"] {
        let r = &svc["regions"][name];
        let down = r["down"].as_bool().unwrap_or(false);
        let health = str_of(r, "health").unwrap_or("unknown");
        let shown = if down && health != "unhealthy" {
            format!("{health}, down by live traffic")
        } else {
            health.to_owned()
        };
        let _ = write!(
            out,
            "<tr data-region=\"{name}\" data-health=\"{h}\" data-down=\"{down}\"><th scope=\"row\">{name}<br><small>{url}</small></th><td class=\"health-{h}\">{shown}</td><td>{check}</td><td>{error}</td><td>{strip}</td></tr>",
            h = esc(health),
            url = esc(&scalar(&r["url"])),
            shown = esc(&shown),
            check = str_of(r, "last_check").map_or("\u{2014}".to_owned(), time_el),
            error = esc(&r.get("last_error").map(scalar).unwrap_or_default()),
            strip = strip(&r["recent_probes"]),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The last probe results as a row of marks, oldest first.
fn strip(results: &Value) -> String {
    let Some(list) = results.as_array() else {
        return String::new();
    };
    let ok = list.iter().filter(|v| v.as_bool() == Some(true)).count();
    let mut out = format!(
        "<span class=\"strip\" role=\"img\" aria-label=\"{ok} of the last {} probes succeeded\">",
        list.len()
    );
    for v in list {
        out.push_str(if v.as_bool() == Some(true) {
            "<i class=\"ok\"></i>"
        } else {
            "<i class=\"fail\"></i>"
        });
    }
    out.push_str("</span>");
    out
}

fn transitions(svc: &Value) -> String {
    let list = svc["transitions"].as_array().cloned().unwrap_or_default();
    let mut out = String::from(
        "<table class=\"transitions\"><caption>Last transitions</caption><thead><tr><th scope=\"col\">at</th><th scope=\"col\">from \u{2192} to</th><th scope=\"col\">trigger</th><th scope=\"col\">reason</th><th scope=\"col\">epoch</th></tr></thead><tbody>",
    );
    if list.is_empty() {
        out.push_str("<tr><td colspan=\"5\">none yet</td></tr>");
    }
    for t in list.iter().rev().take(20) {
        let _ = write!(
            out,
            "<tr><td>{at}</td><td>{from} \u{2192} {to}</td><td>{trigger}</td><td class=\"reason\">{reason}</td><td>{epoch}</td></tr>",
            at = str_of(t, "at").map(time_el).unwrap_or_default(),
            from = esc(&scalar(&t["from"])),
            to = esc(&scalar(&t["to"])),
            trigger = esc(&scalar(&t["trigger"])),
            reason = esc(&t.get("reason").map(scalar).unwrap_or_default()),
            epoch = esc(&t.get("epoch").map(scalar).unwrap_or_default()),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// Fleet, key pairs, drill and shadow mode, each when present.
fn extras(svc: &Value) -> String {
    let mut out = String::new();
    for (key, title) in [
        ("traffic", "Blocked writes and retries"),
        ("fleet", "Fleet"),
        ("fleet_instances", "Fleet instances"),
        ("key_pairs", "Key pairs"),
        ("drill", "Drill"),
        ("shadow", "Shadow mode"),
    ] {
        match svc.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let _ = write!(
                    out,
                    "<div class=\"extra\" data-section=\"{key}\"><h3>{title}</h3>{}</div>",
                    generic(v)
                );
            }
        }
    }
    out
}

/// Any JSON value: an object as a definition list, an array of objects as
/// a table (columns from the first), anything else as text.
fn generic(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut out = String::from("<dl>");
            for (k, v) in map {
                let _ = write!(out, "<div><dt>{}</dt><dd>{}</dd></div>", esc(k), cell(v));
            }
            out.push_str("</dl>");
            out
        }
        Value::Array(list) => table(list),
        other => esc(&scalar(other)),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Object(_) | Value::Array(_) => generic(v),
        other => esc(&scalar(other)),
    }
}

fn table(list: &[Value]) -> String {
    let Some(Value::Object(first)) = list.first() else {
        let items: Vec<String> = list.iter().map(cell).collect();
        return format!("<p>{}</p>", items.join(", "));
    };
    let cols: Vec<&String> = first.keys().collect();
    let mut out = String::from("<table><thead><tr>");
    for c in &cols {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(c));
    }
    out.push_str("</tr></thead><tbody>");
    for row in list {
        let stale = row.get("stale").and_then(Value::as_bool) == Some(true);
        out.push_str(if stale {
            "<tr class=\"stale\">"
        } else {
            "<tr>"
        });
        for c in &cols {
            let _ = write!(
                out,
                "<td>{}</td>",
                row.get(c.as_str()).map(cell).unwrap_or_default()
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let doc = serde_json::json!({"services": {"s": {
            "mode": "primary",
            "transitions": [{"from": "primary", "to": "failover_read_only", "trigger": "operator", "reason": "<script>x</script>", "at": "2026-01-01T00:00:00Z"}],
        }}});
        let html = services(&doc, SystemTime::UNIX_EPOCH);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
    }

    #[test]
    fn the_countdown_shows_minutes_and_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(countdown(now + Duration::from_secs(60), now), "1:00");
        assert_eq!(countdown(now + Duration::from_secs(3725), now), "1:02:05");
        assert_eq!(countdown(now - Duration::from_secs(5), now), "0:00");
    }

    #[test]
    fn the_badge_carries_mode_and_service_and_unknown_sections_show() {
        let doc = serde_json::json!({"services": {"kp-us": {
            "mode": "failover_read_only",
            "read_only_deadline": "1970-01-01T00:01:00Z",
            "drill": {"reason": "game day", "ends_at": "1970-01-01T01:00:00Z"},
            "key_pairs": [{"name": "root", "interchangeable": true}],
        }}});
        let html = services(&doc, SystemTime::UNIX_EPOCH);
        assert!(
            html.contains(
                "data-mode=\"failover_read_only\" data-service=\"kp-us\">read-only failover<"
            ),
            "{html}"
        );
        assert!(html.contains(">1:00</span>"), "{html}");
        assert!(
            html.contains("data-section=\"drill\"") && html.contains("game day"),
            "{html}"
        );
        assert!(html.contains("<td>true</td><td>root</td>"), "{html}");
    }
}
