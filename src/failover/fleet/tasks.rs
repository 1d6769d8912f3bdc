//! The background tasks behind a [`super::Fleet`]: one keeps the instance's
//! lease alive, one follows the shared record with a watch (both retry with
//! capped, jittered backoff for as long as etcd is unreachable), and one keeps
//! `failway_fleet_connected` current. All stop when the stop signal turns
//! true.
//!
//! The lease task stamps each keep-alive with the time it was *sent*: etcd
//! renewed the lease no earlier than that, so "alive until sent + ttl" never
//! claims more than etcd grants. When keep-alives fail or go unanswered it
//! also asks the watch task to read the record anew, so `synced` means the
//! record was seen after the trouble, not merely that a stale watch survives.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::shared::Shared;
use super::FleetError;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Bound on revoking the lease at stop; a lease not revoked lapses anyway.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(1);
const GAUGE_EVERY: Duration = Duration::from_millis(250);

/// Keeps this instance's lease alive until `stop`, then revokes it.
pub(super) async fn lease_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut lease: Option<i64> = None;
    let mut backoff = Backoff::default();
    loop {
        let trouble = tokio::select! {
            e = keep_lease(&shared, &mut lease, &mut backoff) => e,
            () = stopped(&mut stop) => break,
        };
        match &trouble {
            FleetError::LeaseExpired => {
                tracing::warn!("fleet lease expired at etcd; granting a new one")
            }
            e => tracing::debug!(error = %e, "fleet lease keep-alive interrupted"),
        }
        shared.resync.notify_one();
        shared.refresh_connected();
        tokio::select! {
            () = tokio::time::sleep(backoff.next()) => {}
            () = stopped(&mut stop) => break,
        }
    }
    shared.lease_lost();
    shared.set_synced(false);
    if let Some(id) = lease {
        let revoked = tokio::time::timeout(REVOKE_TIMEOUT, shared.client.lease_revoke(id)).await;
        if !matches!(revoked, Ok(Ok(_))) {
            tracing::debug!("fleet lease not revoked at stop; it lapses after lease_ttl");
        }
    }
}

/// Grants a lease if none is held (renews the one held at once otherwise),
/// then renews it every third of `lease_ttl` until something goes wrong;
/// returns what did.
async fn keep_lease(shared: &Shared, lease: &mut Option<i64>, backoff: &mut Backoff) -> FleetError {
    // etcd leases are whole seconds: round up, and count only lease_ttl.
    let ttl = shared.lease_ttl;
    let ttl_secs =
        i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(i64::MAX);
    // A keep-alive unanswered after half the lease is trouble: the lease
    // may lapse before the next one.
    let overdue = shared.lease_ttl / 2;
    let id = match *lease {
        Some(id) => {
            if let Err(e) = renew(shared, lease, id, overdue).await {
                return e;
            }
            id
        }
        None => {
            let sent = Instant::now();
            match shared.client.lease_grant(ttl_secs).await {
                Ok(granted) => {
                    shared.lease_renewed(granted.id, sent, granted.ttl);
                    *lease = Some(granted.id);
                    if let Some(report) = shared.last_report() {
                        if let Err(e) = shared.put_report(granted.id, &report).await {
                            return e;
                        }
                    }
                    granted.id
                }
                Err(e) => return e,
            }
        }
    };
    backoff.reset();
    shared.refresh_connected();

    let every = shared.lease_ttl / 3;
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.refresh_connected();
        if let Err(e) = renew(shared, lease, id, overdue).await {
            return e;
        }
    }
}

/// One keep-alive of lease `id`, bounded by `timeout`.
async fn renew(
    shared: &Shared,
    lease: &mut Option<i64>,
    id: i64,
    timeout: std::time::Duration,
) -> Result<(), FleetError> {
    let sent = Instant::now();
    let resp = shared.client.lease_keep_alive(id, timeout).await?;
    if resp.ttl <= 0 {
        *lease = None;
        shared.lease_lost();
        return Err(FleetError::LeaseExpired);
    }
    shared.lease_renewed(id, sent, resp.ttl);
    shared.refresh_connected();
    Ok(())
}

/// Keeps `failway_fleet_connected` current as the lease ages between
/// keep-alives (nothing else happens at the moment it lapses), until `stop`.
pub(super) async fn gauge_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(GAUGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.refresh_connected(),
            () = stopped(&mut stop) => return,
        }
    }
}

/// Follows the record: reads it, watches from the next revision, and starts
/// over on any trouble (or when the lease task asks), until `stop`.
pub(super) async fn watch_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    loop {
        let result = tokio::select! {
            r = follow(&shared, &mut backoff) => r,
            () = stopped(&mut stop) => return,
        };
        shared.set_synced(false);
        match result {
            Ok(()) => tracing::debug!("fleet record watch restarting after lost contact"),
            Err(e) => tracing::debug!(error = %e, "fleet record watch interrupted"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next()) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// One read-then-watch cycle; returns `Ok` when asked to start over.
async fn follow(shared: &Shared, backoff: &mut Backoff) -> Result<(), FleetError> {
    // What this instance had seen committed before it asked: one cluster
    // answers a read with at least that revision.
    let seen_before = shared.view_revision();
    let got = shared.client.range(&shared.key, false).await?;
    let revision = got.revision;
    // An unreadable record is not followed: the last good one is kept and
    // `synced` stays false until a readable one is stored.
    let mut readable = true;
    match got.kvs.first().map(|kv| (shared.decode_record(kv), kv)) {
        Some((Err(e), _)) => {
            readable = false;
            tracing::error!(error = %e, "fleet record unreadable; keeping the last one seen");
        }
        found => {
            let (record, mod_revision) = match found {
                Some((Ok(r), kv)) => (Some(r), kv.mod_revision),
                _ => (None, 0),
            };
            // Revisions never go back within one etcd cluster: if they did,
            // this is a new (or restored) cluster, and its record is the truth.
            // (Compared with what was seen before the read was sent: a
            // compare-and-swap of this instance's own that lands while the
            // read is in flight is newer, not a sign of another cluster.)
            let replaced = revision < seen_before;
            shared.apply(revision, mod_revision, record, replaced);
        }
    }

    let mut stream = shared.client.watch(&shared.key, revision + 1).await?;
    let mut created = false;
    loop {
        let msg = tokio::select! {
            msg = stream.message() => msg?,
            () = shared.resync.notified() => return Ok(()),
        };
        let Some(resp) = msg else {
            return Err(FleetError::StreamEnded("watch"));
        };
        if resp.canceled {
            // Compacted past our revision, or refused: read anew.
            return Err(FleetError::StreamEnded("watch"));
        }
        if resp.created {
            created = true;
            backoff.reset();
        }
        for event in &resp.events {
            let Some(kv) = &event.kv else { continue };
            if event.is_delete() {
                readable = true;
                shared.apply(kv.mod_revision, 0, None, false);
                continue;
            }
            match shared.decode_record(kv) {
                Ok(r) => {
                    readable = true;
                    shared.apply(kv.mod_revision, kv.mod_revision, Some(r), false);
                }
                Err(e) => {
                    readable = false;
                    tracing::error!(error = %e, "fleet record changed to an unreadable value; keeping the last one seen");
                }
            }
        }
        if created {
            shared.set_synced(readable);
        }
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: nobody can ask to stop any more, so
    // treat it as a stop rather than run forever.
    let _ = stop.wait_for(|s| *s).await;
}

/// Capped exponential backoff with full jitter on the upper half, so many
/// instances that lost etcd together do not return in lockstep.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(10))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        base / 2 + base.mul_f64(fastrand::f64() / 2.0)
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}
