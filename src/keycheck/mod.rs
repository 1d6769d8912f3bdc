//! Duplicated keys stay interchangeable: for each `[[key_pairs]]` entry of a
//! service, failway proves, every `key_check.interval`, that what the
//! primary's key wraps the replica's key unwraps, and the other way round.
//!
//! Key Protect's recipe for application-level high availability imports
//! the same root key material into a second region. Rotating one copy with
//! new material and not the other breaks nothing until the failover: then
//! every key wrapped since the rotation cannot be unwrapped on the replica.
//! This check finds that while the primary still serves.
//!
//! Each pair has its own task; its first check comes at a random point of
//! the first interval and each next one 80-100% of an interval later, so
//! many pairs and many instances do not call Key Protect in step.
//! `verify` checks every pair at once (the admin endpoint and `failway ctl
//! keys verify`). Checks are reads (wrap/unwrap store nothing), go straight
//! to each region's client, and are never retried or counted as client
//! traffic. The instance header of each region comes from the
//! `bluemix-instance` mapping of `[[rewrite]]`, as proxied requests get it.
//!
//! A reload that changes what the checks use (pairs, `[key_check]`,
//! `[[rewrite]]`, the probe headers or token, a region's client) replaces
//! the service's checks: the old tasks stop, the new ones start, and a pair
//! left unchanged keeps its last report. The metric families are
//! registered once per service and outlive the replacements.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_json::{json, Value};

use crate::config::{Config, KeyPairConfig, KeyPairs, RewriteKind, RewriteRule};
use crate::health::probe::TokenFile;
use crate::region::Region;
use crate::upstream::client::Upstream;

mod check;
mod exchange;
mod metrics;
pub mod outcome;

use check::Checker;
pub use check::PairReport;
use exchange::Side;
pub use metrics::KeyMetrics;
pub use outcome::CheckResult;

/// Upper bound of one call of a check.
const MAX_CALL_TIME: Duration = Duration::from_secs(10);

/// A service's key-pair checks; cheap to clone.
#[derive(Clone)]
pub struct KeyCheck {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    pairs: Vec<KeyPairConfig>,
    checker: Checker,
    interval: Duration,
    metrics: KeyMetrics,
    /// The last report of each pair, in `pairs` order.
    reports: Mutex<Vec<Option<PairReport>>>,
    /// Stops this set's tasks (a reload replaced it).
    stop: tokio::sync::watch::Sender<bool>,
}

/// Whether the checks of `new` differ from those of `old` (both as
/// `Config::for_service` gives them), clients aside.
pub fn inputs_changed(old: &Config, new: &Config) -> bool {
    old.key_pairs != new.key_pairs
        || old.key_check != new.key_check
        || old.rewrite != new.rewrite
        || old.health.headers != new.health.headers
        || old.health.authorization_file != new.health.authorization_file
        || old.retry.per_try_timeout != new.retry.per_try_timeout
}

/// The pairs `key_pairs` names: as listed, or one per path-segment mapping
/// of `[[rewrite]]` shaped like a key ID (named `rewrite-N` after its
/// entry: key IDs are no label values).
pub fn resolve_pairs(pairs: &KeyPairs, rewrite: &[RewriteRule]) -> Vec<KeyPairConfig> {
    match pairs {
        KeyPairs::Listed(list) => list.clone(),
        KeyPairs::FromRewrite => rewrite
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.kind == RewriteKind::PathSegment && crate::rewrite::is_uuid(&r.primary)
            })
            .map(|(i, r)| KeyPairConfig {
                name: format!("rewrite-{i}"),
                primary: r.primary.clone(),
                replica: r.replica.clone(),
            })
            .collect(),
    }
}

/// Each region's `bluemix-instance`: the first `[[rewrite]]` mapping of
/// that header, else the probe header (mapped for the replica).
fn instances(cfg: &Config) -> [Option<HeaderValue>; 2] {
    let name = HeaderName::from_static("bluemix-instance");
    let rule = cfg
        .rewrite
        .iter()
        .find(|r| matches!(&r.kind, RewriteKind::Header(h) if *h == name));
    if let Some(r) = rule {
        let v = |s: &str| HeaderValue::from_str(s).ok();
        return [v(&r.primary), v(&r.replica)];
    }
    let probe = cfg.health.headers.iter().find(|(n, _)| *n == name);
    let v = probe.map(|(_, v)| v.clone());
    [v.clone(), v]
}

impl KeyCheck {
    /// The checks of the service `cfg` describes (`Config::for_service`),
    /// over its region clients; `down` tells whether the service judges a
    /// region down; `metrics` are the service's (see [`KeyMetrics::register`]).
    pub fn new(
        service: &str,
        cfg: &Config,
        upstreams: &[Arc<Upstream>; 2],
        down: Box<dyn Fn(Region) -> bool + Send + Sync>,
        metrics: KeyMetrics,
    ) -> KeyCheck {
        let pairs = resolve_pairs(&cfg.key_pairs, &cfg.rewrite);
        let [pi, ri] = instances(cfg);
        let token = match (
            &cfg.key_check.authorization_file,
            &cfg.health.authorization_file,
        ) {
            (Some(p), _) => Some(TokenFile::new(p.clone(), "key_check.authorization_file")),
            (None, Some(p)) => Some(TokenFile::new(p.clone(), "health.authorization_file")),
            (None, None) => None,
        };
        let checker = Checker {
            sides: [
                Side {
                    upstream: upstreams[0].clone(),
                    instance: pi,
                },
                Side {
                    upstream: upstreams[1].clone(),
                    instance: ri,
                },
            ],
            token,
            timeout: cfg.retry.per_try_timeout.min(MAX_CALL_TIME),
            down,
        };
        KeyCheck {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                reports: Mutex::new(vec![None; pairs.len()]),
                pairs,
                checker,
                interval: cfg.key_check.interval,
                metrics,
                stop: tokio::sync::watch::channel(false).0,
            }),
        }
    }

    pub fn metrics(&self) -> &KeyMetrics {
        &self.inner.metrics
    }

    /// Stops this set's tasks.
    pub fn stop(&self) {
        let _ = self.inner.stop.send(true);
    }

    /// Takes over the reports of `old`'s pairs that are unchanged, and
    /// drops the series of pairs that are gone.
    pub fn succeed(&self, old: &KeyCheck) {
        let kept = old.inner.reports.lock().unwrap_or_else(|e| e.into_inner());
        let mut mine = self.inner.reports.lock().unwrap_or_else(|e| e.into_inner());
        for (i, pair) in self.inner.pairs.iter().enumerate() {
            if let Some(j) = old.inner.pairs.iter().position(|p| p == pair) {
                mine[i] = kept[j].clone();
            }
        }
        for gone in old
            .inner
            .pairs
            .iter()
            .filter(|p| !self.inner.pairs.iter().any(|n| n.name == p.name))
        {
            self.inner.metrics.forget(&gone.name);
        }
    }

    /// Starts one task a pair, until `service_stop` turns true or
    /// [`KeyCheck::stop`] is called.
    pub fn spawn(&self, service_stop: &tokio::sync::watch::Receiver<bool>) {
        for i in 0..self.inner.pairs.len() {
            let me = self.clone();
            let mut stop = service_stop.clone();
            let mut replaced = self.inner.stop.subscribe();
            tokio::spawn(async move {
                let interval = me.inner.interval;
                let mut delay = interval.mul_f64(fastrand::f64());
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => return,
                        _ = replaced.wait_for(|s| *s) => return,
                    }
                    me.check_one(i).await;
                    delay = interval.mul_f64(0.8 + 0.2 * fastrand::f64());
                }
            });
        }
    }

    async fn check_one(&self, i: usize) -> PairReport {
        let pair = &self.inner.pairs[i];
        let report = self.inner.checker.check(pair).await;
        if *self.inner.stop.borrow() {
            // Replaced by a reload while checking: the pair may be gone.
            return report;
        }
        self.inner.metrics.record(&pair.name, report.result);
        let previous = {
            let mut reports = self.inner.reports.lock().unwrap_or_else(|e| e.into_inner());
            reports[i].replace(report.clone())
        };
        let changed = previous.as_ref().map(|p| p.result) != Some(report.result);
        let (service, result) = (&self.inner.service, report.result.as_str());
        match (report.result, changed) {
            (CheckResult::Ok, true) => {
                tracing::info!(service, pair = %pair.name, result, "key pair interchangeable")
            }
            (CheckResult::Ok, false) => {}
            (_, _) => tracing::warn!(
                service,
                pair = %pair.name,
                result,
                status = report.http_status,
                code = report.error_code.as_deref(),
                "key pair check: {}",
                report.detail
            ),
        }
        report
    }

    /// Checks every pair now; the reports in configuration order.
    pub async fn verify(&self) -> Vec<PairReport> {
        let mut out = Vec::new();
        for i in 0..self.inner.pairs.len() {
            out.push(self.check_one(i).await);
        }
        out
    }

    /// `/status` `"key_pairs"`: each pair, with its last check (null
    /// fields before the first).
    pub fn status_json(&self) -> Value {
        let reports = self.inner.reports.lock().unwrap_or_else(|e| e.into_inner());
        let list: Vec<Value> = self
            .inner
            .pairs
            .iter()
            .zip(reports.iter())
            .map(|(p, r)| match r {
                Some(r) => report_json(r),
                None => json!({"name": p.name, "last_check": null, "result": null}),
            })
            .collect();
        Value::Array(list)
    }
}

/// One pair's report as `/status` and the verify endpoint show it.
pub fn report_json(r: &PairReport) -> Value {
    json!({
        "name": r.pair,
        "last_check": humantime::format_rfc3339_millis(r.at).to_string(),
        "result": r.result.as_str(),
        "interchangeable": r.result.interchangeable(),
        "detail": r.detail,
        "http_status": r.http_status,
        "error_code": r.error_code,
        "region": r.region.map(Region::as_str),
        "versions": {
            "primary": r.versions[0],
            "replica": r.versions[1],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "{extra}\n[upstreams.primary]\nurl = \"http://p.invalid\"\n[upstreams.replica]\nurl = \"http://r.invalid\"\n"
        );
        Config::from_toml_str(&text, std::path::Path::new("/")).unwrap()
    }

    const KEY_A: &str = "2e7b0000-aaaa-4bbb-8ccc-000000000001";
    const KEY_B: &str = "9c010000-aaaa-4bbb-8ccc-000000000002";

    #[test]
    fn from_rewrite_takes_every_key_id_mapping_and_names_it_by_its_entry() {
        let c = config(&format!(
            "key_pairs = \"from-rewrite\"\n[[rewrite]]\nheader = \"bluemix-instance\"\nprimary = \"{KEY_A}\"\nreplica = \"x\"\n[[rewrite]]\npath_segment = true\nprimary = \"my-alias\"\nreplica = \"y\"\n[[rewrite]]\npath_segment = true\nprimary = \"{KEY_A}\"\nreplica = \"{KEY_B}\"\n"
        ));
        let pairs = resolve_pairs(&c.key_pairs, &c.rewrite);
        assert_eq!(
            pairs,
            vec![KeyPairConfig {
                name: "rewrite-2".into(),
                primary: KEY_A.into(),
                replica: KEY_B.into(),
            }],
            "a header mapping and an alias are no key pairs"
        );
    }

    #[test]
    fn each_region_gets_its_instance_from_rewrite_else_from_the_probe_headers() {
        let c = config(
            "[[rewrite]]\nheader = \"bluemix-instance\"\nprimary = \"p-inst\"\nreplica = \"r-inst\"\n",
        );
        let [p, r] = instances(&c);
        assert_eq!(
            (p.unwrap(), r.unwrap()),
            ("p-inst".parse().unwrap(), "r-inst".parse().unwrap())
        );
        let c = config("[health]\nheaders = { \"bluemix-instance\" = \"same\" }\n");
        let [p, r] = instances(&c);
        assert_eq!(p, r);
        assert_eq!(p.unwrap(), "same");
        assert_eq!(instances(&config("")), [None, None]);
    }
}
