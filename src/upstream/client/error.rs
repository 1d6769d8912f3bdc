//! Upstream errors: what failed (the pool's or hyper-util's error), its
//! classification for the retry policy and passive health, and its text
//! for logs.
//!
//! Two failures are failway's own, not the region's: no connection slot
//! within the wait (`upstreams.*.max_connections`), and no socket because
//! the process ran out of file descriptors, socket buffers or memory
//! (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` while connecting). Neither sent
//! anything, and neither may count against the region.

use std::io;

use crate::upstream::body::BodyFailure;
use crate::upstream::pool::PoolError;

/// Why an upstream request got no response.
#[derive(Debug)]
pub enum UpstreamError {
    Pool(PoolError),
    Client(hyper_util::client::legacy::Error),
    /// Every connection the region's cap allows stayed busy for the wait.
    Busy,
}

impl UpstreamError {
    /// No connection was made, so nothing was sent.
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Pool(e) => matches!(e, PoolError::Connect(_) | PoolError::Busy),
            UpstreamError::Client(e) => e.is_connect(),
            UpstreamError::Busy => true,
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Pool(e) => e.fmt(f),
            UpstreamError::Client(e) => e.fmt(f),
            UpstreamError::Busy => f.write_str("no upstream connection was free in time"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Pool(e) => e.source(),
            UpstreamError::Client(e) => std::error::Error::source(e),
            UpstreamError::Busy => None,
        }
    }
}

/// Whether `io` carries a rustls error, however deeply: hyper-rustls wraps
/// the handshake's `io::Error` (which holds the `rustls::Error`) in another
/// `io::Error`, and `io::Error::source` skips both levels.
fn wraps_tls_error(io: &io::Error) -> bool {
    let mut inner = io.get_ref();
    for _ in 0..4 {
        let Some(e) = inner else { return false };
        if e.is::<rustls::Error>() {
            return true;
        }
        inner = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref);
    }
    false
}

/// The error and its causes on one line, for logs ("client error
/// (Connect): invalid peer certificate: UnknownIssuer"). `io::Error::source`
/// skips a wrapped error's own text, so those are followed by hand. Upstream
/// errors carry no request data.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let push = |text: String, out: &mut String| {
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    };
    let mut source = err.source();
    for _ in 0..8 {
        let Some(e) = source else { break };
        push(e.to_string(), &mut out);
        if let Some(io) = e.downcast_ref::<io::Error>() {
            let mut inner = io.get_ref();
            while let Some(i) = inner {
                push(i.to_string(), &mut out);
                inner = i.downcast_ref::<io::Error>().and_then(io::Error::get_ref);
            }
        }
        source = e.source();
    }
    out
}

/// What went wrong on an upstream attempt, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be made; nothing was sent.
    ConnectRefused,
    ConnectTimeout,
    TlsHandshake,
    /// h2 `REFUSED_STREAM`: the server did not process the request.
    RefusedStream,
    /// h2 `GOAWAY` below this stream's id: not processed.
    GoAway,
    /// The connection broke after the request (or part of it) was sent.
    Reset,
    /// The response could not be parsed.
    Malformed,
    /// The request body failed (limit, stall, client gone): not the upstream's fault.
    RequestBody,
    /// No connection slot within the wait; nothing was sent.
    Busy,
    /// failway could not make a socket; nothing was sent.
    LocalResources(LocalKind),
}

/// Which of failway's own resources ran out: the `kind` label of
/// `failway_local_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalKind {
    /// `EMFILE`, `ENFILE`: the process's or the system's open files.
    Fds,
    /// `ENOBUFS`: socket buffers.
    Buffers,
    /// `ENOMEM` while making a socket.
    Memory,
}

impl LocalKind {
    pub const ALL: [LocalKind; 3] = [LocalKind::Fds, LocalKind::Buffers, LocalKind::Memory];

    pub fn as_str(self) -> &'static str {
        match self {
            LocalKind::Fds => "fds",
            LocalKind::Buffers => "buffers",
            LocalKind::Memory => "memory",
        }
    }

    /// The kind an OS error reports, if it is one of failway's resources.
    /// `ENOMEM` and `ENOBUFS` count only while connecting: later they may
    /// come after request bytes left.
    pub fn of(err: &io::Error, connecting: bool) -> Option<LocalKind> {
        match err.raw_os_error()? {
            libc::EMFILE | libc::ENFILE => Some(LocalKind::Fds),
            libc::ENOBUFS if connecting => Some(LocalKind::Buffers),
            libc::ENOMEM if connecting => Some(LocalKind::Memory),
            _ => None,
        }
    }
}

/// The local resource `io` (or an `io::Error` it wraps) ran out of.
fn local_kind(io: &io::Error, connecting: bool) -> Option<LocalKind> {
    let mut next = Some(io);
    for _ in 0..4 {
        let e = next?;
        if let Some(kind) = LocalKind::of(e, connecting) {
            return Some(kind);
        }
        next = e.get_ref().and_then(|i| i.downcast_ref::<io::Error>());
    }
    None
}

impl UpstreamFailure {
    /// Classifies a client error by walking its source chain.
    pub fn classify(err: &UpstreamError) -> UpstreamFailure {
        if matches!(
            err,
            UpstreamError::Busy | UpstreamError::Pool(PoolError::Busy)
        ) {
            return UpstreamFailure::Busy;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
        let connect = err.is_connect();
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if let Some(kind) = local_kind(io, connect) {
                    return UpstreamFailure::LocalResources(kind);
                }
                if io.kind() == io::ErrorKind::TimedOut && connect {
                    return UpstreamFailure::ConnectTimeout;
                }
                if wraps_tls_error(io) {
                    return UpstreamFailure::TlsHandshake;
                }
            }
            if e.is::<rustls::Error>() {
                return UpstreamFailure::TlsHandshake;
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_parse() || h.is_parse_status() {
                    return UpstreamFailure::Malformed;
                }
                if h.is_user() {
                    return UpstreamFailure::RequestBody;
                }
            }
            if let Some(h2e) = e.downcast_ref::<h2::Error>() {
                if h2e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                    return UpstreamFailure::RefusedStream;
                }
                // h2 fails only the streams the server's GOAWAY left
                // unprocessed; those above its last stream id.
                if h2e.is_go_away() && h2e.is_remote() {
                    return UpstreamFailure::GoAway;
                }
            }
            if e.is::<BodyFailure>() {
                return UpstreamFailure::RequestBody;
            }
            source = e.source();
        }
        if connect {
            UpstreamFailure::ConnectRefused
        } else {
            UpstreamFailure::Reset
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_error(errno: i32) -> UpstreamError {
        let io = io::Error::from_raw_os_error(errno);
        UpstreamError::Pool(PoolError::Connect(Box::new(io)))
    }

    #[test]
    fn running_out_of_descriptors_buffers_or_memory_is_local() {
        for (errno, kind) in [
            (libc::EMFILE, LocalKind::Fds),
            (libc::ENFILE, LocalKind::Fds),
            (libc::ENOBUFS, LocalKind::Buffers),
            (libc::ENOMEM, LocalKind::Memory),
        ] {
            assert_eq!(
                UpstreamFailure::classify(&connect_error(errno)),
                UpstreamFailure::LocalResources(kind),
                "errno {errno}"
            );
        }
        // As hyper-util's connector reports it: wrapped in another io::Error.
        let wrapped = io::Error::other(io::Error::from_raw_os_error(libc::EMFILE));
        let err = UpstreamError::Pool(PoolError::Connect(Box::new(wrapped)));
        assert_eq!(
            UpstreamFailure::classify(&err),
            UpstreamFailure::LocalResources(LocalKind::Fds)
        );
    }

    #[test]
    fn a_refused_connection_and_a_busy_pool_keep_their_meaning() {
        assert_eq!(
            UpstreamFailure::classify(&connect_error(libc::ECONNREFUSED)),
            UpstreamFailure::ConnectRefused
        );
        assert_eq!(
            UpstreamFailure::classify(&UpstreamError::Busy),
            UpstreamFailure::Busy
        );
        assert_eq!(
            UpstreamFailure::classify(&UpstreamError::Pool(PoolError::Busy)),
            UpstreamFailure::Busy
        );
        // Memory and buffers after sending are the connection's fate.
        assert_eq!(
            LocalKind::of(&io::Error::from_raw_os_error(libc::ENOMEM), false),
            None
        );
    }
}
