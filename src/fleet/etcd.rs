//! [`Fleet`]: the handle the failover driver holds. Requests to etcd
//! (compare-and-swap, reports, listing instances) are made here, each bounded
//! by a timeout; the lease and the record watch run as background tasks
//! (`tasks.rs`) that share [`Shared`] with the handle.
//!
//! Updates to the local view of the record are ordered by etcd revision, so a
//! slow read can never overwrite a newer record this instance already saw
//! (for example its own compare-and-swap racing the watch's initial read).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, TlsOptions, Txn,
    TxnOp, TxnOpResponse,
};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::metrics::{CasResult, FleetMetrics};
use super::record::{unix_ms, CasOutcome, FleetRecord, InstanceReport};
use super::{tasks, FleetError};
use crate::config::FleetConfig;
use crate::failover::machine::State;

/// How often a compare-and-swap re-reads and retries when the key changed
/// under it but the epoch it expects still holds.
const CAS_ATTEMPTS: u32 = 3;

/// HTTP/2 pings find a dead connection; etcd's default
/// `--grpc-keepalive-min-time` is 5 s and it closes connections that ping
/// more often, so stay well above it.
const H2_PING_INTERVAL: Duration = Duration::from_secs(10);

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

pub(super) struct Shared {
    pub(super) client: Client,
    pub(super) key: String,
    pub(super) instance_id: String,
    pub(super) lease_ttl: Duration,
    /// Bound on each single request to etcd.
    pub(super) op_timeout: Duration,
    pub(super) metrics: FleetMetrics,
    record_tx: watch::Sender<Option<FleetRecord>>,
    view: Mutex<View>,
    /// True while the view was read from etcd after the last trouble and a
    /// watch is live.
    synced_tx: watch::Sender<bool>,
    lease: Mutex<Lease>,
    last_report: Mutex<Option<InstanceReport>>,
    /// Asks the watch task to drop its watch and read the record anew (the
    /// lease task saw the connection fail).
    pub(super) resync: Notify,
}

/// Where the local view of the record stands in etcd's history.
#[derive(Default)]
struct View {
    /// The revision the view was true at.
    revision: i64,
    /// The key's mod revision at that point (0: absent).
    mod_revision: i64,
}

#[derive(Default)]
struct Lease {
    id: Option<i64>,
    /// Until when etcd surely keeps the lease: `lease_ttl` after the
    /// *sending* of the last keep-alive that etcd confirmed.
    alive_until: Option<Instant>,
}

impl Fleet {
    /// Sets up the etcd client and starts the lease and watch tasks, which
    /// run until `stop` turns true (or its sender is dropped); then the lease
    /// is revoked, so this instance's report disappears at once. Fails only
    /// on configuration etcd-client refuses: an unreachable etcd is retried in
    /// the background and shows in [`Fleet::connected`].
    pub async fn start(
        cfg: &FleetConfig,
        instance_id: String,
        metrics: FleetMetrics,
        stop: watch::Receiver<bool>,
    ) -> Result<Fleet, FleetError> {
        let endpoints: Vec<String> = cfg.endpoints.iter().map(|u| u.to_string()).collect();
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if endpoints.is_empty() {
            return Err(FleetError::Endpoints(
                "must list at least one etcd endpoint",
            ));
        }
        if https != 0 && https != endpoints.len() {
            return Err(FleetError::Endpoints(
                "mixes http and https endpoints; use one scheme for all",
            ));
        }
        let op_timeout = cfg
            .lease_ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(5));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(op_timeout)
            .with_keep_alive(H2_PING_INTERVAL, op_timeout);
        if https != 0 {
            options = options.with_tls(TlsOptions::new().with_native_roots());
        }
        // The channel connects lazily: this does not reach etcd yet.
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(FleetError::Client)?;
        metrics.set_connected(false);
        metrics.set_epoch(0);
        let shared = Arc::new(Shared {
            client,
            key: cfg.key.clone(),
            instance_id,
            lease_ttl: cfg.lease_ttl,
            op_timeout,
            metrics,
            record_tx: watch::Sender::new(None),
            view: Mutex::new(View::default()),
            synced_tx: watch::Sender::new(false),
            lease: Mutex::new(Lease::default()),
            last_report: Mutex::new(None),
            resync: Notify::new(),
        });
        tokio::spawn(tasks::lease_loop(shared.clone(), stop.clone()));
        tokio::spawn(tasks::watch_loop(shared.clone(), stop));
        Ok(Fleet { shared })
    }

    /// The latest record seen: the initial read, then every change the watch
    /// delivers (within about a second). `None` until the first read, or
    /// while the key is absent. Kept as it was while etcd is unreachable.
    pub fn record(&self) -> watch::Receiver<Option<FleetRecord>> {
        self.shared.record_tx.subscribe()
    }

    /// True while [`Fleet::record`] follows etcd live: the record was read
    /// after the last loss of contact and a watch is established. After a
    /// lapse of the lease, "seeing the record again" is this turning true.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.shared.synced_tx.subscribe()
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
            epoch: self.shared.record_tx.borrow().as_ref().map(|r| r.epoch),
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
        for _ in 0..CAS_ATTEMPTS {
            let compare = match expected {
                None => Compare::create_revision(sh.key.as_str(), CompareOp::Equal, 0),
                Some(_) => Compare::mod_revision(sh.key.as_str(), CompareOp::Equal, mod_revision),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(sh.key.as_str(), value.clone(), None)])
                .or_else([TxnOp::get(sh.key.as_str(), None)]);
            let resp = sh
                .timed("compare-and-swap", sh.client.clone().txn(txn))
                .await?;
            let revision = resp.header().map_or(0, |h| h.revision());
            if resp.succeeded() {
                sh.apply(revision, revision, Some(record.clone()), false);
                return Ok(CasOutcome::Won(record));
            }
            let kv = resp.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
                _ => None,
            });
            let Some(kv) = kv else {
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
            sh.apply(revision, kv.mod_revision(), Some(found.clone()), false);
            if expected.is_some() && expected == Some(found.epoch) {
                mod_revision = kv.mod_revision();
                current = Some(found);
                continue;
            }
            return Ok(CasOutcome::Lost(Some(found)));
        }
        Ok(CasOutcome::Lost(current))
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
        *lock(&sh.last_report) = Some(report.clone());
        let lease = lock(&sh.lease).id.ok_or(FleetError::NoLease)?;
        sh.put_report(lease, &report).await
    }

    /// What each instance holding a live lease last reported, by instance
    /// ID. Unreadable entries are skipped (and logged).
    pub async fn instances(&self) -> Result<Vec<InstanceReport>, FleetError> {
        let sh = &self.shared;
        let prefix = sh.instances_prefix();
        let get = sh.client.clone();
        let resp = sh
            .timed("list instances", async move {
                let mut get = get;
                get.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        let mut out: Vec<InstanceReport> = resp
            .kvs()
            .iter()
            .filter_map(|kv| match InstanceReport::from_json(kv.value()) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "skipping unreadable fleet instance report");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(out)
    }
}

impl Shared {
    pub(super) fn instances_prefix(&self) -> String {
        format!("{}/instances/", self.key)
    }

    /// Runs one etcd request with the per-request timeout.
    pub(super) async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(r) => r.map_err(FleetError::from),
            Err(_) => Err(FleetError::Timeout {
                op,
                timeout: self.op_timeout,
            }),
        }
    }

    pub(super) fn decode_record(&self, kv: &KeyValue) -> Result<FleetRecord, FleetError> {
        FleetRecord::from_json(kv.value()).map_err(|source| FleetError::BadValue {
            key: self.key.clone(),
            source,
        })
    }

    /// Takes `record` (stored at `mod_revision`; 0 and `None`: absent) as
    /// the state of the key at etcd `revision`, unless a newer view is held.
    /// `force` takes it regardless: the store's revision went backwards, so
    /// etcd was replaced and its word is all there is.
    pub(super) fn apply(
        &self,
        revision: i64,
        mod_revision: i64,
        record: Option<FleetRecord>,
        force: bool,
    ) {
        let mut view = lock(&self.view);
        if revision < view.revision && !force {
            return;
        }
        *view = View {
            revision,
            mod_revision,
        };
        self.metrics
            .set_epoch(record.as_ref().map_or(0, |r| r.epoch));
        self.record_tx.send_if_modified(|current| {
            if *current == record {
                return false;
            }
            if let Some(r) = &record {
                tracing::info!(epoch = r.epoch, mode = %r.state.mode, changed_by = %r.changed_by, reason = %r.reason, "fleet record changed");
            }
            *current = record;
            true
        });
    }

    pub(super) fn view_revision(&self) -> i64 {
        lock(&self.view).revision
    }

    /// The mod revision of the held record when its epoch is `expected`, else
    /// 0 (which never matches a stored key, so the first try reads back).
    fn held_mod_revision(&self, expected: Option<u64>) -> i64 {
        // Same lock order as `apply`: the view, then the record.
        let view = lock(&self.view);
        let held = self.record_tx.borrow();
        match (held.as_ref(), expected) {
            (Some(r), Some(e)) if r.epoch == e => view.mod_revision,
            _ => 0,
        }
    }

    pub(super) fn set_synced(&self, synced: bool) {
        self.synced_tx
            .send_if_modified(|s| std::mem::replace(s, synced) != synced);
        self.refresh_connected();
    }

    pub(super) fn lease_alive(&self) -> bool {
        lock(&self.lease)
            .alive_until
            .is_some_and(|until| Instant::now() < until)
    }

    pub(super) fn connected(&self) -> bool {
        *self.synced_tx.borrow() && self.lease_alive()
    }

    pub(super) fn refresh_connected(&self) {
        self.metrics.set_connected(self.connected());
    }

    /// Records a keep-alive (or grant) that etcd confirmed for `id`, sent at
    /// `sent` with `ttl_secs` granted.
    pub(super) fn lease_renewed(&self, id: i64, sent: Instant, ttl_secs: i64) {
        let granted = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(0));
        let until = sent + granted.min(self.lease_ttl);
        let mut lease = lock(&self.lease);
        if lease.id != Some(id) {
            lease.id = Some(id);
            lease.alive_until = None;
        }
        lease.alive_until = Some(lease.alive_until.map_or(until, |u| u.max(until)));
    }

    pub(super) fn lease_lost(&self) {
        *lock(&self.lease) = Lease::default();
        self.refresh_connected();
    }

    pub(super) fn last_report(&self) -> Option<InstanceReport> {
        lock(&self.last_report).clone()
    }

    pub(super) async fn put_report(
        &self,
        lease: i64,
        report: &InstanceReport,
    ) -> Result<(), FleetError> {
        let key = format!("{}{}", self.instances_prefix(), self.instance_id);
        let mut report = report.clone();
        if report.at_unix_ms == 0 {
            report.at_unix_ms = unix_ms(SystemTime::now());
        }
        let value = report.to_json()?;
        let mut client = self.client.clone();
        let put = client.put(key, value, Some(PutOptions::new().with_lease(lease)));
        self.timed("report", put).await.map(drop)
    }
}

/// Locks `m`, taking the data as it is if a panic poisoned it (every value
/// guarded here is valid after any single assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
