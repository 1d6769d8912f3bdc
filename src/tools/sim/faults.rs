//! Fault switches for the simulated region's public API, shared by the
//! in-process handle ([`FaultControl`]) and the control port's `/faults`.
//!
//! The switches live in a `watch` channel: the listener reacts to an outage
//! at once (closing or re-binding its socket), hung requests wake when the
//! hang is lifted, and everything else is read per request. Faults touch only
//! the public API; the control port, and therefore replication into this
//! region, keeps working through all of them.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use thiserror::Error;
use tokio::sync::watch;

/// The current fault switches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// The API port refuses connections; open connections are dropped.
    pub outage: bool,
    /// Requests are read but not answered until the hang is lifted.
    pub hang: bool,
    /// Answer every request 503; the inner value is `Retry-After` seconds.
    pub error_503: Option<Option<u64>>,
    /// Added before every answer.
    pub latency: Duration,
    /// Reset the connection after this many bytes of each response.
    pub reset_after: Option<usize>,
}

impl Faults {
    /// The control port's JSON view.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "outage": self.outage,
            "hang": self.hang,
            "error_503": self.error_503.map(|r| serde_json::json!({"retry_after": r})),
            "latency_ms": u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX),
            "reset_after_bytes": self.reset_after,
        })
    }
}

/// A handle to a simulator's fault switches; clones share them.
#[derive(Clone, Debug)]
pub struct FaultControl {
    tx: Arc<watch::Sender<Faults>>,
}

impl Default for FaultControl {
    fn default() -> Self {
        FaultControl {
            tx: Arc::new(watch::Sender::new(Faults::default())),
        }
    }
}

impl FaultControl {
    fn update(&self, f: impl FnOnce(&mut Faults)) {
        self.tx.send_modify(f);
    }

    pub fn set_outage(&self, on: bool) {
        self.update(|f| f.outage = on);
    }

    pub fn set_hang(&self, on: bool) {
        self.update(|f| f.hang = on);
    }

    /// `None`: off; `Some(None)`: 503 without `Retry-After`; `Some(Some(d))`:
    /// with `Retry-After` of `d` rounded up to whole seconds.
    pub fn set_error_503(&self, v: Option<Option<Duration>>) {
        let secs = v.map(|r| r.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)));
        self.update(|f| f.error_503 = secs);
    }

    pub fn set_latency(&self, d: Duration) {
        self.update(|f| f.latency = d);
    }

    pub fn set_reset_after(&self, n: Option<usize>) {
        self.update(|f| f.reset_after = n);
    }

    /// Turns every fault off.
    pub fn clear(&self) {
        self.update(|f| *f = Faults::default());
    }

    /// The switches now.
    pub fn current(&self) -> Faults {
        self.tx.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Faults> {
        self.tx.subscribe()
    }

    /// Applies a control-port `POST /faults` body; fields left out stay.
    pub(crate) fn apply_json(&self, body: &[u8]) -> Result<Faults, PatchError> {
        let patch: Patch = serde_json::from_slice(body)?;
        self.update(|f| {
            if let Some(v) = patch.outage {
                f.outage = v;
            }
            if let Some(v) = patch.hang {
                f.hang = v;
            }
            if let Some(v) = patch.error_503 {
                f.error_503 = v.map(|e| e.retry_after);
            }
            if let Some(ms) = patch.latency_ms {
                f.latency = Duration::from_millis(ms);
            }
            if let Some(v) = patch.reset_after_bytes {
                f.reset_after = v;
            }
        });
        Ok(self.current())
    }
}

/// A `POST /faults` body that is not understood.
#[derive(Debug, Error)]
#[error("invalid fault JSON: {0}")]
pub struct PatchError(#[from] serde_json::Error);

/// `POST /faults`: every field optional; `null` turns a valued fault off.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    outage: Option<bool>,
    hang: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    error_503: Option<Option<Error503>>,
    latency_ms: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    reset_after_bytes: Option<Option<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Error503 {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// Tells a field set to `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_change_only_what_they_name() {
        let fc = FaultControl::default();
        fc.apply_json(br#"{"error_503":{"retry_after":2},"latency_ms":5}"#)
            .unwrap();
        let f = fc.apply_json(br#"{"hang":true}"#).unwrap();
        assert_eq!(f.error_503, Some(Some(2)));
        assert_eq!(f.latency, Duration::from_millis(5));
        assert!(f.hang);
        let f = fc.apply_json(br#"{"error_503":null}"#).unwrap();
        assert_eq!(f.error_503, None);
        let f = fc.apply_json(br#"{"error_503":{}}"#).unwrap();
        assert_eq!(f.error_503, Some(None));
        assert!(fc.apply_json(br#"{"outgae":true}"#).is_err());
        fc.clear();
        assert_eq!(fc.current(), Faults::default());
    }

    #[test]
    fn retry_after_rounds_up() {
        let fc = FaultControl::default();
        fc.set_error_503(Some(Some(Duration::from_millis(1500))));
        assert_eq!(fc.current().error_503, Some(Some(2)));
        assert_eq!(fc.current().to_json()["error_503"]["retry_after"], 2);
    }
}
