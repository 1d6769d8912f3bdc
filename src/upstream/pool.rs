//! A region's HTTP/1.1 connections: hyper `conn::http1` senders kept in a
//! LIFO idle list, used one request at a time.
//!
//! It replaces hyper-util's general pool on the data path because that one
//! costs about a sixth of a proxied request's instructions (hashing its pool
//! key twice, racing a checkout against a connect, boxing each request),
//! and because knowing each connection here lets failway retire it (past
//! `pool_max_lifetime`, or to an address the host no longer resolves to)
//! without looking at every response.
//!
//! Connections are capped per region (`upstreams.*.max_connections`): a
//! connection holds one of [`H1Pool`]'s permits from its connect until it
//! closes, pooled or busy, so a fan-out of client streams cannot open more
//! (each one an open file). A request takes a pooled connection or a permit
//! ([`H1Pool::reserve`]), waiting a bounded time for either: a connection
//! coming back to the pool is handed to a waiter, and at the cap an idle
//! connection a write may not use is closed to make room. Health probes do
//! not wait ([`H1Pool::reserve_now`]): past the cap a probe gets a connection
//! of its own, closed after its answer, so a full pool is not read as a
//! region down.
//!
//! Rules, as hyper-util's pool keeps them:
//! - a request that a pooled connection closed before sending any of it
//!   (hyper hands it back) is sent again on another connection; once bytes
//!   left, the error goes to the caller, whose retry policy decides;
//! - a connection goes back to the pool only once its response has been
//!   read to the end (hyper says it is ready again);
//! - idle connections are closed after `pool_idle_timeout`, most recently
//!   used first out, so the least used ones age out;
//! - a connection past `pool_max_lifetime`, or to an address its host no
//!   longer resolves to, is closed instead of being pooled or taken;
//! - a region's `Keep-Alive: timeout=N` is learned per connection, which is
//!   then retired before the region closes it (`keep_alive_margin`);
//! - a request marked [`FreshAfterIdle`] (a write: it cannot be sent twice)
//!   takes a pooled connection only if it was idle for less than
//!   [`WRITE_REUSE_IDLE`] (or what the region announced): a region closing
//!   an idle connection just as the request reaches it would leave the
//!   write's outcome unknown.
// Idle times and lifetimes run on the real monotonic clock, as hyper's
// own pool does: no paused-time test holds a pooled connection.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::{Connection, HttpInfo};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use super::client::{Connector, RequestBody};
use super::dns::Staleness;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response.
#[derive(Debug)]
pub enum PoolError {
    /// No connection could be made (refused, timed out, TLS).
    Connect(BoxError),
    /// The connection failed while the request was sent or answered.
    Send(hyper::Error),
    /// Every connection the cap allows stayed busy for the whole wait;
    /// nothing was sent.
    Busy,
}

/// Marks a request that must not risk a connection the region may be
/// closing: it takes a fresh connection after idleness (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct FreshAfterIdle;

/// How long a connection may idle and still carry a write when the region
/// did not say how long it keeps connections open.
pub const WRITE_REUSE_IDLE: Duration = Duration::from_secs(1);

/// A connection's identity, kept for the retirement check.
#[derive(Clone, Copy)]
struct Meta {
    born: Instant,
    remote: Option<IpAddr>,
    /// How long the region keeps it open while idle, less a margin, when
    /// it said so (`Keep-Alive: timeout=`).
    idle_limit: Option<Duration>,
}

impl Meta {
    fn usable_idle(&self, pool_idle: Duration) -> Duration {
        self.idle_limit.map_or(pool_idle, |l| l.min(pool_idle))
    }

    fn write_idle(&self) -> Duration {
        self.idle_limit.unwrap_or(WRITE_REUSE_IDLE)
    }
}

/// The idle time a region announced in `Keep-Alive: timeout=N` (seconds),
/// less a margin for the race: min(1 s, N/2).
fn keep_alive_limit(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("keep-alive")?.to_str().ok()?;
    let secs: u64 = v.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| v.trim().parse().ok())
            .flatten()
    })?;
    let announced = Duration::from_secs(secs);
    Some(announced - (announced / 2).min(Duration::from_secs(1)))
}

/// A pooled connection.
pub struct Idle {
    tx: http1::SendRequest<RequestBody>,
    meta: Meta,
    since: Instant,
}

/// Room for one request: what [`H1Pool::send`] sends it on.
pub enum Slot {
    /// A pooled connection, ready for a request.
    Pooled(Idle),
    /// Room under the cap for a new connection.
    New(OwnedSemaphorePermit),
    /// A probe's connection past the cap, closed after its answer.
    Extra,
}

struct Inner {
    connector: Connector,
    target: Uri,
    idle: Mutex<VecDeque<Idle>>,
    idle_timeout: Duration,
    max_idle: usize,
    max_buf_size: usize,
    staleness: Staleness,
    /// One permit per connection open, pooled or busy.
    permits: Arc<Semaphore>,
    /// Signalled when a connection goes back to the pool.
    returned: Notify,
    /// How long a request waits for a connection when none is free.
    wait: Duration,
}

/// One region's HTTP/1.1 connection pool.
#[derive(Clone)]
pub struct H1Pool {
    inner: Arc<Inner>,
}

impl H1Pool {
    pub fn new(
        connector: Connector,
        target: Uri,
        limits: PoolLimits,
        staleness: Staleness,
    ) -> H1Pool {
        let idle_timeout = limits.idle_timeout;
        let inner = Arc::new(Inner {
            connector,
            target,
            idle: Mutex::new(VecDeque::new()),
            idle_timeout,
            max_idle: limits.max_idle.min(limits.max_connections),
            max_buf_size: limits.max_buf_size,
            staleness,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            returned: Notify::new(),
            wait: limits.wait,
        });
        spawn_reaper(Arc::downgrade(&inner), idle_timeout);
        H1Pool { inner }
    }

    /// A pooled connection this request may use, or room for a new one,
    /// waiting until `until` at most (then [`PoolError::Busy`]). `write`:
    /// the request must not risk a connection idle for long.
    pub async fn reserve(
        &self,
        write: bool,
        until: tokio::time::Instant,
    ) -> Result<Slot, PoolError> {
        if let Some(slot) = self.inner.try_reserve(write) {
            return Ok(slot);
        }
        // Boxed, as connecting is below: rare paths kept out of the future
        // every request moves (its size is that of its largest path).
        tokio::time::timeout_at(until, Box::pin(self.inner.wait_for_slot(write)))
            .await
            .unwrap_or(Err(PoolError::Busy))
    }

    /// A slot without waiting, for health probes: past the cap, a
    /// connection outside it.
    pub fn reserve_now(&self) -> Slot {
        self.inner.try_reserve(false).unwrap_or(Slot::Extra)
    }

    /// Sends `req` (its URI absolute, as the rest of failway builds it) on
    /// a pooled connection or a new one, without waiting for room.
    pub async fn request(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, PoolError> {
        self.send_on(self.reserve_now(), req, false).await
    }

    /// Sends `req` on `slot`. Not an async fn of its own: every async
    /// layer keeps a copy of its arguments (the request) for its whole life
    /// and is moved whole into its caller's state.
    pub fn send(
        &self,
        slot: Slot,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, PoolError>> + Send + '_ {
        self.send_on(slot, req, true)
    }

    /// `may_wait`: a pooled connection found closed is replaced by waiting
    /// for room if need be (else as [`H1Pool::reserve_now`] does).
    async fn send_on(
        &self,
        mut slot: Slot,
        mut req: Request<RequestBody>,
        may_wait: bool,
    ) -> Result<Response<Incoming>, PoolError> {
        // HTTP/1.1 to an origin carries the origin form of the target.
        let origin_form = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(origin_form);
        let write = req.extensions().get::<FreshAfterIdle>().is_some();
        loop {
            let (mut tx, mut meta, reused, pooled) = match slot {
                Slot::Pooled(idle) => (idle.tx, idle.meta, true, true),
                // Connecting is rare next to reusing; boxed, its large future
                // is not part of every request's.
                Slot::New(permit) => {
                    let (tx, meta) = Box::pin(self.inner.connect(Some(permit))).await?;
                    (tx, meta, false, true)
                }
                Slot::Extra => {
                    let (tx, meta) = Box::pin(self.inner.connect(None)).await?;
                    (tx, meta, false, false)
                }
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    if let Some(limit) = keep_alive_limit(resp.headers()) {
                        meta.idle_limit = Some(limit);
                    }
                    if pooled {
                        self.inner.clone().release(tx, meta);
                    }
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Closed before any of it was sent: another connection.
                    Some(back) if reused => {
                        req = back;
                        slot = if may_wait {
                            let until = tokio::time::Instant::now() + self.inner.wait;
                            Box::pin(self.reserve(write, until)).await?
                        } else {
                            self.reserve_now()
                        };
                    }
                    _ => return Err(PoolError::Send(e.into_error())),
                },
            }
        }
    }
}

/// A pool's bounds.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Connections open at most, pooled or busy.
    pub max_connections: usize,
    /// How long a request waits for a connection when none is free.
    pub wait: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// The read buffer of each connection.
    pub max_buf_size: usize,
}

impl Inner {
    /// A pooled connection, else a permit for a new one, if either is free.
    fn try_reserve(&self, write: bool) -> Option<Slot> {
        if let Some(idle) = self.checkout(write) {
            return Some(Slot::Pooled(idle));
        }
        self.permits.clone().try_acquire_owned().ok().map(Slot::New)
    }

    /// Waits for a connection to come back to the pool or for room for a
    /// new one, whichever is first.
    async fn wait_for_slot(&self, write: bool) -> Result<Slot, PoolError> {
        loop {
            // Registered before looking, so a return in between is seen.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(slot) = self.try_reserve(write) {
                return Ok(slot);
            }
            // At the cap, idle connections this request may not take (a
            // write after idleness) make room: one closes, its permit follows.
            self.close_oldest_idle();
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    return permit.map(Slot::New).map_err(|_| PoolError::Busy);
                }
                () = &mut returned => {}
            }
        }
    }

    fn close_oldest_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.pop_front();
        }
    }

    /// The most recently used connection that can take a request; a write
    /// gets none if even that one idled too long for it (the others idled
    /// longer), and leaves the pool as it is for reads.
    fn checkout(&self, write: bool) -> Option<Idle> {
        let now = Instant::now();
        let mut idle = self.idle.lock().ok()?;
        while let Some(i) = idle.back() {
            let idle_for = now.duration_since(i.since);
            if !i.tx.is_ready()
                || idle_for >= i.meta.usable_idle(self.idle_timeout)
                || self.retire(i.meta, now)
            {
                idle.pop_back();
                continue;
            }
            if write && idle_for >= i.meta.write_idle() {
                return None;
            }
            return idle.pop_back();
        }
        None
    }

    /// Connects; the connection holds `permit` (when under the cap) until
    /// it closes.
    async fn connect(
        &self,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(http1::SendRequest<RequestBody>, Meta), PoolError> {
        let started = Instant::now();
        let io = self
            .connector
            .clone()
            .oneshot(self.target.clone())
            .await
            .map_err(PoolError::Connect)?;
        let mut extensions = http::Extensions::new();
        io.connected().get_extras(&mut extensions);
        let meta = Meta {
            born: started,
            remote: extensions.get::<HttpInfo>().map(|i| i.remote_addr().ip()),
            idle_limit: None,
        };
        let (tx, conn) = http1::Builder::new()
            .max_buf_size(self.max_buf_size)
            .handshake(io)
            .await
            .map_err(PoolError::Send)?;
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok((tx, meta))
    }

    /// Returns the connection to the pool once it can take a request again:
    /// at once when the whole response is already read, else from a task
    /// that waits for the body to be read to the end.
    fn release(self: Arc<Self>, mut tx: http1::SendRequest<RequestBody>, meta: Meta) {
        if self.retire(meta, Instant::now()) {
            return;
        }
        if tx.is_ready() {
            self.put(tx, meta);
            return;
        }
        tokio::spawn(async move {
            if tx.ready().await.is_ok() {
                self.put(tx, meta);
            }
        });
    }

    fn retire(&self, meta: Meta, now: Instant) -> bool {
        let s = &self.staleness;
        s.ages.check_due(now) && s.is_stale_at(meta.born, meta.remote, now)
    }

    fn put(&self, tx: http1::SendRequest<RequestBody>, meta: Meta) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.push_back(Idle {
            tx,
            meta,
            since: Instant::now(),
        });
        while idle.len() > self.max_idle {
            idle.pop_front();
        }
        drop(idle);
        self.returned.notify_one();
    }

    /// Closes idle connections past `idle_timeout` (the oldest are first).
    fn reap(&self) {
        let now = Instant::now();
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        while idle
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= self.idle_timeout || i.tx.is_closed())
        {
            idle.pop_front();
        }
        // Those the region said it closes sooner, wherever they stand.
        idle.retain(|i| now.duration_since(i.since) < i.meta.usable_idle(self.idle_timeout));
    }
}

/// Runs while the pool lives (a reload drops the old one).
fn spawn_reaper(pool: Weak<Inner>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match pool.upgrade() {
                Some(p) => p.reap(),
                None => return,
            }
        }
    });
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Connect(_) => f.write_str("connecting to the upstream failed"),
            PoolError::Send(_) => f.write_str("sending the request upstream failed"),
            PoolError::Busy => f.write_str("no upstream connection was free in time"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Connect(e) => Some(e.as_ref()),
            PoolError::Send(e) => Some(e),
            PoolError::Busy => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(v: &str) -> Option<Duration> {
        let mut h = http::HeaderMap::new();
        h.insert("keep-alive", v.parse().unwrap());
        keep_alive_limit(&h)
    }

    #[test]
    fn an_announced_keep_alive_is_kept_with_a_margin() {
        assert_eq!(limit("timeout=5, max=1000"), Some(Duration::from_secs(4)));
        assert_eq!(
            limit("max=10, Timeout = 1"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(limit("timeout=75"), Some(Duration::from_secs(74)));
        assert_eq!(limit("timeout=0"), Some(Duration::ZERO));
        assert_eq!(limit("max=5"), None);
        assert_eq!(limit("timeout=soon"), None);
        assert_eq!(keep_alive_limit(&http::HeaderMap::new()), None);
    }
}
