//! A service: one regional pair and what decides for it: its upstream
//! clients, classifier, rewrite rules and settings (replaced whole by a
//! reload), its failover engine, the probers reporting to it, and its retry
//! budget. The proxy first picks the service a request is
//! for, then runs the request flow with it. A configuration in the
//! single-pair form is one service, named `default`.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus::Registry;

use super::refusal::Refusal;
use super::Dynamic;
use crate::failover::{BlockReason, Failover, ReplicaWrite, WriteRefusal};
use crate::health::prober::Probers;
use crate::keycheck::KeyCheck;
use crate::proxy::metrics::ProxyMetrics;
use crate::retry::RetryBudget;

pub struct Service {
    // Shared with every access-log record, so logging allocates nothing.
    name: Arc<str>,
    dynamic: ArcSwap<Dynamic>,
    failover: Failover,
    budget: RetryBudget,
    /// The probers reporting to `failover`, replaced when a reload changes
    /// what they probe.
    probers: Mutex<Probers>,
    /// Every series of this service (each carries `service="NAME"`).
    registry: Registry,
    metrics: ProxyMetrics,
    /// The `[[key_pairs]]` checks (none configured: no task runs),
    /// replaced when a reload changes what they use.
    keys: ArcSwap<KeyCheck>,
    /// Stops this service's driver, fleet tasks and probers: at the
    /// process's drain, or when a reload removes the service.
    stop: tokio::sync::watch::Sender<bool>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
}

/// What a service is made of, at start or when a reload adds it.
pub struct Parts {
    pub dynamic: Dynamic,
    pub failover: Failover,
    pub budget: RetryBudget,
    pub probers: Probers,
    pub registry: Registry,
    pub metrics: ProxyMetrics,
    pub keys: KeyCheck,
    pub stop: tokio::sync::watch::Sender<bool>,
}

impl Service {
    pub fn new(name: &str, parts: Parts) -> Service {
        Service {
            name: Arc::from(name),
            dynamic: ArcSwap::from_pointee(parts.dynamic),
            failover: parts.failover,
            budget: parts.budget,
            probers: Mutex::new(parts.probers),
            registry: parts.registry,
            metrics: parts.metrics,
            keys: ArcSwap::from_pointee(parts.keys),
            stop_rx: parts.stop.subscribe(),
            stop: parts.stop,
        }
    }

    /// Stops the service (a reload removed it).
    pub fn stop(&self) {
        self.stop_probers();
        let _ = self.stop.send(true);
    }

    /// What this service's tasks stop on.
    pub fn stop_signal(&self) -> &tokio::sync::watch::Receiver<bool> {
        &self.stop_rx
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// The key-pair checks in use now.
    pub fn keys(&self) -> Arc<KeyCheck> {
        self.keys.load_full()
    }

    /// Stops the running key-pair checks and starts `fresh`, which keeps
    /// the reports of unchanged pairs.
    pub fn replace_keys(&self, fresh: KeyCheck) {
        let old = self.keys.swap(Arc::new(fresh.clone()));
        old.stop();
        fresh.succeed(&old);
        fresh.spawn(&self.stop_rx);
    }

    /// Stops its probers (a reload removed the service).
    pub fn stop_probers(&self) {
        self.probers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop();
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

    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
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

/// Whether `failover` judges a region down now, for the key-pair checks.
pub fn region_down(
    failover: &Failover,
) -> Box<dyn Fn(crate::region::Region) -> bool + Send + Sync> {
    let watched = failover.clone();
    Box::new(move |r| watched.snapshot().region(r).is_down())
}

/// Why a service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Upstream(#[from] crate::upstream::client::ClientError),
    #[error(transparent)]
    Failover(#[from] crate::failover::FailoverError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Makes services, at start and when a reload adds one: what every service
/// shares (the resolver, whether to probe, the stop signal, the state file).
#[derive(Clone)]
pub struct Builder {
    pub resolver: Arc<dyn crate::upstream::dns::Resolve>,
    pub probes: bool,
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// `state.path`, when set.
    pub state: Option<crate::failover::persist::StateFile>,
    /// The `[[service]]` form: each service has its entry of the state file
    /// and its own fleet record.
    pub service_form: bool,
    /// The audit file and the hooks, shared by every service.
    pub audit: crate::audit::Sink,
}

impl Builder {
    /// Starts `spec` of `config`: its clients, failover engine (whose
    /// driver task is returned), probers and metrics.
    pub async fn build(
        &self,
        config: &crate::config::Config,
        spec: &crate::config::ServiceConfig,
    ) -> Result<(Arc<Service>, tokio::task::JoinHandle<()>), BuildError> {
        use crate::classify::Classifier;
        use crate::rewrite::Rewriter;
        let cfg = config.for_service(spec);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut drain = self.stop.clone();
        let forward = stop.clone();
        tokio::spawn(async move {
            // The process's drain stops every service.
            let _ = drain.wait_for(|d| *d).await;
            let _ = forward.send(true);
        });
        let registry = crate::metrics::service_registry(&spec.name);
        let metrics = ProxyMetrics::register(&registry)?;
        let upstreams = crate::upstream::client::upstream_pair(&cfg, &self.resolver, None)?;
        let scope = crate::failover::Scope {
            service: self.service_form.then(|| spec.name.clone()),
            file: self.state.as_ref().map(|f| match self.service_form {
                true => f.for_service(&spec.name),
                false => f.clone(),
            }),
            audit: self.audit.clone(),
        };
        let (failover, task) =
            Failover::start_scoped(&cfg, &registry, stop_rx.clone(), scope).await?;
        let rewriter = Rewriter::new(&cfg.rewrite);
        let key_metrics = crate::keycheck::KeyMetrics::register(&registry)?;
        let keys = KeyCheck::new(
            &spec.name,
            &cfg,
            &upstreams,
            region_down(&failover),
            key_metrics,
        );
        keys.spawn(&stop_rx);
        let probers = Probers::start(
            self.probes,
            &cfg.health,
            &upstreams,
            &rewriter,
            &failover.probe_reports(),
            &stop_rx,
        );
        let parts = Parts {
            dynamic: Dynamic {
                settings: super::Settings::from_config(&cfg),
                classifier: Classifier::new(cfg.classify.profile, &cfg.classify.rules),
                rewriter,
                upstreams,
            },
            failover,
            budget: RetryBudget::new(cfg.retry.budget_ratio, cfg.retry.budget_min_per_sec),
            probers,
            registry,
            metrics,
            keys,
            stop,
        };
        Ok((Arc::new(Service::new(&spec.name, parts)), task))
    }
}
