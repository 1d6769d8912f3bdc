//! Fleet mode's Prometheus series: whether this instance is in touch with
//! etcd, the epoch of the record it follows, and how its compare-and-swaps
//! ended. Registered on the registry passed in, never a global one.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// How a compare-and-swap on the shared record ended
/// (`failway_fleet_transitions_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasResult {
    /// This instance made the change.
    Won,
    /// Another instance changed the record first.
    Lost,
    /// etcd could not be asked, or the stored record is unreadable.
    Error,
}

impl CasResult {
    pub const ALL: [CasResult; 3] = [CasResult::Won, CasResult::Lost, CasResult::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            CasResult::Won => "won",
            CasResult::Lost => "lost",
            CasResult::Error => "error",
        }
    }
}

#[derive(Clone)]
pub struct FleetMetrics {
    connected: IntGauge,
    epoch: IntGauge,
    transitions: IntCounterVec,
}

impl FleetMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<FleetMetrics> {
        let connected = IntGauge::new(
            "failway_fleet_connected",
            "1 while this instance follows the shared fleet record live and holds its etcd lease, else 0.",
        )?;
        let epoch = IntGauge::new(
            "failway_fleet_epoch",
            "Epoch of the last shared fleet record this instance saw (0: none).",
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "failway_fleet_transitions_total",
                "Compare-and-swaps on the shared fleet record by this instance, by result (won, lost, error).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(epoch.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        // Every result is exported from the start, so rate() sees the first one.
        for r in CasResult::ALL {
            transitions.with_label_values(&[r.as_str()]);
        }
        Ok(FleetMetrics {
            connected,
            epoch,
            transitions,
        })
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    pub(super) fn set_epoch(&self, epoch: u64) {
        self.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
    }

    pub(super) fn count(&self, result: CasResult) {
        self.transitions.with_label_values(&[result.as_str()]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_exist_from_the_start_and_count() {
        let registry = Registry::new();
        let m = FleetMetrics::register(&registry).expect("register");
        m.count(CasResult::Lost);
        m.set_epoch(4);
        m.set_connected(true);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encode");
        assert!(
            text.contains("failway_fleet_transitions_total{result=\"won\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("failway_fleet_transitions_total{result=\"lost\"} 1"),
            "{text}"
        );
        assert!(text.contains("failway_fleet_epoch 4"), "{text}");
        assert!(text.contains("failway_fleet_connected 1"), "{text}");
    }
}
