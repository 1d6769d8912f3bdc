//! Exponential backoff with full jitter (docs/design.md §4).
//!
//! The delay before retry `n` (0 for the first retry) is drawn uniformly from
//! `[0, min(max, base * 2^n)]`. Full jitter, rather than a fixed exponential
//! delay or a small jitter around it, spreads the retries of many clients that
//! failed at the same moment over the whole interval, so they do not hit a
//! recovering upstream in synchronised waves.
//!
//! The random source is passed in, so callers own it (one `fastrand::Rng` per
//! task is cheap) and tests seed it. This module neither sleeps nor reads a
//! clock; it does not know about `Retry-After` (see `retry_after`) or about
//! deadlines and budgets.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Backoff parameters: `retry.backoff_base` and `retry.backoff_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff whose ceiling starts at `base` and doubles per retry up to
    /// `max`. A `base` above `max` is harmless: every ceiling is `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The upper bound of the delay before retry `retry_index`:
    /// `min(max, base * 2^retry_index)`, saturating instead of overflowing.
    pub fn ceiling(&self, retry_index: u32) -> Duration {
        from_nanos_u128(self.ceiling_nanos(retry_index))
    }

    /// The delay before retry `retry_index` (0 = the first retry): uniform in
    /// `[0, ceiling(retry_index)]`, both ends included.
    pub fn delay(&self, retry_index: u32, rng: &mut fastrand::Rng) -> Duration {
        from_nanos_u128(rng.u128(0..=self.ceiling_nanos(retry_index)))
    }

    fn ceiling_nanos(&self, retry_index: u32) -> u128 {
        let max = self.max.as_nanos();
        // 2^64 times any non-zero base already exceeds every Duration, so a
        // larger index cannot change the answer; capping it keeps the shift
        // inside u128.
        let grown = if retry_index >= 64 {
            if self.base.is_zero() {
                0
            } else {
                u128::MAX
            }
        } else {
            self.base.as_nanos().saturating_mul(1u128 << retry_index)
        };
        grown.min(max)
    }
}

/// `n` is at most a `Duration`'s nanoseconds, so the seconds fit a `u64`.
fn from_nanos_u128(n: u128) -> Duration {
    let secs = u64::try_from(n / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, which fits a u32.
    let nanos = (n % NANOS_PER_SEC) as u32;
    Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config_default() -> Backoff {
        // `retry.backoff_base = "50ms"`, `retry.backoff_max = "1s"`.
        Backoff::new(ms(50), ms(1000))
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = config_default();
        let got: Vec<_> = (0..7).map(|i| b.ceiling(i)).collect();
        assert_eq!(
            got,
            vec![
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000)
            ]
        );
    }

    #[test]
    fn huge_indexes_do_not_overflow() {
        let b = config_default();
        let mut rng = fastrand::Rng::with_seed(7);
        for i in [31, 32, 63, 64, 65, 127, 128, 1000, u32::MAX] {
            assert_eq!(b.ceiling(i), ms(1000), "index {i}");
            assert!(b.delay(i, &mut rng) <= ms(1000), "index {i}");
        }
        // Even an absurd max and base saturate rather than wrap.
        let wide = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(wide.ceiling(u32::MAX), Duration::MAX);
        assert!(wide.ceiling(1) > wide.ceiling(0));
    }

    #[test]
    fn zero_base_means_no_delay() {
        let b = Backoff::new(Duration::ZERO, ms(1000));
        let mut rng = fastrand::Rng::with_seed(1);
        for i in [0, 5, 64, u32::MAX] {
            assert_eq!(b.delay(i, &mut rng), Duration::ZERO);
        }
    }

    #[test]
    fn base_above_max_is_capped_at_max() {
        let b = Backoff::new(ms(500), ms(100));
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(b.ceiling(0), ms(100));
        for _ in 0..1000 {
            assert!(b.delay(0, &mut rng) <= ms(100));
        }
    }

    #[test]
    fn never_exceeds_the_ceiling() {
        let b = config_default();
        let mut rng = fastrand::Rng::with_seed(42);
        for i in 0..10 {
            for _ in 0..2000 {
                let d = b.delay(i, &mut rng);
                assert!(d <= b.ceiling(i), "retry {i}: {d:?} > {:?}", b.ceiling(i));
            }
        }
    }

    #[test]
    fn same_seed_same_delays_other_seeds_differ() {
        let b = config_default();
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..8).map(|i| b.delay(i, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(11), draw(11));
        let distinct: std::collections::HashSet<_> = (0..20).map(draw).collect();
        assert_eq!(distinct.len(), 20, "jitter must depend on the seed");
    }

    #[test]
    fn jitter_covers_the_whole_interval() {
        // Full jitter: delays land near 0 and near the ceiling, not in a band.
        let b = config_default();
        let mut rng = fastrand::Rng::with_seed(5);
        let draws: Vec<_> = (0..5000).map(|_| b.delay(3, &mut rng)).collect();
        assert!(draws.iter().any(|d| *d < ms(20)));
        assert!(draws.iter().any(|d| *d > ms(380)));
    }

    #[test]
    fn grows_in_expectation_until_the_cap() {
        let b = config_default();
        let mut rng = fastrand::Rng::with_seed(9);
        let n = 4000u32;
        let means: Vec<Duration> = (0..7)
            .map(|i| {
                let total: Duration = (0..n).map(|_| b.delay(i, &mut rng)).sum();
                total / n
            })
            .collect();
        for i in 0..5 {
            assert!(means[i + 1] > means[i], "mean did not grow: {means:?}");
        }
        // The mean of uniform [0, c] is c/2; 4000 draws land within 5%.
        for (i, mean) in means.iter().enumerate() {
            let half = b.ceiling(i as u32).as_secs_f64() / 2.0;
            let err = (mean.as_secs_f64() - half).abs() / half;
            assert!(err < 0.05, "retry {i}: mean {mean:?}, expected ~{half}s");
        }
    }
}
