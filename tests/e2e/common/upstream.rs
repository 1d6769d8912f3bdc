//! A scriptable fake upstream for end-to-end tests.
//!
//! `FakeUpstream` listens on `127.0.0.1:0`, answers as its current
//! [`Behavior`] says, and records what it received twice over: every byte read
//! from every connection (exact even when the bytes are not valid HTTP), and
//! every request hyper parsed, once its body has fully arrived. Tests script it
//! with `set_behavior` while it runs and assert on the records; the counters
//! let them wait (with `eventually`) for connections or requests to show up.
//!
//! Normal answers go through a real hyper 1 server (HTTP/1.1 with keep-alive,
//! or h2c with prior knowledge), so framing is what a real upstream would send.
//! Failures that a service cannot express (resets, clean closes, garbage
//! answers) are carried out on the socket itself, which the connection task
//! keeps a handle to.
//!
//! Every task it spawns, including hyper's HTTP/2 stream tasks, lives in one
//! `JoinSet` that is aborted by `stop` or when the last handle is dropped, so
//! nothing outlives the test that made it.
//!
//! It deliberately does not do TLS, HTTP/1 pipelining tricks, or per-stream
//! resets on HTTP/2 (a reset or close behaviour ends the whole connection).
//! Header order in [`Recorded`] is hyper's `HeaderMap` order (values of a
//! repeated name grouped together); use `raw_bytes` for the exact wire order.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// Request bodies longer than this are recorded truncated (`body_len` keeps the
/// full length), so a large upload is not held in memory twice.
pub const MAX_RECORDED_BODY: usize = 1024 * 1024;

/// Frame size for streamed bodies (`Body::Repeat`).
const CHUNK: usize = 64 * 1024;

/// What `Behavior::Malformed` writes: a status line hyper and any sane client
/// reject.
pub const MALFORMED_RESPONSE: &[u8] = b"HTTP/1.1 abc\r\n\r\n";

/// One request as the fake parsed it, recorded once its body fully arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// HTTP/1: the request target as received (origin-form path and query);
    /// HTTP/2: the `:path` pseudo-header.
    pub uri: String,
    /// `HTTP/1.1`, `HTTP/1.0` or `HTTP/2.0`.
    pub version: String,
    /// Names lower-cased, values as received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, truncated to `MAX_RECORDED_BODY`.
    pub body: Vec<u8>,
    /// The full length of the body that arrived.
    pub body_len: usize,
}

impl Recorded {
    /// The first value of `name` (case-insensitive), lossily decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of `name` (case-insensitive), in received order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The recorded body, lossily decoded.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the fake treats the next connections and requests.
#[derive(Clone)]
pub enum Behavior {
    /// Answer with this response (the default is `200 ok`).
    Respond(Response),
    /// Wait, then answer.
    Delay(Duration, Response),
    /// Read and record the request, never answer, keep the connection open.
    Hang,
    /// Reset new connections at once (`SO_LINGER` 0) without reading. A
    /// request arriving on an already open connection resets that connection.
    ResetOnAccept,
    /// Close new connections cleanly (FIN) without answering. A request
    /// arriving on an already open connection closes that connection.
    CloseOnAccept,
    /// Read and record the request, then reset the connection.
    ResetAfterRequest,
    /// Read and record the request, then close the connection cleanly.
    CloseAfterRequest,
    /// Read and record the request, write `MALFORMED_RESPONSE`, then close.
    Malformed,
    /// `200` with the request body sent back and its content-type copied.
    Echo,
    /// Compute the answer from the recorded request.
    Script(Arc<dyn Fn(&Recorded) -> Response + Send + Sync>),
}

impl Behavior {
    pub fn script(f: impl Fn(&Recorded) -> Response + Send + Sync + 'static) -> Self {
        Behavior::Script(Arc::new(f))
    }
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior::Respond(Response::ok("ok"))
    }
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    /// `code` with an empty body. Panics on a code outside 100..=999, so a
    /// typo fails in the test rather than inside the fake.
    pub fn status(code: u16) -> Self {
        assert!(
            http::StatusCode::from_u16(code).is_ok(),
            "invalid status code {code}"
        );
        Response {
            status: code,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    /// `200` with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Response::status(200).with_body(Body::Bytes(body.into()))
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    fn into_http(self) -> http::Response<FakeBody> {
        let mut builder = http::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(FakeBody::from(self.body))
            .expect("scripted response has an invalid header name or value")
    }
}

/// A scripted body.
#[derive(Clone, Debug)]
pub enum Body {
    /// One frame, with a content-length.
    Bytes(Vec<u8>),
    /// `len` copies of `byte`, streamed in 64 KiB frames and never allocated
    /// whole; sent with a content-length.
    Repeat { byte: u8, len: usize },
    /// Each element a separate frame, no content-length (chunked on HTTP/1.1).
    Chunked(Vec<Vec<u8>>),
}

/// The `http_body::Body` behind [`Body`]; also usable as a client request body.
pub struct FakeBody {
    kind: BodyKind,
}

enum BodyKind {
    Frames {
        frames: VecDeque<Bytes>,
        /// `Some` when the length is announced up front.
        exact: Option<u64>,
    },
    Repeat {
        chunk: Bytes,
        remaining: usize,
    },
}

impl From<Body> for FakeBody {
    fn from(body: Body) -> Self {
        let kind = match body {
            Body::Bytes(bytes) => BodyKind::Frames {
                exact: Some(bytes.len() as u64),
                frames: VecDeque::from([Bytes::from(bytes)]),
            },
            Body::Repeat { byte, len } => BodyKind::Repeat {
                chunk: Bytes::from(vec![byte; len.min(CHUNK)]),
                remaining: len,
            },
            // An empty frame would read as the end of a chunked body.
            Body::Chunked(chunks) => BodyKind::Frames {
                frames: chunks
                    .into_iter()
                    .filter(|c| !c.is_empty())
                    .map(Bytes::from)
                    .collect(),
                exact: None,
            },
        };
        FakeBody { kind }
    }
}

impl FakeBody {
    fn frames(frames: Vec<Bytes>) -> Self {
        let len = frames.iter().map(|f| f.len() as u64).sum();
        FakeBody {
            kind: BodyKind::Frames {
                frames: frames.into_iter().filter(|f| !f.is_empty()).collect(),
                exact: Some(len),
            },
        }
    }
}

impl http_body::Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match &mut self.get_mut().kind {
            BodyKind::Frames { frames, exact } => {
                let frame = frames.pop_front();
                if let (Some(left), Some(f)) = (exact.as_mut(), &frame) {
                    *left -= f.len() as u64;
                }
                frame
            }
            BodyKind::Repeat { chunk, remaining } => {
                let n = (*remaining).min(chunk.len());
                *remaining -= n;
                (n > 0).then(|| chunk.slice(..n))
            }
        };
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Frames { frames, .. } => frames.is_empty(),
            BodyKind::Repeat { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Frames {
                exact: Some(len), ..
            } => SizeHint::with_exact(*len),
            BodyKind::Frames { exact: None, .. } => SizeHint::default(),
            BodyKind::Repeat { remaining, .. } => SizeHint::with_exact(*remaining as u64),
        }
    }
}

/// A handle to a running fake upstream; clones share it. The fake stops when
/// `stop` is called or the last handle is dropped.
#[derive(Clone)]
pub struct FakeUpstream {
    handle: Arc<Handle>,
}

struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(accept) = lock(&self.accept).take() {
            accept.abort();
        }
        lock(&self.shared.tasks).abort_all();
    }
}

/// State shared by the handle and every task.
#[derive(Default)]
struct Shared {
    behavior: Mutex<Behavior>,
    requests: Mutex<Vec<Recorded>>,
    raw: Mutex<Vec<u8>>,
    connections: AtomicUsize,
    open: AtomicUsize,
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        // Reap finished tasks so a long test does not accumulate them.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}

/// A poisoned lock only means another test task panicked; the data is still
/// what the fake recorded.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy)]
enum Proto {
    Http1,
    Http2,
}

impl FakeUpstream {
    /// An HTTP/1.1 fake (keep-alive on) answering `200 ok`.
    pub async fn start() -> FakeUpstream {
        Self::start_proto(Proto::Http1).await
    }

    /// An h2c (prior knowledge) fake answering `200 ok`.
    pub async fn start_h2() -> FakeUpstream {
        Self::start_proto(Proto::Http2).await
    }

    /// An HTTP/1.1 fake on a given address (to bring a refused port to life).
    pub async fn start_at(addr: SocketAddr) -> std::io::Result<FakeUpstream> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::serve(listener, Proto::Http1))
    }

    async fn start_proto(proto: Proto) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake upstream on 127.0.0.1:0");
        Self::serve(listener, proto)
    }

    fn serve(listener: TcpListener, proto: Proto) -> FakeUpstream {
        let addr = listener.local_addr().expect("fake upstream local addr");
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), proto));
        FakeUpstream {
            handle: Arc::new(Handle {
                addr,
                shared,
                accept: Mutex::new(Some(accept)),
            }),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.handle.addr)
    }

    /// Applies to connections accepted and requests arriving from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        *lock(&self.handle.shared.behavior) = behavior;
    }

    /// Every complete request, in the order their bodies finished arriving.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.handle.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.handle.shared.requests).len()
    }

    /// Every byte read on every connection, concatenated in arrival order.
    pub fn raw_bytes(&self) -> Vec<u8> {
        lock(&self.handle.shared.raw).clone()
    }

    pub fn raw_byte_count(&self) -> usize {
        lock(&self.handle.shared.raw).len()
    }

    /// TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.handle.shared.connections.load(Ordering::SeqCst)
    }

    /// TCP connections currently open on the fake's side.
    pub fn open_connections(&self) -> usize {
        self.handle.shared.open.load(Ordering::SeqCst)
    }

    /// Closes the listener (the port then refuses connections) and every open
    /// connection. Records stay readable.
    pub async fn stop(&self) {
        let accept = lock(&self.handle.accept).take();
        if let Some(accept) = accept {
            accept.abort();
            // Awaiting the cancelled task guarantees the listener is dropped.
            let _ = accept.await;
        }
        // A connection task being aborted may still spawn an HTTP/2 stream
        // task into the fresh set; loop until nothing is left.
        loop {
            let mut tasks = std::mem::take(&mut *lock(&self.handle.shared.tasks));
            if tasks.is_empty() {
                break;
            }
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, proto: Proto) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let open = OpenGuard::new(&shared);
        let behavior = lock(&shared.behavior).clone();
        let task_shared = Arc::clone(&shared);
        shared.spawn(async move {
            let _open = open;
            serve(stream, task_shared, proto, behavior).await;
        });
    }
}

/// Counts a connection as open until the task serving it ends or is aborted.
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(Arc::clone(shared))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a request handler asks the connection task to do to the socket.
enum Kill {
    Reset,
    Close,
    Malformed,
}

async fn serve(stream: TcpStream, shared: Arc<Shared>, proto: Proto, behavior: Behavior) {
    match behavior {
        Behavior::ResetOnAccept => return reset(stream),
        Behavior::CloseOnAccept => return close_cleanly(stream, &shared).await,
        _ => {}
    }

    // The connection task keeps its own reference so it can still reset,
    // close or write to the socket after dropping hyper's connection.
    let stream = Arc::new(stream);
    let io = TokioIo::new(RecordingIo {
        stream: Arc::clone(&stream),
        shared: Arc::clone(&shared),
    });
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<Kill>();
    let svc_shared = Arc::clone(&shared);
    let svc = service_fn(move |req| handle(Arc::clone(&svc_shared), kill_tx.clone(), req));

    let kill = match proto {
        Proto::Http1 => {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(io, svc);
            tokio::select! {
                _ = conn => None,
                kill = kill_rx.recv() => kill,
            }
        }
        Proto::Http2 => {
            let conn = http2::Builder::new(SetExecutor(Arc::clone(&shared)))
                .timer(TokioTimer::new())
                .serve_connection(io, svc);
            tokio::select! {
                _ = conn => None,
                kill = kill_rx.recv() => kill,
            }
        }
    };
    // hyper's connection, and with it its reference to the socket, is gone.
    let Some(kill) = kill else { return };
    let Ok(stream) = Arc::try_unwrap(stream) else {
        return;
    };
    match kill {
        Kill::Reset => reset(stream),
        Kill::Close => close_cleanly(stream, &shared).await,
        Kill::Malformed => {
            let mut stream = stream;
            if stream.write_all(MALFORMED_RESPONSE).await.is_ok() {
                close_cleanly(stream, &shared).await;
            }
        }
    }
}

/// Drops the socket with `SO_LINGER` 0, so the peer sees a RST.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Sends FIN, then reads (and records) until the peer closes. Dropping a
/// socket with unread input would send a RST instead of a clean close.
async fn close_cleanly(mut stream: TcpStream, shared: &Shared) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        lock(&shared.raw).extend_from_slice(&buf[..n]);
    }
}

async fn handle(
    shared: Arc<Shared>,
    kill_tx: mpsc::UnboundedSender<Kill>,
    req: http::Request<Incoming>,
) -> Result<http::Response<FakeBody>, hyper::Error> {
    let behavior = lock(&shared.behavior).clone();
    let keep_frames = matches!(behavior, Behavior::Echo);
    let content_type = req.headers().get(http::header::CONTENT_TYPE).cloned();
    let (recorded, frames) = receive(req, keep_frames).await?;

    let kill = match behavior {
        Behavior::Script(f) => {
            let response = f(&recorded);
            lock(&shared.requests).push(recorded);
            return Ok(response.into_http());
        }
        Behavior::Respond(response) => {
            lock(&shared.requests).push(recorded);
            return Ok(response.into_http());
        }
        Behavior::Delay(delay, response) => {
            lock(&shared.requests).push(recorded);
            tokio::time::sleep(delay).await;
            return Ok(response.into_http());
        }
        Behavior::Echo => {
            lock(&shared.requests).push(recorded);
            let mut response = http::Response::new(FakeBody::frames(frames));
            if let Some(ct) = content_type {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, ct);
            }
            return Ok(response);
        }
        Behavior::Hang => None,
        Behavior::ResetOnAccept | Behavior::ResetAfterRequest => Some(Kill::Reset),
        Behavior::CloseOnAccept | Behavior::CloseAfterRequest => Some(Kill::Close),
        Behavior::Malformed => Some(Kill::Malformed),
    };
    lock(&shared.requests).push(recorded);
    if let Some(kill) = kill {
        let _ = kill_tx.send(kill);
    }
    // Never answer; the connection task drops this future when it ends the
    // connection (HTTP/1) or this resolves once it has (HTTP/2 stream tasks).
    kill_tx.closed().await;
    Ok(http::Response::new(FakeBody::from(Body::Bytes(Vec::new()))))
}

/// Reads the whole request body; keeps the frames too when they are to be
/// sent back.
async fn receive(
    req: http::Request<Incoming>,
    keep_frames: bool,
) -> Result<(Recorded, Vec<Bytes>), hyper::Error> {
    let (parts, mut body) = req.into_parts();
    let uri = match parts.version {
        http::Version::HTTP_2 => parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.to_string()),
        _ => parts.uri.to_string(),
    };
    let mut recorded = Recorded {
        method: parts.method.as_str().to_owned(),
        uri,
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: Vec::new(),
        body_len: 0,
    };
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        recorded.body_len += data.len();
        let room = MAX_RECORDED_BODY.saturating_sub(recorded.body.len());
        recorded
            .body
            .extend_from_slice(&data[..data.len().min(room)]);
        if keep_frames {
            frames.push(data);
        }
    }
    Ok((recorded, frames))
}

/// The socket as hyper sees it: every byte read is also appended to the raw
/// log before hyper parses it.
struct RecordingIo {
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
}

impl AsyncRead for RecordingIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match self.stream.try_read(unfilled) {
                Ok(n) => {
                    lock(&self.shared.raw).extend_from_slice(&unfilled[..n]);
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; `try_read` cleared it, poll again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for RecordingIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The socket is shared, so it cannot be shut down from here; it closes
    /// when the connection task drops it right after hyper finishes.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs hyper's HTTP/2 stream tasks in the fake's `JoinSet`, so `stop` and
/// drop abort them with everything else.
#[derive(Clone)]
struct SetExecutor(Arc<Shared>);

impl<F> hyper::rt::Executor<F> for SetExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(async move {
            fut.await;
        });
    }
}
