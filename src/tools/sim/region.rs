//! The state one simulated region shares between its listeners: identity
//! (name, instance, token), the key store behind one mutex, request
//! counters, and the replication feed a primary pushes its changes into.
//!
//! Every write goes through [`Region::write`], which runs under the store
//! lock and queues the changed key for replication before releasing it, so
//! a replica applies changes in the order the primary made them. One region
//! serves one instance; it does not hold keys for several.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

use super::error::ApiError;
use super::key::Key;
use super::replicate::Replicator;
use super::store::Store;

/// How a request counts in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Read,
    Write,
    /// `wrap`, `unwrap` and `rewrap`.
    Wrap,
}

/// Counts of what a simulator received and replicated since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// API reads (GET, HEAD), including ones a fault answered.
    pub reads: u64,
    /// API writes (every other request that is not a wrap), refused or not.
    pub writes: u64,
    /// `wrap`, `unwrap` and `rewrap` calls.
    pub wraps: u64,
    /// Writes a `--read-only` simulator refused.
    pub refused_read_only: u64,
    /// Key changes this simulator applied from its primary.
    pub replicated_in: u64,
    /// Key changes this simulator's replica acknowledged.
    pub replicated_out: u64,
}

#[derive(Default)]
pub struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    wraps: AtomicU64,
    pub refused_read_only: AtomicU64,
    pub replicated_in: AtomicU64,
    pub replicated_out: AtomicU64,
}

impl Counters {
    pub fn count(&self, class: Class) {
        let c = match class {
            Class::Read => &self.reads,
            Class::Write => &self.writes,
            Class::Wrap => &self.wraps,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            reads: get(&self.reads),
            writes: get(&self.writes),
            wraps: get(&self.wraps),
            refused_read_only: get(&self.refused_read_only),
            replicated_in: get(&self.replicated_in),
            replicated_out: get(&self.replicated_out),
        }
    }
}

pub struct Region {
    /// Label for logs and the region part of CRNs.
    pub name: String,
    /// The `bluemix-instance` this region serves.
    pub instance: String,
    /// When set, the only accepted `Authorization` is `Bearer <token>`.
    pub token: Option<String>,
    pub read_only: bool,
    /// Store replicated keys under [`super::remapped_id`].
    pub remap_ids: bool,
    pub counters: Counters,
    store: Mutex<Store>,
    replicator: Option<Replicator>,
    /// `--state`: where the keys are saved after each change.
    saved: Option<std::path::PathBuf>,
}

impl Region {
    pub fn new(
        name: String,
        instance: String,
        token: Option<String>,
        read_only: bool,
        remap_ids: bool,
        replicator: Option<Replicator>,
    ) -> Self {
        Region {
            name,
            instance,
            token,
            read_only,
            remap_ids,
            counters: Counters::default(),
            store: Mutex::new(Store::default()),
            replicator,
            saved: None,
        }
    }

    /// Keeps the keys in `path` (loading those already there).
    pub fn with_saved(mut self, path: std::path::PathBuf) -> std::io::Result<Self> {
        let keys = super::saved::load(&path)?;
        self.store = Mutex::new(Store::from_saved(keys));
        self.saved = Some(path);
        Ok(self)
    }

    /// Saves the keys when `--state` is set; a failure is logged, and the
    /// region goes on serving from memory.
    fn save(&self, store: &Store) {
        if let Some(path) = &self.saved {
            if let Err(e) = super::saved::save(path, &store.in_order()) {
                tracing::error!(region = %self.name, path = %path.display(), error = %e, "cannot save the keys (--state)");
            }
        }
    }

    /// The store, for reads. A panic while it was held cannot leave it
    /// half-changed (operations validate before they mutate), so a poisoned
    /// lock is used as is.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a key-changing operation and queues its result for replication.
    pub fn write(
        &self,
        op: impl FnOnce(&mut Store, SystemTime) -> Result<Key, ApiError>,
    ) -> Result<Key, ApiError> {
        let mut store = self.store();
        let key = op(&mut store, SystemTime::now())?;
        self.save(&store);
        if let Some(r) = &self.replicator {
            r.push(key.clone());
        }
        Ok(key)
    }

    /// Stores a key pushed by this region's primary.
    pub fn apply_replicated(&self, key: Key) {
        let id = if self.remap_ids {
            super::ids::remapped_id(&key.id)
        } else {
            key.id.clone()
        };
        let mut store = self.store();
        store.apply_replicated(key, id);
        self.save(&store);
        drop(store);
        Counters::bump(&self.counters.replicated_in);
    }
}
