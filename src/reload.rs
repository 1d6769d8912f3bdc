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
//! worker threads, `max_connections` (the client and upstream ones, which
//! the open-file budget at start counts), connection timeouts, the state file,
//! the admin token file, `[fleet]`) are reported as such and keep their old
//! values.
//!
//! While the replica-writes latch is set, a reload that changes an
//! upstream URL is refused whole (`result="refused"`): writes accepted on
//! the replica are not on the primary, and the next write must not land
//! somewhere else. It applies after a forced failback, or at a restart.
//! Health thresholds change without restarting the counts, and the probers
//! restart only when what they probe changes, so a stream of reloads cannot
//! hold off a failover.
//!
//! Services (`[[service]]`) are matched by name: a changed one keeps its
//! mode, deadline and latch; a new one starts in `primary` with unknown
//! health; a removed one stops (its probes and engine), and its entry in the
//! state file is kept, with a warning. Switching between the single-pair
//! form and `[[service]]` blocks needs a restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use tokio::task::JoinHandle;

use crate::classify::Classifier;
use crate::config::Config;
use crate::health::prober::Probers;
use crate::proxy::pick::{Route, Routes};
use crate::proxy::service::{BuildError, Builder, Service};
use crate::proxy::{Dynamic, Proxy, Settings};
use crate::rewrite::Rewriter;

#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: IntCounterVec,
}

impl ReloadMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<ReloadMetrics> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "failway_config_reloads_total",
                "Configuration reloads, by result (success; error: invalid, the old configuration kept running; refused: upstream URLs changed while the replica-writes latch is set).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        for r in ["success", "error", "refused"] {
            reloads.with_label_values(&[r]);
        }
        Ok(ReloadMetrics { reloads })
    }
}

/// Why a valid configuration was not applied.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Upstream(#[from] crate::upstream::client::ClientError),
    #[error("the running configuration could not be read (a reload panicked)")]
    Poisoned,
    #[error("the replica-writes latch is set (writes were accepted on the replica) and {keys} changed; apply it after a forced failback (failway ctl failback --force) or with a restart")]
    LatchSet { keys: String },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("switching between the single-pair form ([upstreams.*]) and [[service]] blocks needs a restart")]
    Form,
}

/// The upstream URLs that differ between `old` and `new`.
fn changed_urls(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.upstreams.primary.url != new.upstreams.primary.url {
        keys.push("upstreams.primary.url");
    }
    if old.upstreams.replica.url != new.upstreams.replica.url {
        keys.push("upstreams.replica.url");
    }
    keys
}

/// Whether the probers must restart: what they probe changed. The
/// thresholds and `[health.passive]` are counted by the failover driver,
/// which keeps its counts across a reload.
fn probe_changed(old: &crate::config::HealthConfig, new: &crate::config::HealthConfig) -> bool {
    let mut same = new.clone();
    same.unhealthy_threshold = old.unhealthy_threshold;
    same.healthy_threshold = old.healthy_threshold;
    same.passive = old.passive.clone();
    same != *old
}

/// What a reload swaps, and what it must leave alone.
pub struct Reloader {
    path: PathBuf,
    current: Mutex<Config>,
    /// When `current` was loaded: the start, then each applied reload.
    loaded_at: Mutex<std::time::SystemTime>,
    proxy: Arc<Proxy>,
    builder: Builder,
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
    restart_only!("proxy.response_idle_timeout", proxy.response_idle_timeout),
    // Counted in the open-file budget at start.
    restart_only!(
        "upstreams.primary.max_connections",
        upstreams.primary.max_connections
    ),
    restart_only!(
        "upstreams.replica.max_connections",
        upstreams.replica.max_connections
    ),
    restart_only!("proxy.shutdown_grace", proxy.shutdown_grace),
    restart_only!("admin", admin),
    restart_only!("state.path", state),
    restart_only!("fleet", fleet),
    restart_only!("hooks", hooks),
    restart_only!("audit", audit),
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

/// The time an operator reads in `GET /config`.
fn wall_clock() -> std::time::SystemTime {
    #[allow(clippy::disallowed_methods)]
    std::time::SystemTime::now()
}

impl Reloader {
    /// The configuration running now (restart-only keys at their running
    /// values) and when it was loaded.
    pub fn running(&self) -> (Config, std::time::SystemTime) {
        let config = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let at = *self.loaded_at.lock().unwrap_or_else(|e| e.into_inner());
        (config, at)
    }

    pub fn new(
        path: PathBuf,
        current: Config,
        proxy: Arc<Proxy>,
        builder: Builder,
        metrics: ReloadMetrics,
    ) -> Arc<Reloader> {
        Arc::new(Reloader {
            path,
            current: Mutex::new(current),
            loaded_at: Mutex::new(wall_clock()),
            proxy,
            builder,
            metrics,
        })
    }

    /// A reload's audit line: `outcome` as the metric's result, `why` what
    /// triggered it (SIGHUP, a file change).
    fn audit(&self, outcome: &str, why: &str, detail: String) {
        let mut r =
            crate::audit::Record::new(crate::audit::Kind::Reload, std::time::SystemTime::now());
        r.outcome = Some(outcome.to_owned());
        r.trigger = Some(why.to_owned());
        r.reason = Some(detail);
        self.builder.audit.note(r);
    }

    /// Reads the file again and applies it if it is valid.
    pub async fn reload(&self, why: &str) -> bool {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let new = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(errors)) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                self.audit(
                    "error",
                    why,
                    format!("{} error(s) in the file", errors.iter().count()),
                );
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
                self.audit("success", why, "applied".to_owned());
                true
            }
            Err(e @ ApplyError::LatchSet { .. }) => {
                self.metrics.reloads.with_label_values(&["refused"]).inc();
                self.audit("refused", why, e.to_string());
                tracing::warn!(
                    trigger = why,
                    "configuration reload refused: {e}; the old configuration keeps running"
                );
                false
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                self.audit("error", why, e.to_string());
                tracing::error!(
                    trigger = why,
                    "configuration reload refused: {e}; the old configuration keeps running"
                );
                false
            }
        }
    }

    async fn apply(&self, new: Config) -> Result<(), ApplyError> {
        let old = self
            .current
            .lock()
            .map(|c| c.clone())
            .map_err(|_| ApplyError::Poisoned)?;
        if old.has_service_blocks() != new.has_service_blocks() {
            return Err(ApplyError::Form);
        }
        for key in restart_only(&old, &new) {
            tracing::warn!(
                key,
                "changed in the configuration file, but needs a restart; the running value is kept"
            );
        }
        // Keys that need a restart keep their running values: the swap
        // applies only what can change live.
        let effective = keep_restart_only(&new, &old);
        let routes = self.proxy.routes();
        let old_specs = old.services();
        let new_specs = effective.services();
        let before = |name: &str| old_specs.iter().find(|s| s.name == name);
        latch_check(&routes, &old, &effective)?;
        // New services first: a failure there changes nothing.
        let mut added = Vec::new();
        for spec in new_specs
            .iter()
            .filter(|s| routes.service(&s.name).is_none())
        {
            let (svc, _driver) = self.builder.build(&effective, spec).await?;
            tracing::info!(service = %spec.name, "service added by the reload; it starts in primary with unknown health");
            added.push(svc);
        }
        let mut next = Vec::new();
        for spec in &new_specs {
            let svc = match (routes.service(&spec.name), before(&spec.name)) {
                (Some(svc), Some(was)) => {
                    let (from, to) = (old.for_service(was), effective.for_service(spec));
                    self.apply_service(svc, &from, &to).await?;
                    svc.clone()
                }
                _ => match added.iter().find(|s| s.name() == spec.name) {
                    Some(s) => s.clone(),
                    None => continue,
                },
            };
            next.push(Route::new(spec, svc));
        }
        for gone in routes
            .services()
            .filter(|s| !new_specs.iter().any(|n| n.name == s.name()))
        {
            gone.stop();
            tracing::warn!(service = gone.name(), "service removed by the reload: its probes and failover engine stopped; its state stays in the state file");
        }
        self.proxy.replace_routes(Routes { routes: next });
        if let Ok(mut c) = self.current.lock() {
            *c = effective;
        }
        if let Ok(mut at) = self.loaded_at.lock() {
            *at = wall_clock();
        }
        tracing::info!(path = %self.path.display(), "configuration reloaded");
        Ok(())
    }

    /// Applies one service's changed settings in place.
    async fn apply_service(
        &self,
        service: &Arc<Service>,
        old: &Config,
        effective: &Config,
    ) -> Result<(), ApplyError> {
        let current = service.dynamic();
        let upstreams = crate::upstream::client::upstream_pair(
            effective,
            &self.builder.resolver,
            Some((old, &current.upstreams)),
        )?;
        let rewriter = Rewriter::new(&effective.rewrite);
        let restart_probers = probe_changed(&old.health, &effective.health)
            || !Arc::ptr_eq(&upstreams[0], &current.upstreams[0])
            || !Arc::ptr_eq(&upstreams[1], &current.upstreams[1])
            || old.rewrite != effective.rewrite;
        service.replace(Dynamic {
            settings: Settings::from_config(effective),
            classifier: Classifier::new(effective.classify.profile, &effective.classify.rules),
            rewriter: rewriter.clone(),
            upstreams: upstreams.clone(),
        });
        service.failover().reconfigure(effective).await;
        let clients_changed = !Arc::ptr_eq(&upstreams[0], &current.upstreams[0])
            || !Arc::ptr_eq(&upstreams[1], &current.upstreams[1]);
        if clients_changed || crate::keycheck::inputs_changed(old, effective) {
            let keys = service.keys();
            service.replace_keys(crate::keycheck::KeyCheck::new(
                service.name(),
                effective,
                &upstreams,
                crate::proxy::service::region_down(service.failover()),
                keys.metrics().clone(),
            ));
        }
        if restart_probers {
            let fresh = Probers::start(
                self.builder.probes,
                &effective.health,
                &upstreams,
                &rewriter,
                &service.failover().probe_reports(),
                service.stop_signal(),
            );
            service.replace_probers(fresh);
        }
        Ok(())
    }

    /// Watches the file every `every` until the drain signal.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let this = self.clone();
        let mut stop = self.builder.stop.clone();
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

/// Refuses the reload when a service whose latch is set would get other
/// upstream URLs (named `service NAME: upstreams...` in the service form).
fn latch_check(routes: &Routes, old: &Config, new: &Config) -> Result<(), ApplyError> {
    let olds = old.services();
    for spec in new.services() {
        let (Some(svc), Some(was)) = (
            routes.service(&spec.name),
            olds.iter().find(|s| s.name == spec.name),
        ) else {
            continue;
        };
        let urls = changed_urls(&old.for_service(was), &new.for_service(&spec));
        if !urls.is_empty() && svc.failover().snapshot().latch {
            let keys = urls.join(" and ");
            let keys = match new.has_service_blocks() {
                true => format!("service {}: {keys}", spec.name),
                false => keys,
            };
            return Err(ApplyError::LatchSet { keys });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[upstreams.primary]\nurl = \"http://127.0.0.1:1\"\n[upstreams.replica]\nurl = \"http://127.0.0.1:2\"\n{extra}"
        );
        Config::from_toml_str(&text, std::path::Path::new(".")).expect("valid test config")
    }

    #[test]
    fn thresholds_and_passive_limits_do_not_restart_the_probers() {
        let old = config("");
        let counted = config(
            "[health]\nunhealthy_threshold = 7\nhealthy_threshold = 4\n[health.passive]\nmin_requests = 3\n",
        );
        assert!(!probe_changed(&old.health, &counted.health));
        let probed = config("[health]\npath = \"/healthz\"\n");
        assert!(probe_changed(&old.health, &probed.health));
    }

    #[test]
    fn changed_urls_names_the_keys() {
        let old = config("");
        assert!(changed_urls(&old, &config("")).is_empty());
        let swapped = Config::from_toml_str(
            "[upstreams.primary]\nurl = \"http://127.0.0.1:2\"\n[upstreams.replica]\nurl = \"http://127.0.0.1:1\"\n",
            std::path::Path::new("."),
        )
        .expect("valid test config");
        assert_eq!(
            changed_urls(&old, &swapped),
            ["upstreams.primary.url", "upstreams.replica.url"]
        );
    }
}
