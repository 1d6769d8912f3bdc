//! Upstream name resolution and connection ageing, so that a region whose
//! address changes (a private endpoint moved during disaster recovery) is
//! followed without a restart:
//! - [`DnsResolver`] caches each host's addresses for
//!   `upstreams.*.resolve_every` and re-resolves after that, in the
//!   background when only pooled connections are in use;
//! - [`AgedConnector`] stamps each new connection with its birth time;
//! - after each response the data path checks the connection it used
//!   ([`Staleness`]): older than `pool_max_lifetime`, or to an address the
//!   host no longer resolves to, and it is poisoned (never reused).
//!
//! [`Resolve`] is the seam tests use to control what a name resolves to.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpInfo};
use pin_project_lite::pin_project;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Turns a host name into addresses.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: String) -> BoxFuture<io::Result<Vec<IpAddr>>>;
}

/// The system resolver (getaddrinfo, through tokio).
pub struct SystemResolve;

impl Resolve for SystemResolve {
    fn resolve(&self, host: String) -> BoxFuture<io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

struct Entry {
    at: Instant,
    ips: Vec<IpAddr>,
    refreshing: bool,
}

/// A caching resolver with a fixed time to live.
#[derive(Clone)]
pub struct DnsResolver {
    inner: Arc<dyn Resolve>,
    ttl: Duration,
    cache: Arc<Mutex<HashMap<String, Entry>>>,
}

impl DnsResolver {
    pub fn new(inner: Arc<dyn Resolve>, ttl: Duration) -> DnsResolver {
        DnsResolver {
            inner,
            ttl,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        if let Ok(cache) = self.cache.lock() {
            if let Some(e) = cache.get(host) {
                if e.at.elapsed() < self.ttl && !e.ips.is_empty() {
                    return Ok(e.ips.clone());
                }
            }
        }
        let ips = self.inner.resolve(host.to_owned()).await?;
        if ips.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            ));
        }
        if let Ok(mut cache) = self.cache.lock() {
            let old = cache.insert(
                host.to_owned(),
                Entry {
                    at: Instant::now(),
                    ips: ips.clone(),
                    refreshing: false,
                },
            );
            if old.is_some_and(|o| o.ips != ips) {
                tracing::info!(
                    host,
                    ?ips,
                    "upstream address changed; connections to the old one are retired"
                );
            }
        }
        Ok(ips)
    }

    /// Whether `ip` is still an address of `host`. Unknown hosts (IP
    /// literals, never resolved) count as current. A cache entry past its
    /// time to live is refreshed in the background.
    fn is_current(&self, host: &str, ip: IpAddr) -> bool {
        let Ok(mut cache) = self.cache.lock() else {
            return true;
        };
        let Some(e) = cache.get_mut(host) else {
            return true;
        };
        if e.at.elapsed() >= self.ttl && !e.refreshing {
            e.refreshing = true;
            let this = self.clone();
            let host = host.to_owned();
            tokio::spawn(async move {
                if let Err(err) = this.lookup(&host).await {
                    tracing::warn!(host, error = %err, "re-resolving an upstream failed; keeping the last addresses");
                    if let Ok(mut cache) = this.cache.lock() {
                        if let Some(e) = cache.get_mut(&host) {
                            e.refreshing = false;
                            e.at = Instant::now();
                        }
                    }
                }
            });
        }
        e.ips.contains(&ip)
    }
}

impl tower::Service<Name> for DnsResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = BoxFuture<io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let ips = this.lookup(name.as_str()).await?;
            // The connector fills in the port.
            Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// When a connection was made; carried in the response's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Born(pub Instant);

pin_project! {
    /// A connection that knows its age.
    pub struct AgedIo<T> {
        #[pin]
        inner: T,
        born: Instant,
    }
}

impl<T: hyper::rt::Read> hyper::rt::Read for AgedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write> hyper::rt::Write for AgedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for AgedIo<T> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(Born(self.born))
    }
}

/// Wraps a connector so its connections carry [`Born`].
#[derive(Clone)]
pub struct AgedConnector<C> {
    inner: C,
}

impl<C> AgedConnector<C> {
    pub fn new(inner: C) -> Self {
        AgedConnector { inner }
    }
}

impl<C> tower::Service<http::Uri> for AgedConnector<C>
where
    C: tower::Service<http::Uri>,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
{
    type Response = AgedIo<C::Response>;
    type Error = C::Error;
    type Future = BoxFuture<Result<Self::Response, C::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let fut = self.inner.call(uri);
        Box::pin(async move {
            let inner = fut.await?;
            Ok(AgedIo {
                inner,
                born: Instant::now(),
            })
        })
    }
}

/// Decides whether a used connection should be retired.
#[derive(Clone)]
pub struct Staleness {
    pub resolver: DnsResolver,
    pub host: String,
    pub max_lifetime: Duration,
}

impl Staleness {
    /// Whether the connection behind `extensions` (a response's) must not be
    /// reused.
    pub fn is_stale(&self, extensions: &http::Extensions) -> bool {
        if let Some(Born(at)) = extensions.get::<Born>() {
            if at.elapsed() >= self.max_lifetime {
                return true;
            }
        }
        match extensions.get::<HttpInfo>() {
            Some(info) => !self
                .resolver
                .is_current(&self.host, info.remote_addr().ip()),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize, Mutex<Vec<IpAddr>>);
    impl Resolve for Arc<Counting> {
        fn resolve(&self, _: String) -> BoxFuture<io::Result<Vec<IpAddr>>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let ips = self.1.lock().unwrap().clone();
            Box::pin(async move { Ok(ips) })
        }
    }

    #[tokio::test]
    async fn caches_for_the_ttl_then_resolves_again() {
        let c = Arc::new(Counting(
            AtomicUsize::new(0),
            Mutex::new(vec!["10.0.0.1".parse().unwrap()]),
        ));
        let r = DnsResolver::new(Arc::new(c.clone()), Duration::from_millis(50));
        assert_eq!(
            r.lookup("kms").await.unwrap(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        r.lookup("kms").await.unwrap();
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert!(r.is_current("kms", "10.0.0.1".parse().unwrap()));
        *c.1.lock().unwrap() = vec!["10.0.0.2".parse().unwrap()];
        tokio::time::sleep(Duration::from_millis(60)).await;
        r.lookup("kms").await.unwrap();
        assert_eq!(c.0.load(Ordering::SeqCst), 2);
        assert!(!r.is_current("kms", "10.0.0.1".parse().unwrap()));
        assert!(r.is_current("unknown-host", "10.0.0.1".parse().unwrap()));
    }
}
