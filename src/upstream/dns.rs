//! Upstream name resolution and connection ageing, so that a region whose
//! address changes (a private endpoint moved during disaster recovery) is
//! followed without a restart:
//! - [`DnsResolver`] caches each host's addresses for
//!   `upstreams.*.resolve_every` and re-resolves after that, in the
//!   background when only pooled connections are in use;
//! - [`AgedConnector`] stamps each new connection with its birth time;
//! - after a response the data path checks the connection it used
//!   ([`Staleness`]): older than `pool_max_lifetime`, or to an address the
//!   host no longer resolves to, and it is poisoned (never reused);
//! - [`Ages`] knows when such a check can find anything (the oldest live
//!   connection's lifetime ends, the cached addresses expire, or they changed
//!   while older connections live), so that the per-request cost of looking
//!   at the connection (a channel and two allocations) is paid only then.
//!
//! [`Resolve`] is the seam tests use to control what a name resolves to.
// Connection ages and DNS expiry run on the real monotonic clock, as
// hyper's own pool does: no paused-time test holds a pooled connection.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
    ages: Arc<Ages>,
}

impl DnsResolver {
    pub fn new(inner: Arc<dyn Resolve>, ttl: Duration, ages: Arc<Ages>) -> DnsResolver {
        DnsResolver {
            inner,
            ttl,
            cache: Arc::new(Mutex::new(HashMap::new())),
            ages,
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
            let now = Instant::now();
            let old = cache.insert(
                host.to_owned(),
                Entry {
                    at: now,
                    ips: ips.clone(),
                    refreshing: false,
                },
            );
            let changed = old.is_some_and(|o| o.ips != ips);
            if changed {
                tracing::info!(
                    host,
                    ?ips,
                    "upstream address changed; connections to the old one are retired"
                );
            }
            self.ages.resolved(now, now + self.ttl, changed);
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
                            let now = Instant::now();
                            e.refreshing = false;
                            e.at = now;
                            this.ages.resolved(now, now + this.ttl, false);
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
        _life: Life,
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
    ages: Arc<Ages>,
}

impl<C> AgedConnector<C> {
    pub fn new(inner: C, ages: Arc<Ages>) -> Self {
        AgedConnector { inner, ages }
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
        // Registered from the start of the connect: one that resolved the
        // old addresses just before a change still counts as older than it.
        let life = Ages::register(&self.ages, Instant::now());
        let fut = self.inner.call(uri);
        Box::pin(async move {
            let inner = fut.await?;
            Ok(AgedIo {
                inner,
                born: Instant::now(),
                _life: life,
            })
        })
    }
}

/// The live connections' ages and the address cache's timing, kept so the
/// data path can tell in one atomic load whether a connection check may find
/// anything.
pub struct Ages {
    base: Instant,
    max_lifetime: Duration,
    state: Mutex<AgesState>,
    /// Milliseconds since `base` from which checks are due.
    check_from: AtomicU64,
}

#[derive(Default)]
struct AgesState {
    /// Connect start (ms since `base`) -> live connections started then.
    live: BTreeMap<u64, usize>,
    /// When the cached addresses expire (a check starts the refresh).
    dns_due: Option<u64>,
    /// When the addresses last changed.
    dns_changed: Option<u64>,
}

impl Ages {
    pub fn new(max_lifetime: Duration) -> Arc<Ages> {
        Arc::new(Ages {
            base: Instant::now(),
            max_lifetime,
            state: Mutex::new(AgesState::default()),
            check_from: AtomicU64::new(u64::MAX),
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// Whether a response arriving now must have its connection checked.
    pub fn check_due(&self, now: Instant) -> bool {
        self.ms(now) >= self.check_from.load(Ordering::Relaxed)
    }

    fn register(this: &Arc<Ages>, started: Instant) -> Life {
        let at = this.ms(started);
        this.update(|s| *s.live.entry(at).or_default() += 1);
        Life {
            ages: this.clone(),
            at,
        }
    }

    fn resolved(&self, now: Instant, due: Instant, changed: bool) {
        let (now, due) = (self.ms(now), self.ms(due));
        self.update(|s| {
            s.dns_due = Some(due);
            if changed {
                s.dns_changed = Some(now);
            }
        });
    }

    fn update(&self, f: impl FnOnce(&mut AgesState)) {
        let Ok(mut s) = self.state.lock() else {
            // Poisoned: check every response rather than miss one.
            self.check_from.store(0, Ordering::Relaxed);
            return;
        };
        f(&mut s);
        let oldest = s.live.keys().next().copied();
        let lifetime = self.max_lifetime.as_millis().min(u128::from(u64::MAX)) as u64;
        let mut from = u64::MAX;
        if let Some(o) = oldest {
            from = from.min(o.saturating_add(lifetime));
            if s.dns_changed.is_some_and(|c| o <= c) {
                from = 0;
            }
        }
        if let Some(d) = s.dns_due {
            from = from.min(d);
        }
        self.check_from.store(from, Ordering::Relaxed);
    }
}

/// A live connection's entry in [`Ages`], removed when it closes.
struct Life {
    ages: Arc<Ages>,
    at: u64,
}

impl Drop for Life {
    fn drop(&mut self) {
        let at = self.at;
        self.ages.update(|s| {
            if let Some(n) = s.live.get_mut(&at) {
                *n -= 1;
                if *n == 0 {
                    s.live.remove(&at);
                }
            }
        });
    }
}

/// Decides whether a used connection should be retired.
#[derive(Clone)]
pub struct Staleness {
    pub resolver: DnsResolver,
    pub host: String,
    /// Holds `pool_max_lifetime` too.
    pub ages: Arc<Ages>,
}

impl Staleness {
    /// Whether the connection behind `extensions` (a response's) must not be
    /// reused.
    pub fn is_stale(&self, extensions: &http::Extensions) -> bool {
        let now = Instant::now();
        let born = extensions.get::<Born>().map_or(now, |b| b.0);
        let remote = extensions.get::<HttpInfo>().map(|i| i.remote_addr().ip());
        self.is_stale_at(born, remote, now)
    }

    /// Whether a connection made at `born` to `remote` must not be reused.
    pub fn is_stale_at(&self, born: Instant, remote: Option<IpAddr>, now: Instant) -> bool {
        now.saturating_duration_since(born) >= self.ages.max_lifetime
            || remote.is_some_and(|ip| !self.resolver.is_current(&self.host, ip))
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

    #[test]
    fn connection_checks_are_due_only_when_one_may_be_stale() {
        let ages = Ages::new(Duration::from_secs(10));
        let at = |s: u64| ages.base + Duration::from_secs(s);
        assert!(!ages.check_due(at(1000)), "no connection, nothing resolved");
        let a = Ages::register(&ages, at(1));
        assert!(!ages.check_due(at(10)));
        assert!(
            ages.check_due(at(11)),
            "the oldest reached pool_max_lifetime"
        );
        let b = Ages::register(&ages, at(5));
        drop(a);
        assert!(!ages.check_due(at(14)));
        assert!(ages.check_due(at(15)));
        ages.resolved(at(6), at(36), false);
        assert!(
            !ages.check_due(at(14)),
            "an unchanged answer changes nothing"
        );
        ages.resolved(at(7), at(37), true);
        assert!(ages.check_due(at(7)), "addresses changed while b lives");
        drop(b);
        let c = Ages::register(&ages, at(8));
        assert!(!ages.check_due(at(17)), "c was made after the change");
        assert!(ages.check_due(at(18)));
        drop(c);
        assert!(!ages.check_due(at(36)));
        assert!(ages.check_due(at(37)), "the cached addresses expire");
    }

    #[tokio::test]
    async fn caches_for_the_ttl_then_resolves_again() {
        let c = Arc::new(Counting(
            AtomicUsize::new(0),
            Mutex::new(vec!["10.0.0.1".parse().unwrap()]),
        ));
        let ages = Ages::new(Duration::from_secs(300));
        let r = DnsResolver::new(Arc::new(c.clone()), Duration::from_millis(50), ages.clone());
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
