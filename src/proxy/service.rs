//! A service: one regional pair and what decides for it: its upstream
//! clients, classifier, rewrite rules and settings (replaced whole by a
//! reload), its failover engine, the probers reporting to it, and its retry
//! budget. The proxy first picks the service a request is
//! for, then runs the request flow with it. A configuration in the
//! single-pair form is one service, named `default`.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::refusal::Refusal;
use super::Dynamic;
use crate::failover::{BlockReason, Failover, ReplicaWrite, WriteRefusal};
use crate::health::prober::Probers;
use crate::retry::RetryBudget;

/// The name of the one service of the single-pair form.
pub const DEFAULT: &str = "default";

pub struct Service {
    name: String,
    dynamic: ArcSwap<Dynamic>,
    failover: Failover,
    budget: RetryBudget,
    /// The probers reporting to `failover`, replaced when a reload changes
    /// what they probe.
    probers: Mutex<Probers>,
}

impl Service {
    pub fn new(
        name: &str,
        dynamic: Dynamic,
        failover: Failover,
        budget: RetryBudget,
        probers: Probers,
    ) -> Service {
        Service {
            name: name.to_owned(),
            dynamic: ArcSwap::from_pointee(dynamic),
            failover,
            budget,
            probers: Mutex::new(probers),
        }
    }

    /// Stops the running probers and keeps `fresh` instead.
    pub fn replace_probers(&self, fresh: Probers) {
        let mut p = self.probers.lock().unwrap_or_else(|e| e.into_inner());
        p.stop();
        *p = fresh;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings, rules and clients requests use now.
    pub fn dynamic(&self) -> Arc<Dynamic> {
        self.dynamic.load_full()
    }

    /// Swaps in a reloaded configuration; requests in flight keep theirs.
    pub fn replace(&self, d: Dynamic) {
        self.dynamic.store(Arc::new(d));
    }

    pub fn failover(&self) -> &Failover {
        &self.failover
    }

    pub(super) fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Sets and persists the latch right before a write is sent to the
    /// replica (`unread_body`: the refusal then closes the connection); the
    /// answer is held while it is sent.
    pub(super) async fn latch_before_replica_write(
        &self,
        unread_body: bool,
    ) -> Result<ReplicaWrite, Refusal> {
        match self.failover.begin_replica_write().await {
            Ok(w) => Ok(w),
            Err(WriteRefusal::Mode(mode)) => {
                let snap = self.failover.snapshot();
                Err(Refusal::WriteBlocked {
                    mode,
                    deadline: snap.read_only_deadline,
                    reason: BlockReason::ReadOnly,
                    close: unread_body,
                })
            }
            Err(WriteRefusal::PersistFailed) | Err(WriteRefusal::Stopped) => {
                Err(Refusal::WriteBlocked {
                    mode: self.failover.snapshot().mode,
                    deadline: None,
                    reason: BlockReason::StatePersistFailed,
                    close: unread_body,
                })
            }
        }
    }
}
