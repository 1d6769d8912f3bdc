//! [`Fleet`]: the handle the failover driver holds. Requests to etcd
//! (compare-and-swap, reports, listing instances) are made here, each bounded
//! by a timeout; the lease and the record watch run as background tasks
//! (`tasks.rs`) that share [`Shared`] with the handle.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::client::{Etcd, Expect};
use super::metrics::{CasResult, FleetMetrics};
use super::record::{CasOutcome, FleetRecord, InstanceReport};
use super::shared::Shared;
use super::{tasks, FleetError};
use crate::config::FleetConfig;
use crate::failover::machine::State;

/// How often a compare-and-swap re-reads and retries when the key changed
/// under it but the epoch it expects still holds.
const CAS_ATTEMPTS: u32 = 3;

/// A connection to the fleet's etcd; cheap to clone (all clones share one
/// lease, one watch and one view of the record).
#[derive(Clone)]
pub struct Fleet {
    shared: Arc<Shared>,
}

/// What this instance knows about its standing with the fleet, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FleetStatus {
    pub instance_id: String,
    pub key: String,
    pub connected: bool,
    pub lease_alive: bool,
    /// Epoch of the record followed; `None` before the first read, or when
    /// the key is absent.
    pub epoch: Option<u64>,
}

impl Fleet {
    /// Sets up the etcd client and starts the lease and watch tasks, which
    /// run until `stop` turns true (or its sender is dropped); then the lease
    /// is revoked, so this instance's report disappears at once. Fails only
    /// on configuration that cannot work (endpoints, TLS files): an
    /// unreachable etcd is retried in the background and shows in
    /// [`Fleet::connected`].
    pub async fn start(
        cfg: &FleetConfig,
        instance_id: String,
        metrics: FleetMetrics,
        stop: watch::Receiver<bool>,
    ) -> Result<Fleet, FleetError> {
        let op_timeout = cfg
            .lease_ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(5));
        // Reaches no etcd yet: the tasks connect, and retry for as long as
        // it is unreachable.
        let client = Etcd::new(cfg, op_timeout)?;
        let shared = Arc::new(Shared::new(
            client,
            cfg.key.clone(),
            instance_id,
            cfg.lease_ttl,
            metrics,
        ));
        tokio::spawn(tasks::lease_loop(shared.clone(), stop.clone()));
        tokio::spawn(tasks::watch_loop(shared.clone(), stop.clone()));
        tokio::spawn(tasks::gauge_loop(shared.clone(), stop));
        Ok(Fleet { shared })
    }

    /// The latest record seen: the initial read, then every change the watch
    /// delivers (within about a second). `None` until the first read, or
    /// while the key is absent. Kept as it was while etcd is unreachable.
    pub fn record(&self) -> watch::Receiver<Option<FleetRecord>> {
        self.shared.subscribe_record()
    }

    /// True while [`Fleet::record`] follows etcd live: the record was read
    /// after the last loss of contact and a watch is established. After a
    /// lapse of the lease, "seeing the record again" is this turning true.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.shared.subscribe_synced()
    }

    /// True while etcd surely still holds this instance's lease: the last
    /// keep-alive etcd confirmed was sent less than `lease_ttl` ago.
    pub fn lease_alive(&self) -> bool {
        self.shared.lease_alive()
    }

    /// True while the record is followed live and the lease is alive
    /// (`failway_fleet_connected`).
    pub fn connected(&self) -> bool {
        self.shared.connected()
    }

    pub fn instance_id(&self) -> &str {
        &self.shared.instance_id
    }

    pub fn status(&self) -> FleetStatus {
        FleetStatus {
            instance_id: self.shared.instance_id.clone(),
            key: self.shared.key.clone(),
            connected: self.connected(),
            lease_alive: self.lease_alive(),
            epoch: self.shared.held_epoch(),
        }
    }

    /// Stores a new record made of `state` if, and only if, the stored
    /// epoch is `expected` (`None`: the key must be absent). The new epoch is
    /// `expected + 1` (1 for an absent key). On [`CasOutcome::Won`] the local
    /// view is updated at once, before the watch reports it.
    pub async fn compare_and_swap(
        &self,
        expected: Option<u64>,
        state: &State,
        changed_by: &str,
        reason: &str,
    ) -> Result<CasOutcome, FleetError> {
        let result = self.cas(expected, state, changed_by, reason).await;
        let counted = match &result {
            Ok(CasOutcome::Won(_)) => CasResult::Won,
            Ok(CasOutcome::Lost(_)) => CasResult::Lost,
            Err(_) => CasResult::Error,
        };
        self.shared.metrics.count(counted);
        result
    }

    async fn cas(
        &self,
        expected: Option<u64>,
        state: &State,
        changed_by: &str,
        reason: &str,
    ) -> Result<CasOutcome, FleetError> {
        let sh = &self.shared;
        let epoch = match expected {
            None => 1,
            Some(e) => e.checked_add(1).ok_or(FleetError::EpochExhausted(e))?,
        };
        let record = FleetRecord::new(epoch, state.clone(), changed_by, reason, SystemTime::now());
        let value = record.to_json()?;
        // With an expected epoch the compare is on the key's mod revision:
        // first the one of the record already held, then the one read back.
        let mut mod_revision = sh.held_mod_revision(expected);
        let mut current = None;
        let key = sh.key.as_str();
        for _ in 0..CAS_ATTEMPTS {
            let expect = match expected {
                None => Expect::Absent,
                Some(_) => Expect::ModRevision(mod_revision),
            };
            let resp = sh.client.compare_and_put(key, expect, &value).await?;
            let revision = resp.revision;
            if resp.succeeded {
                sh.apply(revision, revision, Some(record.clone()), false);
                return Ok(CasOutcome::Won(record));
            }
            let Some(kv) = resp.current else {
                // Absent now. Expecting absence, it was there at the compare
                // and is gone again: try again; expecting an epoch, lost.
                sh.apply(revision, 0, None, false);
                current = None;
                if expected.is_none() {
                    continue;
                }
                return Ok(CasOutcome::Lost(None));
            };
            let found = sh.decode_record(&kv)?;
            sh.apply(revision, kv.mod_revision, Some(found.clone()), false);
            if expected.is_some() && expected == Some(found.epoch) {
                mod_revision = kv.mod_revision;
                current = Some(found);
                continue;
            }
            return Ok(CasOutcome::Lost(Some(found)));
        }
        Ok(CasOutcome::Lost(current))
    }

    /// Reads the record from etcd now and takes it as the local view unless
    /// a newer one is held, so what is decided next starts from what is
    /// stored, not from a watch that may lag (an operator action). Fails when
    /// etcd cannot be read or the stored record is unreadable.
    pub async fn refresh(&self) -> Result<(), FleetError> {
        let sh = &self.shared;
        let got = sh.client.range(&sh.key, false).await?;
        let (record, mod_revision) = match got.kvs.first() {
            Some(kv) => (Some(sh.decode_record(kv)?), kv.mod_revision),
            None => (None, 0),
        };
        sh.apply(got.revision, mod_revision, record, false);
        Ok(())
    }

    /// Puts `report` (its `instance_id` replaced by this instance's) under
    /// this instance's lease. The report is also kept and put again whenever
    /// a new lease is granted, so a lapse does not leave the instance unlisted
    /// once etcd is back. Fails with [`FleetError::NoLease`] while no lease is
    /// held.
    pub async fn report(&self, report: &InstanceReport) -> Result<(), FleetError> {
        let sh = &self.shared;
        let mut report = report.clone();
        report.instance_id.clone_from(&sh.instance_id);
        sh.remember_report(report.clone());
        let lease = sh.lease_id().ok_or(FleetError::NoLease)?;
        sh.put_report(lease, &report).await
    }

    /// What each instance holding a live lease last reported, by instance
    /// ID. Unreadable entries are skipped (and logged).
    pub async fn instances(&self) -> Result<Vec<InstanceReport>, FleetError> {
        let sh = &self.shared;
        let resp = sh.client.range(&sh.instances_prefix(), true).await?;
        let mut out: Vec<InstanceReport> = resp
            .kvs
            .iter()
            .filter_map(|kv| match InstanceReport::from_json(&kv.value) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "skipping unreadable fleet instance report");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FleetBackend;

    #[tokio::test]
    async fn mixed_schemes_are_refused_at_start() {
        let metrics = FleetMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let (_stop, stop_rx) = watch::channel(false);
        let cfg = FleetConfig {
            backend: FleetBackend::Etcd,
            endpoints: vec![
                "http://127.0.0.1:1".parse().expect("uri"),
                "https://127.0.0.1:2".parse().expect("uri"),
            ],
            key: "/k".to_owned(),
            lease_ttl: Duration::from_secs(2),
            failover_quorum: 1,
            instance_id: None,
            endpoints_file: None,
            tls: None,
            username: None,
            password_file: None,
        };
        let err = Fleet::start(&cfg, "x".to_owned(), metrics, stop_rx)
            .await
            .err()
            .expect("mixed schemes refused");
        assert!(err.to_string().contains("mixes http and https"), "{err}");
    }
}
