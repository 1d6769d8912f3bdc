//! hyper's HTTP/1.1 and HTTP/2 server builders, each limit set explicitly,
//! and which of the two a client connection gets: ALPN over TLS, the first
//! bytes (the h2 preface or not) on plain TCP.
//!
//! failway picks the protocol itself rather than through hyper-util's
//! `auto` builder: `auto` hands hyper's HTTP/1.1 reader the bytes it sniffed
//! as a first short read, which makes hyper double its read buffer to 16 KiB
//! on every connection, and its connection state holds an HTTP/2
//! connection's size on every HTTP/1.1 connection.

use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use tokio::net::TcpStream;

use super::server::ServerSettings;
use super::stall::StreamExec;

/// h2: streams a client may open at once on one connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// h2: streams reset before the server accepted them (rapid-reset defence).
const H2_MAX_PENDING_ACCEPT_RESET: usize = 50;
/// h2: streams failway itself reset for protocol errors before it gives up
/// on the connection (CVE-2024-2758-style floods).
const H2_MAX_LOCAL_ERROR_RESET: usize = 256;
const H2_MAX_SEND_BUF: usize = 256 * 1024;
/// hyper parses up to this many header lines in arrays on the stack.
const HYPER_INLINE_HEADERS: usize = 100;

/// What an h2 client without TLS sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a client connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// Both server builders, configured once per listener.
pub(crate) struct Builders {
    pub h1: http1::Builder,
    pub h2: http2::Builder<StreamExec>,
}

impl Builders {
    pub fn new(s: &ServerSettings) -> Builders {
        // hyper answers 431 by itself past these; failway's own check (the
        // configured limits, rendered in the profile's format) comes first,
        // so hyper's are a hard ceiling above them. The header count is the
        // exception up to hyper's default of 100: a higher ceiling makes
        // hyper allocate its parse arrays on every request (about 10 KB, 2
        // allocations), so with `max_headers` <= 100 a request over 100
        // header lines gets hyper's own bare 431.
        let hard_header_bytes = (s.max_header_bytes * 2).max(8192) as usize;
        let hard_headers = if s.max_headers <= HYPER_INLINE_HEADERS {
            HYPER_INLINE_HEADERS
        } else {
            s.max_headers.saturating_mul(2)
        };
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // Tracked by failway itself (conn.rs): hyper's would also cut
            // idle keep-alive connections at the header timeout.
            .header_read_timeout(None)
            .max_buf_size(hard_header_bytes.max(64 * 1024))
            .max_headers(hard_headers)
            .keep_alive(true)
            .half_close(false);
        let mut h2 = http2::Builder::new(StreamExec {
            response_idle_timeout: s.response_idle_timeout,
        });
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(hard_header_bytes as u32)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET)
            .max_send_buf_size(H2_MAX_SEND_BUF)
            .keep_alive_interval(Some(s.idle_timeout / 2))
            .keep_alive_timeout(Duration::from_secs(20));
        Builders { h1, h2 }
    }
}

/// The protocol of a plain-TCP client, from its first bytes, read without
/// consuming them. `None`: the client sent part of the h2 preface and
/// nothing more within `head_timeout` (a slow head, cut like any other).
///
/// Waits for the first bytes; the caller bounds that wait (idle timeout).
pub(crate) async fn sniff(stream: &TcpStream, head_timeout: Duration) -> Option<Protocol> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let deadline = tokio::time::Instant::now() + head_timeout;
    let mut wait = Duration::from_millis(1);
    loop {
        // An error or EOF goes to HTTP/1.1, which ends the connection as
        // it would any other.
        let n = stream.peek(&mut buf).await.unwrap_or(0);
        match preface_match(&buf[..n]) {
            Some(p) => return Some(p),
            None if tokio::time::Instant::now() >= deadline => return None,
            // Only a client whose first segment is a strict prefix of the
            // preface ("P", "PRI * HTT") gets here: peek cannot wait for
            // more bytes than it has, so back off rather than spin.
            None => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// The protocol `first` (the bytes received so far) decides, `None` while
/// they are a strict, non-empty prefix of the h2 preface.
fn preface_match(first: &[u8]) -> Option<Protocol> {
    if first.is_empty() || !H2_PREFACE.starts_with(first) {
        Some(Protocol::Http1)
    } else if first.len() == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_decide_the_protocol() {
        assert_eq!(preface_match(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(preface_match(b"POST /x"), Some(Protocol::Http1));
        assert_eq!(
            preface_match(b"PRI * HTTP/1.1\r\n\r\nXX\r\n\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(preface_match(H2_PREFACE), Some(Protocol::Http2));
        // Still ambiguous: POST, PUT, PATCH or the preface.
        assert_eq!(preface_match(b"P"), None);
        assert_eq!(preface_match(b"PRI * HTTP/2.0\r\n"), None);
        // EOF or an error: HTTP/1.1 ends the connection.
        assert_eq!(preface_match(b""), Some(Protocol::Http1));
    }

    /// The server side of a loopback connection whose client writes
    /// `first`, then `then` after `pause`, then stays open until aborted.
    async fn client_writing(
        first: &'static [u8],
        pause: Duration,
        then: &'static [u8],
    ) -> (TcpStream, tokio::task::JoinHandle<()>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(first).await.unwrap();
            tokio::time::sleep(pause).await;
            c.write_all(then).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    #[tokio::test]
    async fn a_preface_cut_short_is_a_slow_head() {
        let (server, client) = client_writing(b"PRI * HT", Duration::ZERO, b"").await;
        let started = tokio::time::Instant::now();
        assert_eq!(sniff(&server, Duration::from_millis(200)).await, None);
        assert!(started.elapsed() < Duration::from_secs(1));
        client.abort();
    }

    #[tokio::test]
    async fn a_whole_preface_is_http2_and_stays_unread() {
        let (server, client) = client_writing(
            &H2_PREFACE[..5],
            Duration::from_millis(20),
            &H2_PREFACE[5..],
        )
        .await;
        let got = sniff(&server, Duration::from_secs(1)).await;
        assert_eq!(got, Some(Protocol::Http2));
        let mut buf = [0u8; 64];
        let n = server.peek(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], H2_PREFACE);
        client.abort();
    }
}
