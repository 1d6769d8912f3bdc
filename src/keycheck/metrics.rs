//! `failway_key_pair_interchangeable{service,pair}` and
//! `failway_key_pair_checks_total{service,pair,result}`. `service` is the
//! registry's constant label; `pair` is a configured name, so both are
//! bounded by configuration. The gauge has no series for a pair until its
//! first check says something about the keys.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::outcome::CheckResult;

#[derive(Clone)]
pub struct KeyMetrics {
    interchangeable: IntGaugeVec,
    checks: IntCounterVec,
}

impl KeyMetrics {
    pub fn register(registry: &Registry) -> Result<KeyMetrics, prometheus::Error> {
        let interchangeable = IntGaugeVec::new(
            Opts::new(
                "failway_key_pair_interchangeable",
                "1 when what each key of the pair wraps the other unwraps (last conclusive check)",
            ),
            &["pair"],
        )?;
        let checks = IntCounterVec::new(
            Opts::new(
                "failway_key_pair_checks_total",
                "Checks of a duplicated key pair, by result",
            ),
            &["pair", "result"],
        )?;
        registry.register(Box::new(interchangeable.clone()))?;
        registry.register(Box::new(checks.clone()))?;
        Ok(KeyMetrics {
            interchangeable,
            checks,
        })
    }

    /// Drops the series of a pair no longer configured.
    pub fn forget(&self, pair: &str) {
        let _ = self.interchangeable.remove_label_values(&[pair]);
        for r in CheckResult::ALL {
            let _ = self.checks.remove_label_values(&[pair, r.as_str()]);
        }
    }

    /// Counts a check; sets the gauge when the result is conclusive.
    pub fn record(&self, pair: &str, result: CheckResult) {
        self.checks
            .with_label_values(&[pair, result.as_str()])
            .inc();
        if let Some(v) = result.interchangeable() {
            self.interchangeable
                .with_label_values(&[pair])
                .set(i64::from(v));
        }
    }
}
