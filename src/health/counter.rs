//! Consecutive-count health thresholds for active probes.
//!
//! A region is judged [`Health::Unhealthy`] after `unhealthy_threshold`
//! consecutive failed probes and [`Health::Healthy`] again after
//! `healthy_threshold` consecutive successes, like HAProxy's `fall`/`rise` and
//! Envoy's thresholds. One odd result never flips the judgement.
//!
//! A counter starts in [`Health::Unknown`]: nothing has been probed yet.
//! - The first successful probe makes the region `Healthy` at once (Envoy's
//!   start-up rule: "during startup, only a single successful health check is
//!   required"). Waiting for `healthy_threshold` successes guards a region
//!   that was seen failing; a fresh start has no such history.
//! - Failures move it to `Unhealthy` only after `unhealthy_threshold`
//!   consecutive failures (HAProxy's default `init-state fully-up`): a single
//!   failed probe at start-up must not fail a healthy primary over.
//!
//! What `Unknown` means is decided by the caller, and the failover machine
//! decides it asymmetrically: an unknown primary still gets traffic (it is
//! not judged down), but an unknown replica is never a target of automatic
//! failover. So a replica becomes a failover target only after at least one
//! successful probe.
//!
//! This module only counts; it does not probe, time out, or know which region
//! it judges.

/// The judged health of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Not probed to a verdict yet (start-up).
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    /// Lower-case name, for logs, `/status` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of the judged health, returned by [`HealthCounter::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
}

/// Turns a stream of probe results into a judged [`Health`].
#[derive(Debug, Clone)]
pub struct HealthCounter {
    unhealthy_threshold: u32,
    healthy_threshold: u32,
    health: Health,
    consecutive_successes: u32,
    consecutive_failures: u32,
}

impl HealthCounter {
    /// A counter in [`Health::Unknown`]. A threshold of 0 is taken as 1: a
    /// verdict always needs at least one result.
    pub fn new(unhealthy_threshold: u32, healthy_threshold: u32) -> Self {
        HealthCounter {
            unhealthy_threshold: unhealthy_threshold.max(1),
            healthy_threshold: healthy_threshold.max(1),
            health: Health::Unknown,
            consecutive_successes: 0,
            consecutive_failures: 0,
        }
    }

    /// Counts one probe result; returns the change when the judgement flips.
    pub fn record(&mut self, success: bool) -> Option<Transition> {
        let from = self.health;
        let to = if success {
            self.consecutive_failures = 0;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            match from {
                Health::Unknown => Health::Healthy,
                Health::Unhealthy if self.consecutive_successes >= self.healthy_threshold => {
                    Health::Healthy
                }
                other => other,
            }
        } else {
            self.consecutive_successes = 0;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.consecutive_failures >= self.unhealthy_threshold {
                Health::Unhealthy
            } else {
                from
            }
        };
        self.health = to;
        (from != to).then_some(Transition { from, to })
    }

    /// New thresholds (a configuration reload) that keep the judgement and
    /// the counts so far: a reload must not restart the count of a failing
    /// region. They decide from the next result on.
    pub fn set_thresholds(&mut self, unhealthy_threshold: u32, healthy_threshold: u32) {
        self.unhealthy_threshold = unhealthy_threshold.max(1);
        self.healthy_threshold = healthy_threshold.max(1);
    }

    /// The current judgement.
    pub fn health(&self) -> Health {
        self.health
    }
}

#[cfg(test)]
impl HealthCounter {
    fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes
    }

    fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(c: &mut HealthCounter, results: &[bool]) -> Vec<Transition> {
        results.iter().filter_map(|&ok| c.record(ok)).collect()
    }

    #[test]
    fn starts_unknown() {
        let c = HealthCounter::new(3, 2);
        assert_eq!(c.health(), Health::Unknown);
    }

    #[test]
    fn first_success_from_unknown_is_healthy_at_once() {
        let mut c = HealthCounter::new(3, 5);
        assert_eq!(
            c.record(true),
            Some(Transition {
                from: Health::Unknown,
                to: Health::Healthy
            })
        );
    }

    #[test]
    fn failures_from_unknown_need_the_full_threshold() {
        let mut c = HealthCounter::new(3, 2);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.health(), Health::Unknown);
        assert_eq!(
            c.record(false),
            Some(Transition {
                from: Health::Unknown,
                to: Health::Unhealthy
            })
        );
    }

    #[test]
    fn unknown_never_becomes_healthy_without_a_success() {
        let mut c = HealthCounter::new(1000, 1);
        for _ in 0..999 {
            c.record(false);
        }
        assert_eq!(c.health(), Health::Unknown);
    }

    #[test]
    fn healthy_needs_consecutive_failures_to_fall() {
        let mut c = HealthCounter::new(3, 2);
        c.record(true);
        // Interleaved successes reset the count.
        assert!(feed(&mut c, &[false, false, true, false, false, true]).is_empty());
        assert_eq!(c.health(), Health::Healthy);
        let t = feed(&mut c, &[false, false, false]);
        assert_eq!(
            t,
            vec![Transition {
                from: Health::Healthy,
                to: Health::Unhealthy
            }]
        );
    }

    #[test]
    fn unhealthy_needs_consecutive_successes_to_rise() {
        let mut c = HealthCounter::new(1, 3);
        c.record(false);
        assert_eq!(c.health(), Health::Unhealthy);
        assert!(feed(&mut c, &[true, true, false, true, true]).is_empty());
        assert_eq!(c.health(), Health::Unhealthy);
        assert_eq!(
            c.record(true),
            Some(Transition {
                from: Health::Unhealthy,
                to: Health::Healthy
            })
        );
    }

    #[test]
    fn repeated_results_report_no_change() {
        let mut c = HealthCounter::new(2, 2);
        assert!(c.record(true).is_some());
        assert!(feed(&mut c, &[true; 10]).is_empty());
        feed(&mut c, &[false, false]);
        assert!(feed(&mut c, &[false; 10]).is_empty());
        assert_eq!(c.consecutive_failures(), 12);
        assert_eq!(c.consecutive_successes(), 0);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut c = HealthCounter::new(0, 0);
        c.record(true);
        assert!(c.record(false).is_some());
        assert_eq!(c.health(), Health::Unhealthy);
        assert!(c.record(true).is_some());
        assert_eq!(c.health(), Health::Healthy);
    }

    #[test]
    fn counts_saturate_instead_of_overflowing() {
        let mut c = HealthCounter::new(3, 2);
        c.consecutive_failures = u32::MAX - 1;
        c.record(false);
        c.record(false);
        assert_eq!(c.consecutive_failures(), u32::MAX);
        assert_eq!(c.health(), Health::Unhealthy);
    }

    #[test]
    fn new_thresholds_keep_the_counts_so_far() {
        let mut c = HealthCounter::new(5, 2);
        c.record(true);
        feed(&mut c, &[false; 4]);
        c.set_thresholds(6, 2);
        assert_eq!(c.consecutive_failures(), 4);
        assert_eq!(c.health(), Health::Healthy);
        assert!(c.record(false).is_none(), "5 < 6");
        let t = c.record(false).expect("the 6th failure in a row");
        assert_eq!(t.to, Health::Unhealthy);
        // A threshold the count already passed decides at the next result.
        let mut c = HealthCounter::new(5, 2);
        c.record(true);
        feed(&mut c, &[false; 3]);
        c.set_thresholds(2, 2);
        assert_eq!(c.health(), Health::Healthy);
        assert_eq!(c.record(false).map(|t| t.to), Some(Health::Unhealthy));
    }

    #[test]
    fn as_str_names() {
        assert_eq!(Health::Unknown.as_str(), "unknown");
        assert_eq!(Health::Healthy.as_str(), "healthy");
        assert_eq!(Health::Unhealthy.to_string(), "unhealthy");
    }
}
