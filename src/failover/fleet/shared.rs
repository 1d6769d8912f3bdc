//! [`Shared`]: what a [`super::Fleet`] handle and its background tasks hold
//! in common: the etcd client, the local view of the record, the lease and
//! the last report.
//!
//! Updates to the view are ordered by etcd revision, so a slow read can never
//! overwrite a newer record this instance already saw (for example its own
//! compare-and-swap racing the watch's initial read). Locks are held only for
//! a few assignments, never across an await; where two are taken, the view
//! comes first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::client::{Etcd, Kv};
use super::metrics::FleetMetrics;
use super::record::{unix_ms, FleetRecord, InstanceReport};
use super::FleetError;

pub(super) struct Shared {
    pub(super) client: Etcd,
    pub(super) key: String,
    pub(super) instance_id: String,
    pub(super) lease_ttl: Duration,
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
    /// What `failway_fleet_connected` last said, to log changes once.
    was_connected: AtomicBool,
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

impl Shared {
    pub(super) fn new(
        client: Etcd,
        key: String,
        instance_id: String,
        lease_ttl: Duration,
        metrics: FleetMetrics,
    ) -> Shared {
        metrics.set_connected(false);
        metrics.set_epoch(0);
        Shared {
            client,
            key,
            instance_id,
            lease_ttl,
            metrics,
            record_tx: watch::Sender::new(None),
            view: Mutex::new(View::default()),
            synced_tx: watch::Sender::new(false),
            lease: Mutex::new(Lease::default()),
            last_report: Mutex::new(None),
            resync: Notify::new(),
            was_connected: AtomicBool::new(false),
        }
    }

    pub(super) fn subscribe_record(&self) -> watch::Receiver<Option<FleetRecord>> {
        self.record_tx.subscribe()
    }

    pub(super) fn subscribe_synced(&self) -> watch::Receiver<bool> {
        self.synced_tx.subscribe()
    }

    pub(super) fn held_epoch(&self) -> Option<u64> {
        self.record_tx.borrow().as_ref().map(|r| r.epoch)
    }

    pub(super) fn lease_id(&self) -> Option<i64> {
        lock(&self.lease).id
    }

    pub(super) fn remember_report(&self, report: InstanceReport) {
        *lock(&self.last_report) = Some(report);
    }

    pub(super) fn instances_prefix(&self) -> String {
        format!("{}/instances/", self.key)
    }

    pub(super) fn decode_record(&self, kv: &Kv) -> Result<FleetRecord, FleetError> {
        FleetRecord::from_json(&kv.value).map_err(|source| FleetError::BadValue {
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
    pub(super) fn held_mod_revision(&self, expected: Option<u64>) -> i64 {
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

    /// Brings `failway_fleet_connected` up to date, logging a change.
    pub(super) fn refresh_connected(&self) {
        let now = self.connected();
        self.metrics.set_connected(now);
        if self.was_connected.swap(now, Ordering::Relaxed) != now {
            if now {
                tracing::info!(key = %self.key, "fleet: following the shared record; lease held");
            } else {
                tracing::warn!(key = %self.key, lease_alive = self.lease_alive(), "fleet: lost contact with etcd; keeping the last record seen");
            }
        }
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
        self.client.put(&key, &value, Some(lease)).await
    }
}

/// Locks `m`, taking the data as it is if a panic poisoned it (every value
/// guarded here is valid after any single assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
