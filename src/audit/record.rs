//! The audit record: the line in the audit file and the body of a hook POST.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What happened; hooks subscribe by these names (`latch` is the
/// replica-writes latch, `reload` a config reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Transition,
    Operator,
    Drill,
    Latch,
    Reload,
}

/// One audited event. Optional fields are left out of the line when unset,
/// so a reload line does not carry an empty `from`/`to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The operator action's client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The name of the admin token used (`admin.tokens_file`), never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For operator actions: `failover`, `enable-writes`, `failback`,
    /// `drill`, `drill-stop`; for a drill event: `started`, `ended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// For operator actions: `accepted`, or the refusal's error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// A drill's report at its end (reads served, writes refused, errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

impl Record {
    /// A record of `kind` at `now` with every optional field unset.
    pub fn new(kind: Kind, now: SystemTime) -> Record {
        Record {
            time: humantime::format_rfc3339_millis(now).to_string(),
            kind,
            service: None,
            from: None,
            to: None,
            trigger: None,
            reason: None,
            epoch: None,
            source: None,
            correlation_id: None,
            by: None,
            action: None,
            outcome: None,
            report: None,
        }
    }

    /// A mode transition of `service`.
    pub fn transition(
        now: SystemTime,
        service: &str,
        from: &str,
        to: &str,
        trigger: &str,
        epoch: u64,
    ) -> Record {
        Record {
            service: Some(service.to_owned()),
            from: Some(from.to_owned()),
            to: Some(to.to_owned()),
            trigger: Some(trigger.to_owned()),
            epoch: Some(epoch),
            ..Record::new(Kind::Transition, now)
        }
    }

    /// The record as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // A struct of strings, numbers and a JSON value cannot fail to encode.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_transition_line_has_its_fields_and_leaves_out_the_unset_ones() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut r = Record::transition(now, "kp", "primary", "failover_read_only", "drill", 7);
        r.by = Some("alice".to_owned());
        let line = String::from_utf8(r.to_line()).unwrap();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["kind"], "transition");
        assert_eq!(v["from"], "primary");
        assert_eq!(v["to"], "failover_read_only");
        assert_eq!(v["trigger"], "drill");
        assert_eq!(v["epoch"], 7);
        assert_eq!(v["by"], "alice");
        assert!(v.get("report").is_none() && v.get("source").is_none());
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
    }
}
