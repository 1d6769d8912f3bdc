//! A retry budget: retries may add at most `retry.budget_ratio` of the recent
//! request rate, plus a floor of `retry.budget_min_per_sec` (docs/design.md §4).
//!
//! # Why a budget, and not only `max_attempts`
//!
//! `max_attempts` bounds one request, not the system. When an upstream
//! degrades, every request fails and every request retries: with 3 attempts
//! the proxy sends three times the load to the upstream least able to take
//! it, and if the application in front also retries, the factors multiply.
//! That is a retry storm, turning a brown-out into an outage. A budget bounds
//! retries as a share of real traffic: with a ratio of 0.2, retries add at most
//! 20% to the upstream's load however many fail. In a healthy regime (rare
//! failures) the budget never binds and every retry still happens; the floor
//! per second lets low-traffic instances, which deposit little, retry at all.
//! When the budget is spent the original error is returned.
//!
//! # How it is counted
//!
//! tower's `retry::budget::TpsBudget` keeps ten slots of net tokens
//! (`+1` per deposit, `-1/ratio` per withdrawal, so slots go negative), adds
//! a reserve of `min_per_sec * ttl`, and rotates the slots under a `Mutex`
//! when a slot's time has passed. This budget keeps its arithmetic (the
//! same 10 s window and a reserve of `min_per_sec * 10` per window) but
//! drops the lock:
//!
//! - Two rings of ten per-second slots, one counting deposits (original
//!   requests), one withdrawals (granted retries). Each slot is one
//!   `AtomicU64` packing the second it belongs to (high 32 bits) and its count
//!   (low 32 bits). Whoever first touches a slot in a new second resets it with
//!   one compare-and-swap; there is no rotation step and no lock.
//! - A retry is granted when `withdrawals <= ratio * deposits + reserve`
//!   over the slots of the last ten seconds. The ratio is held in parts per
//!   million, so 0.3 means 0.3 (tower's integer withdraw cost turns 0.3 into
//!   1/3).
//! - A withdrawal counts itself first, then checks, and takes itself back if
//!   over budget. Concurrent retries therefore never overdraw the budget; at
//!   the very edge two of them may both be refused where one could have
//!   passed, which is the safe side during a storm.
//!
//! Approximations, all deliberate: the window is the current second plus
//! the nine before it, so between 9 and 10 s of history; the floor is a
//! reserve per window, so up to `10 * min_per_sec` retries may come in one
//! burst (as in tower and Finagle); a `now` older than the newest second seen
//! by more than ten seconds counts into the newer second's slot; counts
//! saturate at 2^32 - 1 per second.
//!
//! Seconds are counted from the first `now` any call passes in, so the budget
//! reads no clock itself and works with a paused test clock. It records no
//! metrics; the caller counts `failway_retry_budget_exhausted_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The window the ratio applies to, in one-second slots.
const WINDOW_SECS: usize = 10;
const PPM: u128 = 1_000_000;
/// Larger ratios make no sense for retries and could overflow nothing useful.
const MAX_RATIO: f64 = 1000.0;

/// Shared by every request of a proxy (wrap it in an `Arc`).
#[derive(Debug)]
pub struct RetryBudget {
    /// The instant of second 0: the first `now` seen.
    origin: OnceLock<Instant>,
    ratio_ppm: u128,
    /// `min_per_sec * WINDOW_SECS`.
    reserve: u64,
    deposits: Ring,
    withdrawals: Ring,
}

impl RetryBudget {
    /// `ratio`: retries allowed per original request over the window
    /// (0.2 = 20%); non-finite or negative values count as 0, values above
    /// 1000 as 1000. `min_per_sec`: retries allowed per second regardless of
    /// traffic (granted as a reserve per 10 s window).
    pub fn new(ratio: f64, min_per_sec: u32) -> Self {
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, MAX_RATIO)
        } else {
            0.0
        };
        // In range [0, 1e9] after the clamp, so the cast is exact enough.
        let ratio_ppm = (ratio * PPM as f64).round() as u128;
        Self {
            origin: OnceLock::new(),
            ratio_ppm,
            reserve: u64::from(min_per_sec) * WINDOW_SECS as u64,
            deposits: Ring::new(),
            withdrawals: Ring::new(),
        }
    }

    /// Records one original request (call it once per request, not per
    /// attempt).
    pub fn deposit(&self, now: Instant) {
        let second = self.second(now);
        self.deposits.add(second);
    }

    /// Asks for one retry; `true` means granted and counted, `false` means the
    /// budget is spent and the original error should be returned.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let second = self.second(now);
        self.withdrawals.add(second);
        let withdrawn = self.withdrawals.sum(second);
        if u128::from(withdrawn) <= self.allowance(second) {
            return true;
        }
        self.withdrawals.undo(second);
        false
    }

    fn allowance(&self, second: u32) -> u128 {
        let deposited = u128::from(self.deposits.sum(second));
        deposited * self.ratio_ppm / PPM + u128::from(self.reserve)
    }

    /// Seconds since the origin, plus one so that 0 marks an unused slot.
    fn second(&self, now: Instant) -> u32 {
        let origin = *self.origin.get_or_init(|| now);
        let secs = now.saturating_duration_since(origin).as_secs();
        u32::try_from(secs.saturating_add(1)).unwrap_or(u32::MAX)
    }
}

/// Ten per-second counters, each tagged with the second it counts.
///
/// Relaxed ordering suffices: the counters guard no other memory, and each
/// slot's read-modify-writes are totally ordered, which is what keeps
/// concurrent withdrawals from overdrawing.
#[derive(Debug)]
struct Ring {
    slots: [AtomicU64; WINDOW_SECS],
}

impl Ring {
    fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn slot(&self, second: u32) -> &AtomicU64 {
        &self.slots[second as usize % WINDOW_SECS]
    }

    fn add(&self, second: u32) {
        let slot = self.slot(second);
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (tag, count) = unpack(current);
            let next = if tag < second {
                // A stale second: this slot now counts `second`.
                pack(second, 1)
            } else {
                // The same second, or (a caller's `now` lagging by over ten
                // seconds) a newer one, which takes the count rather than
                // losing it.
                pack(tag, count.saturating_add(1))
            };
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Takes back one `add(second)`, unless the slot moved on to a newer
    /// second meanwhile (then the count left the window anyway).
    fn undo(&self, second: u32) {
        let slot = self.slot(second);
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (tag, count) = unpack(current);
            if tag != second || count == 0 {
                return;
            }
            let next = pack(tag, count - 1);
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// The counts of the window ending at `second`.
    fn sum(&self, second: u32) -> u64 {
        self.slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Relaxed)))
            .filter(|&(tag, _)| tag != 0 && second.saturating_sub(tag) < WINDOW_SECS as u32)
            .map(|(_, count)| u64::from(count))
            .sum()
    }
}

fn pack(second: u32, count: u32) -> u64 {
    (u64::from(second) << 32) | u64::from(count)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Simulated time: `t(ms)` after a fixed base.
    struct Clock(Instant);
    impl Clock {
        // Any base will do: the budget is pure and takes `now`.
        #[allow(clippy::disallowed_methods)]
        fn new() -> Self {
            Self(Instant::now())
        }
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn grants(budget: &RetryBudget, now: Instant, wanted: usize) -> usize {
        (0..wanted).filter(|_| budget.try_withdraw(now)).count()
    }

    #[test]
    fn a_storm_is_capped_by_ratio_plus_floor() {
        // 100% failure at 200 requests/s for 30 s, each wanting 2 retries.
        let clock = Clock::new();
        let budget = RetryBudget::new(0.2, 10);
        let (rps, secs) = (200u64, 30u64);
        let mut requests = 0u64;
        let mut granted = 0u64;
        for i in 0..rps * secs {
            let now = clock.at(i * 1000 / rps);
            budget.deposit(now);
            requests += 1;
            for _ in 0..2 {
                if !budget.try_withdraw(now) {
                    break;
                }
                granted += 1;
            }
        }
        let cap = (0.2 * requests as f64) as u64 + 10 * secs;
        assert!(granted <= cap, "granted {granted} retries, cap {cap}");
        // Unbounded retrying would have taken 2 per request (12000); the
        // budget must still let the allowed share through.
        assert!(
            granted >= (0.2 * requests as f64) as u64,
            "granted only {granted}"
        );
    }

    #[test]
    fn a_healthy_regime_gets_every_retry() {
        let clock = Clock::new();
        let budget = RetryBudget::new(0.2, 10);
        // 200 requests/s for 60 s, one in 25 fails once (4%).
        for i in 0..200 * 60u64 {
            let now = clock.at(i * 5);
            budget.deposit(now);
            if i % 25 == 0 {
                assert!(budget.try_withdraw(now), "retry of request {i} refused");
            }
        }
        // Low traffic: 1 request/s, every one failing twice, lives off the floor.
        let quiet = RetryBudget::new(0.2, 10);
        for s in 0..60u64 {
            let now = clock.at(s * 1000);
            quiet.deposit(now);
            assert_eq!(grants(&quiet, now, 2), 2, "second {s}");
        }
    }

    #[test]
    fn the_floor_alone_is_a_reserve_per_window() {
        let clock = Clock::new();
        let budget = RetryBudget::new(0.0, 10);
        assert_eq!(grants(&budget, clock.at(0), 500), 100);
        // Spent withdrawals stay in the window for ten seconds...
        assert_eq!(grants(&budget, clock.at(9_999), 10), 0);
        // ...and leave it after.
        assert_eq!(grants(&budget, clock.at(10_000), 500), 100);
    }

    #[test]
    fn the_ratio_is_exact() {
        let clock = Clock::new();
        let budget = RetryBudget::new(0.3, 0);
        for _ in 0..1000 {
            budget.deposit(clock.at(0));
        }
        assert_eq!(grants(&budget, clock.at(500), 1000), 300);
    }

    #[test]
    fn deposits_expire_after_the_window() {
        let clock = Clock::new();
        let budget = RetryBudget::new(0.2, 0);
        for _ in 0..1000 {
            budget.deposit(clock.at(0));
        }
        assert_eq!(grants(&budget, clock.at(5_000), 50), 50);
        assert_eq!(grants(&budget, clock.at(9_000), 1000), 150);
        // At 10 s both the deposits and the withdrawals of second 0 are gone.
        assert_eq!(grants(&budget, clock.at(10_000), 10), 0);
        // A later long pause does not resurrect stale slots.
        assert_eq!(grants(&budget, clock.at(3_600_000), 10), 0);
    }

    #[test]
    fn a_refused_retry_costs_nothing() {
        let clock = Clock::new();
        let budget = RetryBudget::new(0.5, 0);
        budget.deposit(clock.at(0));
        budget.deposit(clock.at(0));
        assert_eq!(grants(&budget, clock.at(0), 10), 1);
        // Many refusals later, two more requests buy exactly one more retry.
        assert_eq!(grants(&budget, clock.at(0), 100), 0);
        budget.deposit(clock.at(0));
        budget.deposit(clock.at(0));
        assert_eq!(grants(&budget, clock.at(0), 10), 1);
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let clock = Clock::new();
        let budget = RetryBudget::new(0.2, 5);
        let now = clock.at(0);
        for _ in 0..1000 {
            budget.deposit(now);
        }
        let allowance = 200 + 50;
        let granted: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| grants(&budget, now, 200)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker panicked"))
                .sum()
        });
        assert!(granted <= allowance, "granted {granted} > {allowance}");
        // Whatever the race left unspent is still there, to the retry.
        let rest = grants(&budget, now, 1000);
        assert_eq!(granted + rest, allowance);
    }

    #[test]
    fn out_of_order_and_odd_inputs_do_not_panic() {
        let clock = Clock::new();
        let budget = RetryBudget::new(f64::NAN, 1);
        budget.deposit(clock.at(5_000));
        // Earlier than the first `now` seen: counted in second 0.
        budget.deposit(clock.at(0));
        assert_eq!(grants(&budget, clock.at(0), 100), 10);
        // Fifteen seconds on, second 0 has left the window: the floor again.
        assert_eq!(grants(&budget, clock.at(20_000), 100), 10);
        // A lagging `now` still sees the newer withdrawals: no second helping.
        assert_eq!(grants(&budget, clock.at(6_000), 100), 0);

        for ratio in [-1.0, f64::INFINITY, f64::NEG_INFINITY] {
            let b = RetryBudget::new(ratio, 0);
            b.deposit(clock.at(0));
            assert!(!b.try_withdraw(clock.at(0)), "ratio {ratio}");
        }
        let huge = RetryBudget::new(1e12, u32::MAX);
        huge.deposit(clock.at(0));
        assert!(huge.try_withdraw(clock.at(0)));
    }

    #[test]
    fn slot_counts_saturate() {
        let ring = Ring::new();
        ring.slots[3].store(pack(3, u32::MAX), Ordering::Relaxed);
        ring.add(3);
        assert_eq!(unpack(ring.slots[3].load(Ordering::Relaxed)), (3, u32::MAX));
    }
}
