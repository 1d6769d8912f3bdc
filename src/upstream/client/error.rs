//! Upstream errors: what failed (the pool's or hyper-util's error), its
//! classification for the retry policy and passive health, and its text
//! for logs.
//!
//! No connection slot within the wait (`upstreams.*.max_connections`) is
//! failway's own failure, not the region's: nothing was sent, and it may
//! not count against the region.

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

    #[test]
    fn a_busy_pool_is_no_connect_error() {
        assert_eq!(
            UpstreamFailure::classify(&UpstreamError::Busy),
            UpstreamFailure::Busy
        );
        assert_eq!(
            UpstreamFailure::classify(&UpstreamError::Pool(PoolError::Busy)),
            UpstreamFailure::Busy
        );
    }
}
