//! Wiring: raises the open-file limit, builds the upstream clients and the
//! proxy service, binds the listeners, spawns the servers, and drains them on
//! shutdown. [`Running`] exposes the bound addresses so tests can start
//! failway on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::classify::Classifier;
use crate::config::Config;
use crate::metrics::{self, ProxyMetrics};
use crate::proxy::client::{ClientError, Upstream};
use crate::proxy::server::{Server, ServerSettings};
use crate::proxy::{Proxy, Settings};
use crate::routing::Region;

/// File descriptors kept aside for listeners, upstream pools, state files.
const FD_RESERVE: u64 = 256;

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
    #[error("proxy.max_connections = {max} cannot fit the open-file limit of {limit} (hard limit {hard}); lower it to at most {fits} or raise the limit (ulimit -n, LimitNOFILE=)")]
    FileLimit {
        max: usize,
        limit: u64,
        hard: u64,
        fits: u64,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Raises the soft open-file limit to the hard limit and checks that
/// `max_connections` client connections fit in it.
pub fn raise_file_limit(max_connections: usize) -> Result<(), StartError> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    let limit = if soft < hard {
        rlimit::increase_nofile_limit(hard).unwrap_or(soft)
    } else {
        soft
    };
    let needed = max_connections as u64 + FD_RESERVE;
    if needed > limit {
        return Err(StartError::FileLimit {
            max: max_connections,
            limit,
            hard,
            fits: limit.saturating_sub(FD_RESERVE),
        });
    }
    if 2 * max_connections as u64 + FD_RESERVE > limit {
        tracing::warn!(
            max_connections,
            limit,
            "with every client connection busy, upstream connections may not fit the open-file limit"
        );
    }
    Ok(())
}

/// A started failway.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub registry: Registry,
    drain: watch::Sender<bool>,
    admin_state: Arc<AdminState>,
    server: JoinHandle<()>,
    admin: JoinHandle<()>,
    grace: Duration,
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let registry = metrics::new_registry();
    let proxy_metrics = ProxyMetrics::register(&registry)?;
    let upstreams = [
        Upstream::new(
            Region::Primary,
            &config.upstreams.primary,
            config.retry.per_try_timeout,
        )?,
        Upstream::new(
            Region::Replica,
            &config.upstreams.replica,
            config.retry.per_try_timeout,
        )?,
    ];
    let classifier = Classifier::new(config.classify.profile, &config.classify.rules);
    let proxy = Arc::new(Proxy::new(
        Settings::from_config(&config),
        classifier,
        upstreams,
        proxy_metrics,
    ));

    let bind = |key: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { key, addr, source })
    };
    let proxy_listener = bind("proxy.listen", config.proxy.listen).await?;
    let admin_listener = bind("admin.listen", config.admin.listen).await?;
    let proxy_addr = proxy_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            key: "proxy.listen",
            addr: config.proxy.listen,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            key: "admin.listen",
            addr: config.admin.listen,
            source,
        })?;

    let (drain, drain_rx) = watch::channel(false);
    let server = Server::new(
        proxy_listener,
        proxy,
        ServerSettings {
            max_connections: config.proxy.max_connections,
            header_read_timeout: config.proxy.header_read_timeout,
            idle_timeout: config.proxy.idle_timeout,
            max_header_bytes: config.proxy.max_header_bytes.0,
            max_headers: config.proxy.max_headers,
        },
    );
    let server = tokio::spawn(server.run(drain_rx.clone()));
    let admin_state = Arc::new(AdminState {
        registry: registry.clone(),
        ready: Default::default(),
    });
    let admin = tokio::spawn(admin::serve(admin_listener, admin_state.clone(), drain_rx));
    admin_state.ready.store(true, Ordering::Relaxed);
    tracing::info!(%proxy_addr, %admin_addr, primary = %config.upstreams.primary.url, replica = %config.upstreams.replica.url, "failway listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        registry,
        drain,
        admin_state,
        server,
        admin,
        grace: config.proxy.shutdown_grace,
    })
}

impl Running {
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
        clean
    }
}
