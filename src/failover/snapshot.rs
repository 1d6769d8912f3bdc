//! The immutable view of the failover state that the data path, the admin
//! API and the metrics read without locks (published through `ArcSwap` by the
//! driver after every change).

use std::time::SystemTime;

use super::machine::{Drill, FailbackBlocked, Health, Mode, Transition};
use crate::region::Region;

/// What failway currently knows about one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionView {
    /// Verdict of the active probes (consecutive-count thresholds).
    pub health: Health,
    /// Live traffic's error ratio says the region is down.
    pub passive_down: bool,
    pub last_check: Option<SystemTime>,
    pub last_status: Option<u16>,
    /// Why the last probe failed; never holds request data.
    pub last_error: Option<String>,
    /// The last probe results, for the console's strip.
    pub recent: ProbeStrip,
}

/// The outcomes of the last [`ProbeStrip::LEN`] probes of a region, oldest
/// first; a fixed-size value so publishing a snapshot allocates nothing more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeStrip {
    /// Bit `i` set: the `i`-th most recent probe succeeded.
    bits: u32,
    len: u8,
}

impl ProbeStrip {
    pub const LEN: u8 = 30;

    pub fn push(&mut self, success: bool) {
        self.bits = (self.bits << 1) | u32::from(success);
        self.len = (self.len + 1).min(Self::LEN);
    }

    /// Oldest first.
    pub fn results(&self) -> impl Iterator<Item = bool> + '_ {
        (0..self.len).rev().map(|i| self.bits & (1 << i) != 0)
    }
}

impl RegionView {
    pub fn unknown() -> RegionView {
        RegionView {
            health: Health::Unknown,
            passive_down: false,
            last_check: None,
            last_status: None,
            last_error: None,
            recent: ProbeStrip::default(),
        }
    }

    /// Judged down by probes or by live traffic. `Unknown` is not down:
    /// failway routes to a region it has not probed yet rather than refuse.
    pub fn is_down(&self) -> bool {
        self.health == Health::Unhealthy || self.passive_down
    }
}

/// One published failover state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub mode: Mode,
    pub since: SystemTime,
    pub failed_over_at: Option<SystemTime>,
    pub read_only_deadline: Option<SystemTime>,
    pub latch: bool,
    /// The latch is set and known to be on disk: writes to the replica may
    /// go without asking the driver.
    pub latch_persisted: bool,
    pub operator_hold: bool,
    /// Fleet mode only: in `failover_read_write` but the etcd lease lapsed,
    /// so writes are refused as in `failover_read_only` until this instance
    /// follows the shared record again. Always false without `[fleet]`.
    pub writes_suspended: bool,
    pub failback_blocked: Option<FailbackBlocked>,
    pub regions: [RegionView; 2],
    /// Most recent last.
    pub transitions: Vec<Transition>,
    /// The drill under way, if any.
    pub drill: Option<Drill>,
    /// `failover.mode = "shadow"`: the mode failway would be in.
    pub shadow: Option<Mode>,
}

impl Snapshot {
    pub fn region(&self, region: Region) -> &RegionView {
        &self.regions[region.index()]
    }

    /// A snapshot for a failway that has not decided anything yet.
    pub fn initial(now: SystemTime) -> Snapshot {
        Snapshot {
            mode: Mode::Primary,
            since: now,
            failed_over_at: None,
            read_only_deadline: None,
            latch: false,
            latch_persisted: false,
            operator_hold: false,
            writes_suspended: false,
            failback_blocked: None,
            regions: [RegionView::unknown(), RegionView::unknown()],
            drill: None,
            shadow: None,
            transitions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProbeStrip;

    #[test]
    fn the_strip_keeps_the_last_30_results_oldest_first() {
        let mut s = ProbeStrip::default();
        s.push(false);
        s.push(true);
        assert_eq!(s.results().collect::<Vec<_>>(), [false, true]);
        for _ in 0..40 {
            s.push(true);
        }
        s.push(false);
        let r: Vec<bool> = s.results().collect();
        assert_eq!(r.len(), 30);
        assert!(r[..29].iter().all(|ok| *ok));
        assert!(!r[29]);
    }
}
