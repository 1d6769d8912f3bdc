//! Wiring: raises the open-file limit, builds the upstream clients and the
//! proxy service, binds the listeners, spawns the servers, and drains them on
//! shutdown. [`Running`] exposes the bound addresses so tests can start
//! failway on `127.0.0.1:0`.

mod operator;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::actions::AdminToken;
use crate::admin::{self, AdminState, Listener};
use crate::config::Config;
use crate::failover::persist::StateFile;
use crate::failover::{Failover, FailoverError};
use crate::metrics;
use crate::proxy::metrics::ListenerMetrics;
use crate::proxy::pick::{Route, Routes};
use crate::proxy::server::{Server, ServerSettings};
use crate::proxy::service::{BuildError, Builder};
use crate::proxy::Proxy;
use crate::reload::{ReloadMetrics, Reloader};
use crate::tls::{TlsAcceptor, TlsError, TlsMetrics};
use crate::upstream::client::ClientError;
use crate::upstream::dns::{Resolve, SystemResolve};

/// File descriptors kept aside, beyond the client and upstream connections
/// the config allows: the admin and probe listeners' connections (at most
/// 64 each), the listeners, probes past a full pool, DNS, etcd, state and
/// certificate files, the runtime's own. 600 client connections and the
/// default upstream caps (2 x 256) then fit a limit of 1,500.
pub const FD_RESERVE: u64 = 256;

/// Why failway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {key} {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstream(#[from] ClientError),
    #[error("proxy.max_connections ({clients}) + upstreams.primary.max_connections ({primary}) + upstreams.replica.max_connections ({replica}) + {FD_RESERVE} kept for the admin and probe listeners and files = {needed} open files, over the limit of {limit} (hard limit {hard}); lower them (proxy.max_connections to at most {fits} with these upstream caps) or raise the limit (ulimit -n, LimitNOFILE=)")]
    FileLimit {
        clients: usize,
        primary: usize,
        replica: usize,
        needed: u64,
        limit: u64,
        hard: u64,
        fits: u64,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Failover(#[from] FailoverError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("service {0}: {1}")]
    Service(String, BuildError),
    #[error(transparent)]
    TokensFile(#[from] crate::admin::tokens::TokensFileError),
    #[error("admin.token_file {path}: {source}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Raises the soft open-file limit to the hard limit and checks that every
/// connection the config allows fits in it: `proxy.max_connections` client
/// connections, each region's `max_connections` (of every service), and
/// [`FD_RESERVE`].
pub fn raise_file_limit(config: &Config) -> Result<(), StartError> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    let limit = if soft < hard {
        rlimit::increase_nofile_limit(hard).unwrap_or(soft)
    } else {
        soft
    };
    check_file_budget(config, limit, hard)
}

fn check_file_budget(config: &Config, limit: u64, hard: u64) -> Result<(), StartError> {
    let clients = config.proxy.max_connections;
    // A gateway holds every service's regions' connections.
    let services = config.services();
    let primary = services
        .iter()
        .map(|s| s.upstreams.primary.max_connections)
        .sum();
    let replica = services
        .iter()
        .map(|s| s.upstreams.replica.max_connections)
        .sum();
    let upstream = (primary as u64).saturating_add(replica as u64);
    let needed = (clients as u64)
        .saturating_add(upstream)
        .saturating_add(FD_RESERVE);
    if needed > limit {
        return Err(StartError::FileLimit {
            clients,
            primary,
            replica,
            needed,
            limit,
            hard,
            fits: limit.saturating_sub(upstream.saturating_add(FD_RESERVE)),
        });
    }
    Ok(())
}

/// A started failway.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub probe_addr: Option<SocketAddr>,
    pub registry: Registry,
    drain: watch::Sender<bool>,
    admin_state: Arc<AdminState>,
    server: JoinHandle<()>,
    admin: JoinHandle<()>,
    /// The failover driver, the watchers; they stop on the drain signal.
    background: Vec<JoinHandle<()>>,
    reloader: Arc<Reloader>,
    pub failover: Failover,
    grace: Duration,
}

/// How to start; the defaults are what `failway run` does.
#[derive(Clone)]
pub struct StartOptions {
    /// Probe the regions. Data-path tests turn it off so that the fake
    /// regions see only the traffic the test sends.
    pub active_health_checks: bool,
    /// The file the configuration came from: watched, and re-read on
    /// [`Running::reload`] (SIGHUP). `None`: no live reload.
    pub config_path: Option<std::path::PathBuf>,
    /// How upstream host names are resolved (tests inject their own).
    pub resolver: Arc<dyn Resolve>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            active_health_checks: true,
            config_path: None,
            resolver: Arc::new(SystemResolve),
        }
    }
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, StartOptions::default()).await
}

/// [`start`] with options.
pub async fn start_with(config: Config, options: StartOptions) -> Result<Running, StartError> {
    let registry = metrics::new_registry();
    let listener_metrics = ListenerMetrics::register(&registry)?;
    let (drain, drain_rx) = watch::channel(false);
    // Every port first: a start that fails on a taken port must not have
    // written the state file (building a service persists its state).
    let Listeners {
        proxy: proxy_listener,
        proxy_addr,
        admin: admin_listener,
        admin_addr,
        probe: probe_listener,
        probe_addr,
    } = bind_listeners(&config).await?;
    let audit = operator::start_audit(&config, &registry)?;
    let builder = Builder {
        audit: audit.clone(),
        resolver: options.resolver.clone(),
        probes: options.active_health_checks,
        stop: drain_rx.clone(),
        state: config.state.path.clone().map(StateFile::new),
        service_form: config.has_service_blocks(),
    };
    let mut tasks = Vec::new();
    let mut routes = Vec::new();
    for spec in config.services() {
        let (svc, task) = builder.build(&config, &spec).await.map_err(|e| match e {
            // The single-pair form reads as before: no service to name.
            BuildError::Upstream(e) if !config.has_service_blocks() => StartError::Upstream(e),
            BuildError::Failover(e) if !config.has_service_blocks() => StartError::Failover(e),
            BuildError::Metrics(e) => StartError::Metrics(e),
            e => StartError::Service(spec.name.clone(), e),
        })?;
        tasks.push(task);
        routes.push(Route::new(&spec, svc));
    }
    let first = routes[0].service.clone();
    let reload_metrics = ReloadMetrics::register(&registry)?;
    let proxy = Arc::new(Proxy::new(Routes { routes }, listener_metrics));

    let server = serve_proxy(
        &config,
        proxy_listener,
        proxy.clone(),
        &registry,
        &drain_rx,
        &mut tasks,
    )?;
    let token = config.admin.token_file.clone().map(AdminToken::new);
    if let Some(t) = &token {
        t.load().map_err(|source| StartError::TokenFile {
            path: t.path().display().to_string(),
            source,
        })?;
    }
    let tokens = operator::admin_tokens(&config)?;
    let reloader = Reloader::new(
        options.config_path.clone().unwrap_or_default(),
        config.clone(),
        proxy.clone(),
        builder,
        reload_metrics,
    );
    if options.config_path.is_some() {
        tasks.push(reloader.spawn_watcher(Duration::from_secs(1)));
    }
    let admin_state = Arc::new(AdminState {
        registry: registry.clone(),
        ready: Default::default(),
        proxy,
        token,
        tokens,
        reloader: reloader.clone(),
        console: Default::default(),
        audit,
    });
    let (admin, probe_task) = serve_admin(admin_listener, probe_listener, &admin_state, drain_rx);
    tasks.extend(probe_task);
    admin_state.ready.store(true, Ordering::Relaxed);
    for s in config.services() {
        tracing::info!(%proxy_addr, %admin_addr, service = %s.name, primary = %s.upstreams.primary.url, replica = %s.upstreams.replica.url, "failway listening");
    }
    Ok(Running {
        proxy_addr,
        admin_addr,
        probe_addr,
        registry,
        drain,
        admin_state,
        server,
        admin,
        background: tasks,
        reloader,
        failover: first.failover().clone(),
        grace: config.proxy.shutdown_grace,
    })
}

/// Serves the proxy listener (with downstream TLS when configured, its
/// certificate watcher joining `tasks`).
fn serve_proxy(
    config: &Config,
    listener: TcpListener,
    proxy: Arc<Proxy>,
    registry: &Registry,
    drain_rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<JoinHandle<()>, StartError> {
    let tls = match &config.proxy.tls {
        Some(tls_cfg) => {
            let acceptor = TlsAcceptor::new(tls_cfg, TlsMetrics::register(registry)?)?;
            tasks.push(acceptor.spawn_reloader(Duration::from_secs(1), drain_rx.clone()));
            Some(acceptor)
        }
        None => None,
    };
    let server = Server::new(
        listener,
        proxy,
        ServerSettings {
            max_connections: config.proxy.max_connections,
            header_read_timeout: config.proxy.header_read_timeout,
            idle_timeout: config.proxy.idle_timeout,
            response_idle_timeout: config.proxy.response_idle_timeout,
            max_header_bytes: config.proxy.max_header_bytes.0,
            max_headers: config.proxy.max_headers,
        },
        tls.clone(),
    );
    Ok(tokio::spawn(server.run(drain_rx.clone())))
}

/// The listeners failway binds at start, with their bound addresses.
struct Listeners {
    proxy: TcpListener,
    proxy_addr: SocketAddr,
    admin: TcpListener,
    admin_addr: SocketAddr,
    probe: Option<TcpListener>,
    probe_addr: Option<SocketAddr>,
}

/// Binds the proxy, admin and probe listeners; an error names the key.
async fn bind_listeners(config: &Config) -> Result<Listeners, StartError> {
    let bind = |key: &'static str, addr: SocketAddr| async move {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { key, addr, source })?;
        let bound = l
            .local_addr()
            .map_err(|source| StartError::Bind { key, addr, source })?;
        Ok::<_, StartError>((l, bound))
    };
    let (proxy, proxy_addr) = bind("proxy.listen", config.proxy.listen).await?;
    let (admin, admin_addr) = bind("admin.listen", config.admin.listen).await?;
    let (probe, probe_addr) = match config.admin.probe_listen {
        Some(addr) => {
            let (l, a) = bind("admin.probe_listen", addr).await?;
            (Some(l), Some(a))
        }
        None => (None, None),
    };
    Ok(Listeners {
        proxy,
        proxy_addr,
        admin,
        admin_addr,
        probe,
        probe_addr,
    })
}

/// Serves the admin API, and the GET-only probe listener when bound.
fn serve_admin(
    admin_listener: TcpListener,
    probe_listener: Option<TcpListener>,
    state: &Arc<AdminState>,
    drain_rx: watch::Receiver<bool>,
) -> (JoinHandle<()>, Option<JoinHandle<()>>) {
    let probe = probe_listener.map(|l| {
        tokio::spawn(admin::serve(
            l,
            Listener::Probe,
            state.clone(),
            drain_rx.clone(),
        ))
    });
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        Listener::Admin,
        state.clone(),
        drain_rx,
    ));
    (admin, probe)
}

impl Running {
    /// Every metric family, the services' included (as `/metrics` shows).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let routes = self.admin_state.proxy.routes();
        let services: Vec<_> = routes.services().map(|s| s.registry().clone()).collect();
        metrics::gather_all(&self.registry, &services)
    }

    /// Re-reads the configuration file now (SIGHUP); false when the new
    /// configuration was refused and the old one keeps running.
    pub async fn reload(&self) -> bool {
        self.reloader.reload("SIGHUP").await
    }

    /// Stops accepting, lets in-flight requests finish within
    /// `proxy.shutdown_grace`, closes idle connections (h2: GOAWAY), and
    /// returns whether every connection finished in time.
    pub async fn shutdown(self) -> bool {
        self.admin_state.ready.store(false, Ordering::Relaxed);
        let _ = self.drain.send(true);
        let mut server = self.server;
        let clean = match tokio::time::timeout(self.grace, &mut server).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "shutdown grace elapsed; closing remaining connections");
                server.abort();
                false
            }
        };
        self.admin.abort();
        for t in self.background {
            t.abort();
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(clients: usize) -> Config {
        let text = format!(
            "[proxy]\nmax_connections = {clients}\n[upstreams.primary]\nurl = \"http://127.0.0.1:1\"\n[upstreams.replica]\nurl = \"http://127.0.0.1:2\"\n"
        );
        Config::from_toml_str(&text, std::path::Path::new(".")).unwrap()
    }

    #[test]
    fn client_and_upstream_connections_and_the_reserve_must_fit_the_file_limit() {
        // 600 + 2 x 256 + 256 = 1368.
        assert!(check_file_budget(&config(600), 1500, 1500).is_ok());
        assert!(check_file_budget(&config(732), 1500, 1500).is_ok());
        let err = check_file_budget(&config(733), 1500, 1500).unwrap_err();
        let text = err.to_string();
        for part in [
            "proxy.max_connections (733)",
            "upstreams.primary.max_connections (256)",
            "upstreams.replica.max_connections (256)",
            "= 1501 open files",
            "at most 732",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }
}
