//! What fleet mode stores in etcd: the shared record (one key, JSON) and each
//! instance's report (one key per instance, under its lease).
//!
//! The record wraps the failover [`State`] that a lone instance would persist
//! to `state.path`, plus an epoch that grows by one on every change and who
//! made the change and why. The epoch, not etcd's revisions, is what a
//! compare-and-swap names: it means the same thing to every instance and
//! survives a restore of etcd from a backup. This module only encodes and
//! decodes; talking to etcd is `etcd.rs`'s job.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::failover::machine::{State, STATE_VERSION};

/// Longest `changed_by` or `reason` kept, in bytes: the record is read by
/// every instance on every change, so a careless caller cannot bloat it.
pub const MAX_TEXT_BYTES: usize = crate::failover::machine::MAX_REASON_BYTES;

/// The fleet-wide failover state, stored as JSON in the `fleet.key` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRecord {
    /// 1 for the first record, one more on every change.
    pub epoch: u64,
    /// Mode, failover time, read-only deadline, latch and recent transitions.
    pub state: State,
    /// The instance ID (or operator) that made this change.
    pub changed_by: String,
    /// Why the change was made.
    pub reason: String,
    /// When the change was made (wall clock of the instance that made it).
    #[serde(default)]
    pub changed_at_unix_ms: u64,
}

/// Why a stored record (or report) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not valid failway fleet JSON")]
    Json(#[from] serde_json::Error),
    #[error("state version {found} is newer than this failway supports ({supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
}

impl FleetRecord {
    /// A record for `epoch`, with `changed_by` and `reason` cut to
    /// [`MAX_TEXT_BYTES`] and the change time set to `now`.
    pub fn new(epoch: u64, state: State, changed_by: &str, reason: &str, now: SystemTime) -> Self {
        FleetRecord {
            epoch,
            state,
            changed_by: truncate(changed_by),
            reason: truncate(reason),
            changed_at_unix_ms: unix_ms(now),
        }
    }

    /// Parses a stored record, refusing a state version this build does not
    /// know rather than misreading it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: FleetRecord = serde_json::from_slice(bytes)?;
        if record.state.version > STATE_VERSION {
            return Err(RecordError::UnsupportedVersion {
                found: record.state.version,
                supported: STATE_VERSION,
            });
        }
        Ok(record)
    }

    /// The stored form: compact JSON (every instance reads it on each change).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

/// What one instance last told the fleet about itself; stored under
/// `<fleet.key>/instances/<instance_id>` with the instance's lease, so it
/// disappears when the instance stops renewing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub instance_id: String,
    /// The mode this instance is serving in (`primary`, `failover_read_only`,
    /// `failover_read_write`).
    pub mode: String,
    /// This instance judges the primary down (counts towards
    /// `fleet.failover_quorum`).
    pub primary_down: bool,
    pub replica_healthy: bool,
    /// The epoch of the last record this instance saw (0: none).
    pub epoch_seen: u64,
    /// When the report was made (the reporting instance's wall clock).
    pub at_unix_ms: u64,
}

impl InstanceReport {
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

/// The result of a compare-and-swap on the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// This call made the change; the record as stored.
    Won(FleetRecord),
    /// The stored epoch was not the expected one: the record as it is now
    /// (`None`: the key is absent).
    Lost(Option<FleetRecord>),
}

/// Milliseconds since the Unix epoch; 0 for times before it.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_TEXT_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_TEXT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn state() -> State {
        State::initial(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
    }

    #[test]
    fn record_round_trips_through_json() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_456);
        let r = FleetRecord::new(7, state(), "pod-a", "primary down", now);
        let back = FleetRecord::from_json(&r.to_json().expect("encode")).expect("decode");
        assert_eq!(back, r);
        assert_eq!(back.changed_at_unix_ms, 1_700_000_000_456);
    }

    #[test]
    fn newer_state_version_is_refused() {
        let mut r = FleetRecord::new(1, state(), "a", "b", UNIX_EPOCH);
        r.state.version = STATE_VERSION + 1;
        let err = FleetRecord::from_json(&r.to_json().expect("encode")).unwrap_err();
        assert!(
            matches!(err, RecordError::UnsupportedVersion { .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_default() {
        assert!(FleetRecord::from_json(b"{\"epoch\": 3}").is_err());
        assert!(FleetRecord::from_json(b"not json").is_err());
    }

    #[test]
    fn long_texts_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_TEXT_BYTES);
        let r = FleetRecord::new(1, state(), &long, &long, UNIX_EPOCH);
        assert!(r.reason.len() <= MAX_TEXT_BYTES);
        assert!(r.reason.len() >= MAX_TEXT_BYTES - 1);
        assert!(r.changed_by.chars().all(|c| c == 'é'));
    }
}
