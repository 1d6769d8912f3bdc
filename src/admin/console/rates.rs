//! Blocked writes, retries and spent retry budget per minute, for the
//! console. The counters live in each service's registry; a rate needs two
//! readings, so the console keeps each service's readings of the last
//! minute, taken whenever it renders (a page load or a live event).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use prometheus::Registry;
use serde_json::{json, Value};
use tokio::time::Instant;

/// How far back a rate looks.
const WINDOW: Duration = Duration::from_secs(60);
/// Readings closer than this to the oldest give no rate yet.
const MIN_SPAN: Duration = Duration::from_secs(1);

const COUNTERS: [&str; 3] = [
    "failway_writes_blocked_total",
    "failway_retries_total",
    "failway_retry_budget_exhausted_total",
];

type Reading = (Instant, [f64; 3]);

/// The readings by service name.
#[derive(Default)]
pub struct Rates(Mutex<HashMap<String, VecDeque<Reading>>>);

/// The sum over all series of each of [`COUNTERS`] in `registry`.
fn read(registry: &Registry) -> [f64; 3] {
    let mut out = [0.0; 3];
    for family in registry.gather() {
        if let Some(i) = COUNTERS.iter().position(|n| *n == family.name()) {
            out[i] = family
                .get_metric()
                .iter()
                .map(|m| m.get_counter().get_value())
                .sum();
        }
    }
    out
}

/// Per-minute rate between the oldest and newest reading, `None` until
/// they are [`MIN_SPAN`] apart.
fn per_minute(readings: &VecDeque<Reading>, i: usize) -> Value {
    match (readings.front(), readings.back()) {
        (Some((t0, c0)), Some((t1, c1))) if *t1 - *t0 >= MIN_SPAN => {
            let minutes = (*t1 - *t0).as_secs_f64() / 60.0;
            json!(((c1[i] - c0[i]).max(0.0) / minutes * 10.0).round() / 10.0)
        }
        _ => Value::Null,
    }
}

impl Rates {
    /// Takes a reading of `registry` for `service` and answers its rates
    /// and totals as JSON.
    pub fn observe(&self, service: &str, registry: &Registry) -> Value {
        let now = Instant::now();
        let counts = read(registry);
        let Ok(mut all) = self.0.lock() else {
            return Value::Null;
        };
        let readings = all.entry(service.to_owned()).or_default();
        readings.push_back((now, counts));
        // The oldest kept is the newest at least a minute old, so a rate
        // spans about the last minute.
        while readings.get(1).is_some_and(|(t, _)| now - *t >= WINDOW) {
            readings.pop_front();
        }
        json!({
            "writes_blocked_per_minute": per_minute(readings, 0),
            "retries_per_minute": per_minute(readings, 1),
            "retry_budget_exhausted_per_minute": per_minute(readings, 2),
            "writes_blocked_total": counts[0] as u64,
            "retries_total": counts[1] as u64,
            "retry_budget_exhausted_total": counts[2] as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    #[tokio::test(start_paused = true)]
    async fn a_rate_is_the_increase_over_the_readings_of_the_last_minute() {
        let registry = Registry::new();
        let blocked = IntCounter::new("failway_writes_blocked_total", "x").unwrap();
        registry.register(Box::new(blocked.clone())).unwrap();
        let rates = Rates::default();
        let first = rates.observe("s", &registry);
        assert_eq!(first["writes_blocked_per_minute"], Value::Null);
        blocked.inc_by(10);
        tokio::time::advance(Duration::from_secs(30)).await;
        let v = rates.observe("s", &registry);
        assert_eq!(v["writes_blocked_per_minute"], json!(20.0));
        assert_eq!(v["writes_blocked_total"], json!(10));
        // Readings older than a minute are forgotten.
        tokio::time::advance(Duration::from_secs(61)).await;
        rates.observe("s", &registry);
        let v = rates.observe("s", &registry);
        assert_eq!(v["writes_blocked_per_minute"], json!(0.0));
    }
}
