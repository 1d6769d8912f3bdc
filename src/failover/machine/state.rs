//! The persisted part of the failover machine: mode, deadline, latch, hold
//! and recent transitions, as written to `state.path`.
//!
//! Timestamps are stored as whole milliseconds since the Unix epoch, in
//! fields named `*_unix_ms` so the file explains itself. The machine rounds
//! every time it stores down to the millisecond, so a state survives a JSON
//! round trip unchanged. Times before 1970 are stored as 0.
//!
//! Unknown fields are ignored when loading (a newer failway may add some);
//! a newer `version` is refused by [`State::from_json`] rather than
//! misread. Writing the file atomically is the owner's job.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::drill::Drill;

/// Format version written to and accepted from the state file.
pub const STATE_VERSION: u32 = 1;

/// How many transitions the state keeps (oldest dropped first).
pub const MAX_TRANSITIONS: usize = 20;

/// Longest operator reason kept, in bytes; longer ones are cut, so a
/// careless request cannot bloat the state file.
pub const MAX_REASON_BYTES: usize = 512;

/// Where reads and writes go; the names are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Primary,
    FailoverReadOnly,
    FailoverReadWrite,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Primary => "primary",
            Mode::FailoverReadOnly => "failover_read_only",
            Mode::FailoverReadWrite => "failover_read_write",
        }
    }

    pub fn is_failover(self) -> bool {
        self != Mode::Primary
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What caused a transition (`failway_mode_transitions_total{trigger}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Active probes judged the primary down.
    HealthCheck,
    /// Live traffic judged the primary down.
    Passive,
    /// The read-only deadline passed.
    ReadOnlyWindow,
    Operator,
    /// Automatic failback after `failback_after` of a healthy primary.
    Failback,
    /// A drill started or ended (`POST /admin/drill`).
    Drill,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::HealthCheck => "health_check",
            Trigger::Passive => "passive",
            Trigger::ReadOnlyWindow => "read_only_window",
            Trigger::Operator => "operator",
            Trigger::Failback => "failback",
            Trigger::Drill => "drill",
        }
    }
}

/// One change of mode, kept for `/status`, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Mode,
    pub to: Mode,
    pub trigger: Trigger,
    /// Why: the operator's reason, or what the machine saw.
    pub reason: String,
    #[serde(rename = "at_unix_ms", with = "unix_ms")]
    pub at: SystemTime,
    /// A forced failback that discarded the replica-writes latch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latch_cleared: bool,
    /// The operator's name (`admin.tokens_file`) for an operator's or a
    /// drill's transition; absent in files written before names existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Everything that must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub mode: Mode,
    /// When the current mode was entered.
    #[serde(rename = "since_unix_ms", with = "unix_ms")]
    pub since: SystemTime,
    /// When `primary` was left; `None` in `primary`.
    #[serde(rename = "failed_over_at_unix_ms", with = "opt_unix_ms", default)]
    pub failed_over_at: Option<SystemTime>,
    /// When `failover_read_only` turns into `failover_read_write` on its own;
    /// `None` outside `failover_read_only` or with `read_only_window = "never"`.
    #[serde(rename = "read_only_deadline_unix_ms", with = "opt_unix_ms", default)]
    pub read_only_deadline: Option<SystemTime>,
    /// Set before the first write is forwarded to the replica; cleared only by
    /// a forced operator failback.
    pub replica_writes_latch: bool,
    #[serde(rename = "latch_set_at_unix_ms", with = "opt_unix_ms", default)]
    pub latch_set_at: Option<SystemTime>,
    /// An operator failed over: no automatic failback until an operator's.
    pub operator_hold: bool,
    /// Most recent last, at most [`MAX_TRANSITIONS`].
    pub transitions: VecDeque<Transition>,
    /// The drill under way; absent in files written before drills existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<Drill>,
}

/// Why a state file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file is not valid failway state JSON")]
    Json(#[from] serde_json::Error),
    #[error("state file version {found} is newer than this failway supports ({supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
}

impl State {
    /// The state of a fresh start: `primary` since `now`, nothing latched.
    pub fn initial(now: SystemTime) -> Self {
        State {
            version: STATE_VERSION,
            mode: Mode::Primary,
            since: to_millis_precision(now),
            failed_over_at: None,
            read_only_deadline: None,
            replica_writes_latch: false,
            latch_set_at: None,
            operator_hold: false,
            transitions: VecDeque::new(),
            drill: None,
        }
    }

    /// Parses a state file, refusing versions this build does not know.
    pub fn from_json(json: &str) -> Result<Self, StateError> {
        let state: State = serde_json::from_str(json)?;
        if state.version > STATE_VERSION {
            return Err(StateError::UnsupportedVersion {
                found: state.version,
                supported: STATE_VERSION,
            });
        }
        Ok(state)
    }

    /// The state file's content (pretty-printed: operators read it).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub(super) fn push_transition(&mut self, transition: Transition) {
        while self.transitions.len() >= MAX_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.transitions.push_back(transition);
    }
}

/// `t` rounded down to whole milliseconds, the precision of the state file.
pub(super) fn to_millis_precision(t: SystemTime) -> SystemTime {
    from_unix_ms(to_unix_ms(t)).unwrap_or(t)
}

pub(super) fn to_unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_unix_ms(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

pub(super) mod unix_ms {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::to_unix_ms(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        super::from_unix_ms(ms).ok_or_else(|| D::Error::custom("timestamp out of range"))
    }
}

mod opt_unix_ms {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::to_unix_ms(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<u64>::deserialize(d)? {
            Some(ms) => super::from_unix_ms(ms)
                .map(Some)
                .ok_or_else(|| D::Error::custom("timestamp out of range")),
            None => Ok(None),
        }
    }
}
