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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::classify::Classifier;
use crate::config::Config;
use crate::failover::Failover;
use crate::health::prober::Probers;
use crate::proxy::{Dynamic, Proxy, Settings};
use crate::region::Region;
use crate::rewrite::Rewriter;
use crate::upstream::client::Upstream;
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
    proxy: Arc<Proxy>,
    failover: Failover,
    probers: Mutex<Probers>,
    probes_enabled: bool,
    stop: watch::Receiver<bool>,
    metrics: ReloadMetrics,
}

/// Keys whose change needs a restart, with how to read them.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key, changed: bool| {
        if changed {
            keys.push(key)
        }
    };
    check("proxy.listen", old.proxy.listen != new.proxy.listen);
    check("proxy.tls", old.proxy.tls != new.proxy.tls);
    check(
        "proxy.worker_threads",
        old.proxy.worker_threads != new.proxy.worker_threads,
    );
    check(
        "proxy.max_connections",
        old.proxy.max_connections != new.proxy.max_connections,
    );
    check(
        "proxy.header_read_timeout",
        old.proxy.header_read_timeout != new.proxy.header_read_timeout,
    );
    check(
        "proxy.idle_timeout",
        old.proxy.idle_timeout != new.proxy.idle_timeout,
    );
    check(
        "proxy.shutdown_grace",
        old.proxy.shutdown_grace != new.proxy.shutdown_grace,
    );
    check("admin", old.admin != new.admin);
    check("state.path", old.state != new.state);
    check("fleet", old.fleet != new.fleet);
    keys
}

/// The file's identity: a change of any part means "read it again".
fn fingerprint(path: &Path) -> Option<(PathBuf, SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let canonical = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&canonical).ok()?;
    Some((
        canonical,
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
        meta.ino(),
    ))
}

impl Reloader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        resolver: Arc<dyn Resolve>,
        path: PathBuf,
        current: Config,
        proxy: Arc<Proxy>,
        failover: Failover,
        probers: Probers,
        probes_enabled: bool,
        stop: watch::Receiver<bool>,
        metrics: ReloadMetrics,
    ) -> Arc<Reloader> {
        Arc::new(Reloader {
            resolver,
            path,
            current: Mutex::new(current),
            proxy,
            failover,
            probers: Mutex::new(probers),
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
        let current = self.proxy.dynamic();
        let upstream =
            |region: Region| -> Result<Arc<Upstream>, crate::upstream::client::ClientError> {
                let (o, n) = match region {
                    Region::Primary => (&old.upstreams.primary, &new.upstreams.primary),
                    Region::Replica => (&old.upstreams.replica, &new.upstreams.replica),
                };
                // An unchanged region keeps its client and its warm pool.
                if o == n && old.retry.per_try_timeout == new.retry.per_try_timeout {
                    Ok(current.upstreams[region.index()].clone())
                } else {
                    Ok(Arc::new(Upstream::new(
                        region,
                        n,
                        new.retry.per_try_timeout,
                        self.resolver.clone(),
                    )?))
                }
            };
        let upstreams = [upstream(Region::Primary)?, upstream(Region::Replica)?];
        let rewriter = Rewriter::new(&new.rewrite);
        // Keys that need a restart keep their running values: the swap
        // applies only what can change live.
        let mut effective = new.clone();
        effective.proxy.listen = old.proxy.listen;
        effective.proxy.tls = old.proxy.tls.clone();
        effective.proxy.worker_threads = old.proxy.worker_threads;
        effective.proxy.max_connections = old.proxy.max_connections;
        effective.proxy.header_read_timeout = old.proxy.header_read_timeout;
        effective.proxy.idle_timeout = old.proxy.idle_timeout;
        effective.proxy.shutdown_grace = old.proxy.shutdown_grace;
        effective.admin = old.admin.clone();
        effective.state = old.state.clone();
        effective.fleet = old.fleet.clone();

        let restart_probers = old.health != effective.health
            || !Arc::ptr_eq(&upstreams[0], &current.upstreams[0])
            || !Arc::ptr_eq(&upstreams[1], &current.upstreams[1])
            || old.rewrite != effective.rewrite;
        self.proxy.replace(Dynamic {
            settings: Settings::from_config(&effective),
            classifier: Classifier::new(effective.classify.profile, &effective.classify.rules),
            rewriter: rewriter.clone(),
            upstreams: upstreams.clone(),
        });
        self.failover.reconfigure(&effective).await;
        if restart_probers {
            let fresh = Probers::start(
                self.probes_enabled,
                &effective.health,
                &upstreams,
                &rewriter,
                &self.failover.probe_reports(),
                &self.stop,
            );
            if let Ok(mut p) = self.probers.lock() {
                p.stop();
                *p = fresh;
            }
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
        let mut last = fingerprint(&self.path);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                let now = fingerprint(&this.path);
                // A file briefly missing during a swap is not a change.
                if now.is_some() && now != last {
                    last = now;
                    this.reload("file change").await;
                }
            }
        })
    }
}
