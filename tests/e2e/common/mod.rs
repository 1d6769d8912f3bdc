//! Shared end-to-end test harness: fake upstreams, deadline-bounded waiting,
//! and a raw-socket client for asserting on bytes a well-behaved client would
//! hide (framing, resets, garbage).
//!
//! Waiting is always a poll with a deadline, never a fixed sleep: a slow
//! machine makes a test slower, not flaky. It deliberately offers no HTTP
//! client of its own; tests use hyper's, or `raw_exchange` for wire detail.

#![allow(dead_code)]

pub mod etcd;
pub mod failway;
pub mod process;
pub mod tls_upstream;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const POLL_EVERY: Duration = Duration::from_millis(10);

/// Polls `f` every 10 ms until it returns true; panics naming `what` once
/// `timeout` has passed.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, what: &str, mut f: F) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Like [`eventually`] for an async check; a check still running at the
/// deadline counts as a failure too.
pub async fn eventually_async<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(true) = tokio::time::timeout_at(deadline, f()).await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// What came back on a raw connection.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// Every byte received, unparsed.
    pub bytes: Vec<u8>,
    /// The server closed the connection cleanly (EOF seen).
    pub closed: bool,
    /// The connection was reset (or failed otherwise) while writing or reading.
    pub reset: bool,
}

impl RawResponse {
    /// The status code from the first line, if it is a valid HTTP status line.
    pub fn status(&self) -> Option<u16> {
        let head = self.head();
        let line = head.lines().next()?;
        let mut parts = line.splitn(3, ' ');
        if !parts.next()?.starts_with("HTTP/") {
            return None;
        }
        let code = parts.next()?;
        if code.len() != 3 {
            return None;
        }
        code.parse().ok()
    }

    /// The first response's head (status line and headers) without the blank
    /// line, lossily decoded; everything received if the head never ended.
    pub fn head(&self) -> String {
        let end = find(&self.bytes, b"\r\n\r\n").unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    /// The first value of header `name` (case-insensitive) in the first
    /// response's head.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head().lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// Everything after the first response's head, as sent (not de-chunked).
    pub fn body(&self) -> &[u8] {
        match find(&self.bytes, b"\r\n\r\n") {
            Some(end) => &self.bytes[end + 4..],
            None => &[],
        }
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(self.body()).into_owned()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Connects to `addr`, writes `request` as is, and reads until the server
/// closes the connection or `timeout` passes. Panics if it cannot connect
/// (a reset that arrives before `connect` returns counts as `reset`).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawResponse {
    let deadline = Instant::now() + timeout;
    let mut response = RawResponse {
        bytes: Vec::new(),
        closed: false,
        reset: false,
    };
    let connected = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} timed out"));
    let mut stream = match connected {
        Ok(stream) => stream,
        // A server that resets on accept can do so before `connect` returns.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            response.reset = true;
            return response;
        }
        Err(e) => panic!("connecting to {addr}: {e}"),
    };
    // A server that resets early makes the write fail; what it sent before
    // is still worth reading.
    if stream.write_all(request).await.is_err() {
        response.reset = true;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) => {
                response.closed = true;
                break;
            }
            Ok(Ok(n)) => response.bytes.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => {
                response.reset = true;
                break;
            }
        }
    }
    response
}

/// Whether `program` (a name on PATH or a path) is installed. When it is
/// not, a test skips with a message on a developer's machine, but fails in
/// CI (`CI=true`), where `.ci/run` installs it, so no check is skipped
/// silently there. `install` says how to get it.
pub fn tool_available(program: &str, install: &str) -> bool {
    let found = if program.contains('/') {
        std::path::Path::new(program).exists()
    } else {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
        })
    };
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{program} is required in CI and is missing; {install}");
    }
    skipped(&format!(
        "{program} is not installed ({install}); `bash tests/ci/install-tools.sh` installs it"
    ));
    false
}

/// Says on stderr why a test returns without checking anything, as a line
/// `skipped: WHY` that `.ci/run` counts. Written to the process's stderr
/// itself, not through `eprintln!`, which the test harness captures and
/// shows only for failures or with `--nocapture`.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// The labels of a sample written `name{k="v",...}`, and its name.
fn parse_sample(s: &str) -> (&str, Vec<(&str, &str)>) {
    let Some((name, rest)) = s.split_once('{') else {
        return (s.trim(), Vec::new());
    };
    let body = rest.trim_end().trim_end_matches('}');
    let labels = body
        .split("\",")
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once("=\""))
        .map(|(k, v)| (k.trim(), v.trim_end_matches('"')))
        .collect();
    (name, labels)
}

/// The value of `sample` (`name` or `name{k="v",...}`) in a Prometheus
/// text exposition: the sum of the series of that name whose labels
/// include the ones given (so a test names only the labels it is about,
/// `service` among them when it matters); `None` when no series matches.
pub fn sample_value(text: &str, sample: &str) -> Option<f64> {
    let (name, wanted) = parse_sample(sample);
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, labels) = parse_sample(series);
        if n == name && wanted.iter().all(|w| labels.contains(w)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    found
}

/// Reads one HTTP/1 response head from `s` (within 10 s) and returns its
/// status code; panics if none came.
pub async fn read_status(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no response head in {text:?}"))
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
