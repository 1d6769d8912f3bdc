//! One upstream per region: HTTP/1.1 through failway's own pool
//! ([`super::pool`]), HTTP/2 through hyper-util's client (one multiplexed
//! connection needs no pool of ours), both over hyper-rustls. `error` maps
//! their errors onto `ProxyError`.
//!
//! `upstreams.*.max_connections` caps what a region may take: HTTP/1.1
//! connections (the pool's permits), and for `http2` the requests waiting
//! for their response head, since each of those may open a connection
//! (over TLS, before ALPN settled on h2, hyper-util connects once per
//! waiting request). Streams of an established h2 connection need no file
//! of their own, so their bodies run outside the cap. The data path asks
//! for room first ([`Upstream::reserve`], waiting at most
//! [`MAX_CONNECTION_WAIT`] or the per-try timeout), then sends on it;
//! probes never wait.
//!
//! TLS verification always uses the platform roots plus `tls.ca`; there is no
//! switch to turn verification off.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::TryFutureExt;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod error;

pub use self::error::{error_chain, LocalKind, UpstreamError, UpstreamFailure};
use super::body::{UpstreamBody, Watched};
use super::dns::{AgedConnector, Ages, DnsResolver, Resolve, Staleness};
use super::pool::{H1Pool, PoolError, PoolLimits, Slot};
use crate::config::{Config, UpstreamConfig, UpstreamTls};
use crate::region::Region;

pub type RequestBody = UpstreamBody<Watched<hyper::body::Incoming>>;
pub type Connector = HttpsConnector<AgedConnector<HttpConnector<DnsResolver>>>;
pub type HttpClient = Client<Connector, RequestBody>;

/// Connection attempts give up after this long (Envoy's default too), or the
/// per-try timeout when that is shorter.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request waits at most this long (or the per-try timeout when that is
/// shorter) for a connection to a region whose `max_connections` are busy.
pub const MAX_CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// The read buffer for upstream responses; bodies stream through it, so a
/// large one only costs memory per connection.
const UPSTREAM_BUF_SIZE: usize = 64 * 1024;

/// Idle connections kept per region.
const MAX_IDLE: usize = 1024;

/// Failure to build an upstream client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{section}.tls.{key}: cannot read {path}: {source}")]
    Read {
        /// The config section: `upstreams.primary`, `fleet`.
        section: &'static str,
        key: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{section}.{key}: {message}")]
    Invalid {
        section: &'static str,
        key: &'static str,
        message: String,
    },
    #[error("{section}.tls: {source}")]
    Tls {
        section: &'static str,
        #[source]
        source: rustls::Error,
    },
}

/// A region's client and the values requests to it need.
pub struct Upstream {
    pub region: Region,
    pub scheme: Scheme,
    pub authority: Authority,
    /// `Host` sent upstream when `proxy.host_header = "upstream"`.
    pub host: HeaderValue,
    /// HTTP/2 upstreams (`http2 = true`).
    client: HttpClient,
    /// HTTP/1.1 upstreams.
    pool: Option<H1Pool>,
    /// HTTP/2 upstreams: one permit per request awaiting its head.
    in_flight: Arc<Semaphore>,
    /// How long a request waits for room.
    wait: Duration,
    /// Retires connections past `pool_max_lifetime` or to an address the
    /// host no longer resolves to.
    pub staleness: Staleness,
}

impl Upstream {
    pub fn new(
        region: Region,
        cfg: &UpstreamConfig,
        per_try_timeout: Duration,
        resolve: Arc<dyn Resolve>,
    ) -> Result<Upstream, ClientError> {
        let scheme = cfg.url.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = cfg
            .url
            .authority()
            .cloned()
            .ok_or_else(|| ClientError::Invalid {
                section: section(region),
                key: "url",
                message: "has no host".into(),
            })?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| ClientError::Invalid {
            section: section(region),
            key: "url",
            message: "host is not a valid Host header".into(),
        })?;

        let ages = Ages::new(cfg.pool_max_lifetime);
        let resolver = DnsResolver::new(resolve, cfg.resolve_every, ages.clone());
        let connector = connector(region, cfg, per_try_timeout, resolver.clone(), &ages)?;
        let h1_connector = (!cfg.http2).then(|| connector.clone());
        let client = h2_client(cfg, connector);
        let staleness = Staleness {
            resolver,
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            ages,
        };
        let wait = per_try_timeout.min(MAX_CONNECTION_WAIT);
        let pool = match h1_connector {
            Some(c) => {
                let target = Uri::builder()
                    .scheme(scheme.clone())
                    .authority(authority.clone())
                    .path_and_query("/")
                    .build()
                    .map_err(|e| ClientError::Invalid {
                        section: section(region),
                        key: "url",
                        message: e.to_string(),
                    })?;
                let limits = PoolLimits {
                    max_connections: cfg.max_connections,
                    wait,
                    idle_timeout: cfg.pool_idle_timeout,
                    max_idle: MAX_IDLE,
                    max_buf_size: UPSTREAM_BUF_SIZE,
                };
                Some(H1Pool::new(c, target, limits, staleness.clone()))
            }
            None => None,
        };
        Ok(Upstream {
            region,
            scheme,
            authority,
            host,
            client,
            pool,
            in_flight: Arc::new(Semaphore::new(cfg.max_connections)),
            wait,
            staleness,
        })
    }

    /// Room to send one request to this region: waits while every
    /// connection the cap allows is busy, until `deadline` or the region's
    /// wait at most, then [`UpstreamError::Busy`]. `write`: the request
    /// must not risk a connection idle for long (see the pool).
    pub async fn reserve(
        &self,
        write: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Ticket, UpstreamError> {
        let until = deadline.min(tokio::time::Instant::now() + self.wait);
        if let Some(pool) = &self.pool {
            return match pool.reserve(write, until).await {
                Ok(slot) => Ok(Ticket::H1(slot)),
                Err(_) => Err(UpstreamError::Busy),
            };
        }
        let permit = match self.in_flight.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::time::timeout_at(until, self.in_flight.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or(UpstreamError::Busy)?,
        };
        Ok(Ticket::H2(permit))
    }

    /// Sends one request (its URI absolute) to this region on `ticket`.
    /// The HTTP/1.1 path adds no async layer of its own (see
    /// [`H1Pool::send`]); the others are boxed, so they do not size it.
    pub fn send(
        &self,
        ticket: Ticket,
        req: http::Request<RequestBody>,
    ) -> impl Future<Output = Result<http::Response<hyper::body::Incoming>, UpstreamError>> + Send + '_
    {
        match (ticket, &self.pool) {
            (Ticket::H1(slot), Some(pool)) => {
                Either::Left(pool.send(slot, req).map_err(UpstreamError::from))
            }
            (ticket, _) => Either::Right(Box::pin(async move {
                // An HTTP/2 permit is held until the head arrives.
                let _held = ticket;
                self.request(req).await
            })),
        }
    }

    /// Sends one request without waiting for room (health probes: a full
    /// region is not a region down).
    pub async fn request(
        &self,
        req: http::Request<RequestBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        match &self.pool {
            Some(pool) => pool.request(req).await.map_err(UpstreamError::from),
            // Boxed: hyper-util's client future would otherwise size the
            // future of every HTTP/1.1 request too.
            None => Box::pin(self.send_h2(req)).await,
        }
    }

    async fn send_h2(
        &self,
        mut req: http::Request<RequestBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        // Looking at the connection a response came on costs a channel and
        // two allocations; only worth it when it may be stale.
        // The connection ages it compares against are on the real clock.
        #[allow(clippy::disallowed_methods)]
        let capture = self
            .staleness
            .ages
            .check_due(std::time::Instant::now())
            .then(|| hyper_util::client::legacy::connect::capture_connection(&mut req));
        let resp = self
            .client
            .request(req)
            .await
            .map_err(UpstreamError::Client)?;
        if let Some(capture) = &capture {
            if self.staleness.is_stale(resp.extensions()) {
                if let Some(c) = capture.connection_metadata().as_ref() {
                    c.poison();
                }
            }
        }
        Ok(resp)
    }
}

/// Room for one request to a region, from [`Upstream::reserve`].
pub enum Ticket {
    H1(Slot),
    H2(OwnedSemaphorePermit),
}

impl From<PoolError> for UpstreamError {
    fn from(e: PoolError) -> UpstreamError {
        match e {
            PoolError::Busy => UpstreamError::Busy,
            e => UpstreamError::Pool(e),
        }
    }
}

/// The two regions' clients for `cfg`. With `running` (the configuration
/// and clients in use), a region whose settings did not change keeps its
/// client and its warm pool.
pub fn upstream_pair(
    cfg: &Config,
    resolver: &Arc<dyn Resolve>,
    running: Option<(&Config, &[Arc<Upstream>; 2])>,
) -> Result<[Arc<Upstream>; 2], ClientError> {
    let one = |region: Region| -> Result<Arc<Upstream>, ClientError> {
        let settings = |c: &Config| match region {
            Region::Primary => c.upstreams.primary.clone(),
            Region::Replica => c.upstreams.replica.clone(),
        };
        let wanted = settings(cfg);
        if let Some((old, clients)) = running {
            if settings(old) == wanted && old.retry.per_try_timeout == cfg.retry.per_try_timeout {
                return Ok(clients[region.index()].clone());
            }
        }
        Ok(Arc::new(Upstream::new(
            region,
            &wanted,
            cfg.retry.per_try_timeout,
            resolver.clone(),
        )?))
    };
    Ok([one(Region::Primary)?, one(Region::Replica)?])
}

/// The TLS half of a connector for `tls` (its roots, client certificate and
/// fixed server name); errors name `{section}.tls.*`. Shared by the
/// upstreams and the fleet's etcd client.
pub fn https_builder(
    section: &'static str,
    tls: Option<&UpstreamTls>,
) -> Result<HttpsConnectorBuilder<hyper_rustls::builderstates::WantsProtocols1>, ClientError> {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(section, tls)?)
        .https_or_http();
    Ok(match tls.and_then(|t| t.server_name.clone()) {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| {
                ClientError::Invalid {
                    section,
                    key: "tls.server_name",
                    message: format!("{name:?} is not a DNS name or IP address"),
                }
            })?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => builder,
    })
}

/// The connector for one region: DNS through failway's cache, TCP with
/// failway's timeouts, rustls with the region's TLS settings.
fn connector(
    region: Region,
    cfg: &UpstreamConfig,
    per_try_timeout: Duration,
    resolver: DnsResolver,
    ages: &Arc<Ages>,
) -> Result<Connector, ClientError> {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(per_try_timeout.min(MAX_CONNECT_TIMEOUT)));
    http.set_keepalive(Some(Duration::from_secs(30)));

    let builder = https_builder(section(region), cfg.tls.as_ref())?;
    let aged = AgedConnector::new(http, ages.clone());
    Ok(if cfg.http2 {
        builder.enable_all_versions().wrap_connector(aged)
    } else {
        builder.enable_http1().wrap_connector(aged)
    })
}

/// hyper-util's client, which carries HTTP/2 upstreams (`http2 = true`).
fn h2_client(cfg: &UpstreamConfig, connector: Connector) -> HttpClient {
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.pool_idle_timeout)
        .pool_max_idle_per_host(MAX_IDLE)
        // The read buffer for upstream responses; bodies stream through it,
        // so a large one only costs memory per connection.
        .http1_max_buf_size(UPSTREAM_BUF_SIZE);
    // Over plain HTTP there is no ALPN: `http2 = true` means prior knowledge.
    if cfg.http2 && !cfg.is_https() {
        b.http2_only(true);
    }
    b.build(connector)
}

/// The config section an upstream's errors name.
fn section(region: Region) -> &'static str {
    match region {
        Region::Primary => "upstreams.primary",
        Region::Replica => "upstreams.replica",
    }
}

/// A rustls client config for `tls` (platform roots plus `tls.ca`, and the
/// client certificate when set); errors name `{section}.tls.*`. Shared by the
/// upstreams and the fleet's etcd client.
pub fn tls_config(
    section: &'static str,
    tls: Option<&UpstreamTls>,
) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    // Platform roots; a machine without any still works with `tls.ca`.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let tls = tls.cloned().unwrap_or_default();
    if let Some(ca) = &tls.ca {
        for cert in read_certs(section, "ca", ca)? {
            roots.add(cert).map_err(|e| ClientError::Invalid {
                section,
                key: "tls.ca",
                message: format!("{}: {e}", ca.display()),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| ClientError::Tls { section, source })?
        .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(section, "client_cert", cert)?;
            let key = read_key(section, key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| ClientError::Tls { section, source })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(ClientError::Invalid {
            section,
            key: "tls.client_cert",
            message: "client_cert and client_key must be set together".into(),
        }),
    }
}

fn read_certs(
    section: &'static str,
    key: &'static str,
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|source| ClientError::Read {
        section,
        key,
        path: path.display().to_string(),
        source,
    })?;
    let invalid = |message: String| ClientError::Invalid {
        section,
        key: if key == "ca" {
            "tls.ca"
        } else {
            "tls.client_cert"
        },
        message,
    };
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("{}: not a PEM certificate: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("{}: holds no certificate", path.display())));
    }
    Ok(certs)
}

fn read_key(
    section: &'static str,
    path: &std::path::Path,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|source| ClientError::Read {
        section,
        key: "client_key",
        path: path.display().to_string(),
        source,
    })?;
    // The error names the file only: a key parse error must not echo key bytes.
    rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).map_err(|_| ClientError::Invalid {
        section,
        key: "tls.client_key",
        message: format!("{}: not a PEM private key", path.display()),
    })
}
