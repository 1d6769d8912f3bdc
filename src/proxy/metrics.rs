//! The data path's series: requests and their latency by region, class and
//! status class, retries, the retry budget, outcome-unknown writes, rewrite
//! misses, client connections, and failway's own resource shortages. Handles are resolved at registration, so
//! recording is an index and an atomic add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::classify::Class;
use crate::region::Region;
use crate::retry::RetryReason;
use crate::rewrite::{MissKind, Misses};
use crate::upstream::client::LocalKind;

/// Latency buckets, 0.5 ms to 30 s.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const REGION_LABELS: [&str; 3] = ["primary", "replica", "none"];
const CLASS_LABELS: [&str; 2] = ["read", "write"];
const CODE_CLASS_LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn region_index(region: Option<Region>) -> usize {
    region.map_or(2, Region::index)
}

fn class_index(class: Class) -> usize {
    match class {
        Class::Read => 0,
        Class::Write => 1,
    }
}

/// The listener's series: process-wide, without a `service` label.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub connections_rejected: IntCounter,
    pub connections_open: IntGauge,
    /// `failway_unrouted_requests_total`: requests no service took.
    pub unrouted: IntCounter,
    /// `failway_local_errors_total{kind}` of the accept loop (the data
    /// path's carry their service).
    local_errors: Vec<IntCounter>,
}

impl ListenerMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<ListenerMetrics> {
        let connections_rejected = IntCounter::new(
            "failway_connections_rejected_total",
            "Client connections closed at once because proxy.max_connections were open.",
        )?;
        let connections_open = IntGauge::new(
            "failway_connections_open",
            "Client connections currently open on the proxy listener.",
        )?;
        let unrouted = IntCounter::new(
            "failway_unrouted_requests_total",
            "Requests no [[service]] took (host and path matched none): answered 404 FAILWAY_NO_SERVICE (421 when TLS SNI names another service), never forwarded.",
        )?;
        registry.register(Box::new(connections_rejected.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(unrouted.clone()))?;
        Ok(ListenerMetrics {
            connections_rejected,
            connections_open,
            unrouted,
            local_errors: register_local_errors(registry)?,
        })
    }

    /// Counts one of failway's own shortages met accepting a client.
    pub fn count_local(&self, kind: LocalKind) {
        let i = LocalKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.local_errors[i].inc();
    }
}

/// The data path's series of one service (its registry adds the `service`
/// label).
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: Vec<IntCounter>,
    durations: Vec<Histogram>,
    /// `failway_retries_total{region,reason}`, by region index then reason.
    retries: Vec<IntCounter>,
    pub retry_budget_exhausted: IntCounter,
    /// `failway_outcome_unknown_total{region}`, by region index.
    outcome_unknown: Vec<IntCounter>,
    /// `failway_rewrite_misses_total{kind}`: header, path_segment.
    rewrite_misses: Vec<IntCounter>,
    /// `failway_local_errors_total{kind}`, in `LocalKind::ALL` order.
    local_errors: Vec<IntCounter>,
    /// When a shortage was last logged (ms since `log_base`), so a storm
    /// of them logs about once a second.
    local_logged: Arc<AtomicU64>,
    log_base: tokio::time::Instant,
}

/// `failway_local_errors_total{kind}`, one handle per kind.
fn register_local_errors(registry: &Registry) -> prometheus::Result<Vec<IntCounter>> {
    let vec = IntCounterVec::new(
        Opts::new(
            "failway_local_errors_total",
            "Times failway ran out of its own resources (kind: fds, buffers, memory) making a connection; such requests are answered 503 and never count against a region.",
        ),
        &["kind"],
    )?;
    registry.register(Box::new(vec.clone()))?;
    Ok(LocalKind::ALL
        .iter()
        .map(|k| vec.with_label_values(&[k.as_str()]))
        .collect())
}

/// How often a run of local errors is logged at most.
const LOCAL_LOG_EVERY_MS: u64 = 1000;

impl ProxyMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<ProxyMetrics> {
        let requests_vec = IntCounterVec::new(
            Opts::new(
                "failway_requests_total",
                "Requests answered, by the region that served them (none: answered by failway), class and status class.",
            ),
            &["region", "class", "code_class"],
        )?;
        let durations_vec = HistogramVec::new(
            HistogramOpts::new(
                "failway_request_duration_seconds",
                "Time from a request's arrival to its response head, by region and class.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["region", "class"],
        )?;
        let retries_vec = IntCounterVec::new(
            Opts::new(
                "failway_retries_total",
                "Attempts sent again, by the region the retry went to and why.",
            ),
            &["region", "reason"],
        )?;
        let retry_budget_exhausted = IntCounter::new(
            "failway_retry_budget_exhausted_total",
            "Retries not made because the retry budget was spent; the original answer was returned.",
        )?;
        let outcome_unknown_vec = IntCounterVec::new(
            Opts::new(
                "failway_outcome_unknown_total",
                "Writes whose outcome is unknown (the connection broke after the request was sent); answered with failway-outcome: unknown and never re-sent.",
            ),
            &["region"],
        )?;
        let rewrite_misses_vec = IntCounterVec::new(
            Opts::new(
                "failway_rewrite_misses_total",
                "Requests to the replica carrying a key ID or header value with no [[rewrite]] mapping, forwarded unchanged.",
            ),
            &["kind"],
        )?;
        let local_errors = register_local_errors(registry)?;
        registry.register(Box::new(retries_vec.clone()))?;
        registry.register(Box::new(retry_budget_exhausted.clone()))?;
        registry.register(Box::new(outcome_unknown_vec.clone()))?;
        registry.register(Box::new(rewrite_misses_vec.clone()))?;
        let retries = Region::ALL
            .iter()
            .flat_map(|r| {
                RetryReason::ALL
                    .iter()
                    .map(|reason| retries_vec.with_label_values(&[r.as_str(), reason.as_str()]))
                    .collect::<Vec<_>>()
            })
            .collect();
        let outcome_unknown = Region::ALL
            .iter()
            .map(|r| outcome_unknown_vec.with_label_values(&[r.as_str()]))
            .collect();
        let rewrite_misses = MissKind::ALL
            .iter()
            .map(|k| rewrite_misses_vec.with_label_values(&[k.as_str()]))
            .collect();
        registry.register(Box::new(requests_vec.clone()))?;
        registry.register(Box::new(durations_vec.clone()))?;

        let mut requests = Vec::with_capacity(3 * 2 * 5);
        let mut durations = Vec::with_capacity(3 * 2);
        for region in REGION_LABELS {
            for class in CLASS_LABELS {
                for code in CODE_CLASS_LABELS {
                    requests.push(requests_vec.with_label_values(&[region, class, code]));
                }
                durations.push(durations_vec.with_label_values(&[region, class]));
            }
        }
        Ok(ProxyMetrics {
            requests,
            durations,
            retries,
            retry_budget_exhausted,
            outcome_unknown,
            rewrite_misses,
            local_errors,
            local_logged: Arc::new(AtomicU64::new(0)),
            log_base: tokio::time::Instant::now(),
        })
    }

    /// Counts one of failway's own shortages, without logging.
    pub fn count_local(&self, kind: LocalKind) {
        let i = LocalKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.local_errors[i].inc();
    }

    /// Counts one of failway's own shortages; logs at warn, at most about
    /// once a second, so an operator sees why requests got 503.
    pub fn local_error(&self, kind: LocalKind) {
        self.count_local(kind);
        // Offset by one period, so the first one logs even right after start.
        let now = self.log_base.elapsed().as_millis() as u64 + LOCAL_LOG_EVERY_MS;
        let last = self.local_logged.load(Ordering::Relaxed);
        if now >= last + LOCAL_LOG_EVERY_MS
            && self
                .local_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                kind = kind.as_str(),
                "failway ran out of its own resources (file descriptors, socket buffers or memory); answering 503 (counted in failway_local_errors_total)"
            );
        }
    }

    /// Records one answered request.
    pub fn record(&self, region: Option<Region>, class: Class, status: u16, seconds: f64) {
        let r = region_index(region);
        let c = class_index(class);
        let code = usize::from((status / 100).clamp(1, 5) - 1);
        self.requests[(r * 2 + c) * 5 + code].inc();
        self.durations[r * 2 + c].observe(seconds);
    }

    pub fn retry(&self, region: Region, reason: RetryReason) {
        let r = RetryReason::ALL
            .iter()
            .position(|x| *x == reason)
            .unwrap_or(0);
        self.retries[region.index() * RetryReason::ALL.len() + r].inc();
    }

    pub fn outcome_unknown(&self, region: Region) {
        self.outcome_unknown[region.index()].inc();
    }

    pub fn rewrite_misses(&self, misses: &Misses) {
        for (i, kind) in MissKind::ALL.iter().enumerate() {
            let n = misses.get(*kind);
            if n > 0 {
                self.rewrite_misses[i].inc_by(u64::from(n));
            }
        }
    }

    pub fn requests(&self, region: Option<Region>, class: Class, code_class: usize) -> u64 {
        self.requests[(region_index(region) * 2 + class_index(class)) * 5 + code_class - 1].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_lands_in_the_right_series() {
        let reg = crate::metrics::new_registry();
        let m = ProxyMetrics::register(&reg).unwrap();
        m.record(Some(Region::Primary), Class::Read, 200, 0.01);
        m.record(Some(Region::Primary), Class::Read, 204, 0.01);
        m.record(None, Class::Write, 409, 0.0);
        m.local_error(LocalKind::Fds);
        m.local_error(LocalKind::Fds);
        assert_eq!(m.requests(Some(Region::Primary), Class::Read, 2), 2);
        assert_eq!(m.requests(None, Class::Write, 4), 1);
        assert_eq!(m.requests(Some(Region::Replica), Class::Read, 2), 0);
        let text = String::from_utf8(crate::metrics::encode(&reg)).unwrap();
        assert!(text.contains(
            "failway_requests_total{class=\"read\",code_class=\"2xx\",region=\"primary\"} 2"
        ));
        assert!(text.contains("failway_build_info{version="));
        assert!(text.contains("failway_local_errors_total{kind=\"fds\"} 2"));
        assert!(text.contains("failway_local_errors_total{kind=\"memory\"} 0"));
    }
}
