//! Live configuration reload, on SIGHUP and when the config file changes
//! (including Kubernetes ConfigMap updates, which swap a `..data` symlink:
//! the file's canonical path, modification time, size and inode are
//! compared every second).
//!
//! A new configuration is parsed and validated first; an invalid one keeps
//! the old one running, logs every error and counts
//! `failway_config_reloads_total{result="error"}`. A valid one is swapped in
//! atomically: requests in flight finish with the settings and upstream
//! clients they started with. The failover state is never reset by a
//! reload. Settings that need a restart (listen addresses, TLS on or off,
//! worker threads, `max_connections`, connection timeouts, the state file,
//! the admin token file, `[fleet]`) are reported as such and keep their old
//! values.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::classify::Classifier;
use crate::config::Config;
use crate::health::prober::Probers;
use crate::proxy::service::Service;
use crate::proxy::{Dynamic, Settings};
use crate::rewrite::Rewriter;
use crate::upstream::dns::Resolve;

#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
}

impl ReloadMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<ReloadMetrics> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "failway_config_reloads_total",
                "Configuration reloads, by result (success, error: the old configuration kept running).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        for r in ["success", "error"] {
            reloads.with_label_values(&[r]);
        }
        Ok(ReloadMetrics { reloads })
    }
}

/// What a reload swaps, and what it must leave alone.
pub struct Reloader {
    resolver: Arc<dyn Resolve>,
    path: PathBuf,
    current: Mutex<Config>,
    service: Arc<Service>,
    probes_enabled: bool,
    stop: watch::Receiver<bool>,
    metrics: ReloadMetrics,
}

/// A setting that takes effect only at start: how to tell it changed, and
/// how to keep the running value in a reloaded configuration.
struct RestartOnly {
    key: &'static str,
    changed: fn(&Config, &Config) -> bool,
    keep: fn(&mut Config, &Config),
}

/// One entry per setting, from its field path: the same path reads the
/// change and copies the running value back, so the two cannot disagree.
macro_rules! restart_only {
    ($key:literal, $($field:ident).+) => {
        RestartOnly {
            key: $key,
            changed: |old, new| old.$($field).+ != new.$($field).+,
            keep: |new, old| new.$($field).+ = old.$($field).+.clone(),
        }
    };
}

/// Every setting a reload cannot change.
const RESTART_ONLY: &[RestartOnly] = &[
    restart_only!("proxy.listen", proxy.listen),
    restart_only!("proxy.tls", proxy.tls),
    restart_only!("proxy.worker_threads", proxy.worker_threads),
    restart_only!("proxy.max_connections", proxy.max_connections),
    restart_only!("proxy.header_read_timeout", proxy.header_read_timeout),
    restart_only!("proxy.idle_timeout", proxy.idle_timeout),
    restart_only!("proxy.shutdown_grace", proxy.shutdown_grace),
    restart_only!("admin", admin),
    restart_only!("state.path", state),
    restart_only!("fleet", fleet),
];

/// Keys whose change needs a restart.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    RESTART_ONLY
        .iter()
        .filter(|r| (r.changed)(old, new))
        .map(|r| r.key)
        .collect()
}

/// `new` with every restart-only setting at its running value.
fn keep_restart_only(new: &Config, old: &Config) -> Config {
    let mut effective = new.clone();
    for r in RESTART_ONLY {
        (r.keep)(&mut effective, old);
    }
    effective
}

impl Reloader {
    pub fn new(
        resolver: Arc<dyn Resolve>,
        path: PathBuf,
        current: Config,
        service: Arc<Service>,
        probes_enabled: bool,
        stop: watch::Receiver<bool>,
        metrics: ReloadMetrics,
    ) -> Arc<Reloader> {
        Arc::new(Reloader {
            resolver,
            path,
            current: Mutex::new(current),
            service,
            probes_enabled,
            stop,
            metrics,
        })
    }

    /// Reads the file again and applies it if it is valid.
    pub async fn reload(&self, why: &str) -> bool {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let new = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(errors)) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::error!(path = %self.path.display(), trigger = why, "configuration reload refused; the old configuration keeps running");
                for e in errors.iter() {
                    tracing::error!("  {e}");
                }
                return false;
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "configuration reload task failed");
                return false;
            }
        };
        match self.apply(new).await {
            Ok(()) => {
                self.metrics.reloads.with_label_values(&["success"]).inc();
                true
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::error!(
                    trigger = why,
                    "configuration reload refused: {e}; the old configuration keeps running"
                );
                false
            }
        }
    }

    async fn apply(&self, new: Config) -> Result<(), crate::upstream::client::ClientError> {
        let old = self.current.lock().map(|c| c.clone()).map_err(|_| {
            crate::upstream::client::ClientError::Invalid {
                section: "upstreams.primary",
                key: "url",
                message: "reload state poisoned".into(),
            }
        })?;
        for key in restart_only(&old, &new) {
            tracing::warn!(
                key,
                "changed in the configuration file, but needs a restart; the running value is kept"
            );
        }
        let current = self.service.dynamic();
        let upstreams = crate::upstream::client::upstream_pair(
            &new,
            &self.resolver,
            Some((&old, &current.upstreams)),
        )?;
        let rewriter = Rewriter::new(&new.rewrite);
        // Keys that need a restart keep their running values: the swap
        // applies only what can change live.
        let effective = keep_restart_only(&new, &old);

        let restart_probers = old.health != effective.health
            || !Arc::ptr_eq(&upstreams[0], &current.upstreams[0])
            || !Arc::ptr_eq(&upstreams[1], &current.upstreams[1])
            || old.rewrite != effective.rewrite;
        self.service.replace(Dynamic {
            settings: Settings::from_config(&effective),
            classifier: Classifier::new(effective.classify.profile, &effective.classify.rules),
            rewriter: rewriter.clone(),
            upstreams: upstreams.clone(),
        });
        self.service.failover().reconfigure(&effective).await;
        if restart_probers {
            let fresh = Probers::start(
                self.probes_enabled,
                &effective.health,
                &upstreams,
                &rewriter,
                &self.service.failover().probe_reports(),
                &self.stop,
            );
            self.service.replace_probers(fresh);
        }
        if let Ok(mut c) = self.current.lock() {
            *c = effective;
        }
        tracing::info!(path = %self.path.display(), "configuration reloaded");
        Ok(())
    }

    /// Watches the file every `every` until the drain signal.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let this = self.clone();
        let mut stop = self.stop.clone();
        // Taken now, not in the task: an edit between start and the task's
        // first run must still count as a change.
        let mut last = crate::watched_file::stamp(&self.path);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                let now = crate::watched_file::stamp(&this.path);
                // A file briefly missing during a swap is not a change.
                if now.is_some() && now != last {
                    last = now;
                    this.reload("file change").await;
                }
            }
        })
    }
}
