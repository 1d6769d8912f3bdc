//! Who may send an operator action: a local client, never a web page.
//!
//! Without `admin.token_file` (the loopback default) anything that can open
//! a connection to the admin listener may act, and a browser can: a page on
//! the same host posts to `127.0.0.1:9901`, a DNS-rebinding page posts to
//! its own name now resolving to it. So an action needs:
//! - `Content-Type: application/json` (415 otherwise): an HTML form or a
//!   cross-site `fetch` without a CORS preflight cannot send it, and the
//!   admin answers no preflight;
//! - no `Origin`, or the listener's own: `http://` and the request's `Host`,
//!   or a loopback name with the listener's port (403 otherwise): browsers
//!   send `Origin` on every cross-site POST, command-line clients send none;
//! - without a token, a `Host` naming a loopback address (`localhost`,
//!   `127.0.0.1`, `[::1]`, ...) or the listener's own address (421
//!   otherwise): a rebinding page sends its own name. Any port is taken: a
//!   browser's `Host` always names the port it connected to, while a tunnel
//!   to the admin (`ssh -L`, `kubectl port-forward`) legitimately names
//!   another. With a token, `Host` is not checked (a load balancer or a
//!   service name may stand in front), since a page cannot know the token.
//!
//! It does not check read endpoints: they change nothing.

use std::net::{IpAddr, SocketAddr};

use http::uri::Authority;
use http::{header, HeaderMap, StatusCode, Uri};
use serde_json::{json, Value};

/// Why an action was refused: the status and the JSON error to answer.
pub type Refusal = (StatusCode, Value);

/// Checks an action's request before its token and body are looked at.
pub fn check(
    uri: &Uri,
    headers: &HeaderMap,
    local: SocketAddr,
    token_configured: bool,
) -> Result<(), Refusal> {
    let host = uri.authority().cloned().or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.parse::<Authority>().ok())
    });
    if !token_configured && !host.as_ref().is_some_and(|h| local_host(h, local)) {
        let given = headers.get(header::HOST).map(shown).unwrap_or_default();
        return Err((
            StatusCode::MISDIRECTED_REQUEST,
            json!({"error": format!(
                "Host {given:?}: without admin.token_file, operator actions are served for a loopback host name only (localhost:{port}, 127.0.0.1:{port}, [::1]:{port} or {local}), so that a DNS-rebinding web page cannot send them",
                port = local.port()
            )}),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !own_origin(origin.as_bytes(), host.as_ref(), local) {
            return Err((
                StatusCode::FORBIDDEN,
                json!({"error": format!(
                    "Origin {:?} is not this admin listener's own origin; operator actions are not taken from web pages (command-line clients send no Origin)",
                    shown(origin)
                )}),
            ));
        }
    }
    let content_type = headers.get(header::CONTENT_TYPE);
    if !content_type.is_some_and(|v| is_json(v.as_bytes())) {
        let given = content_type.map_or_else(|| "none".to_owned(), shown);
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": format!(
                "Content-Type: expected application/json, got {given} (with curl: -H 'Content-Type: application/json')"
            )}),
        ));
    }
    Ok(())
}

/// A header value for an error message: lossy, and short.
fn shown(v: &http::HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes())
        .chars()
        .take(100)
        .collect()
}

/// `localhost`, a loopback IP literal, or the listener's own IP.
fn local_host(authority: &Authority, local: SocketAddr) -> bool {
    let host = authority.host();
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    literal
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip == local.ip())
}

/// Whether `origin` is this listener's: `http://` and either the authority
/// the request was sent to (host case-insensitive, port 80 when left out)
/// or a loopback name (or the listener's IP) with the listener's port.
fn own_origin(origin: &[u8], host: Option<&Authority>, local: SocketAddr) -> bool {
    let Some(rest) = origin.strip_prefix(b"http://") else {
        return false;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return false;
    };
    let Ok(origin) = rest.parse::<Authority>() else {
        return false;
    };
    // An Origin is scheme, host and port only.
    if origin.as_str() != rest || rest.contains('@') {
        return false;
    }
    let port = origin.port_u16().unwrap_or(80);
    let sent_to = host.is_some_and(|h| {
        origin.host().eq_ignore_ascii_case(h.host()) && port == h.port_u16().unwrap_or(80)
    });
    sent_to || (port == local.port() && local_host(&origin, local))
}

/// `application/json`, parameters (`; charset=utf-8`) allowed.
fn is_json(value: &[u8]) -> bool {
    let essence = value.split(|b| *b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:9901";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn status(pairs: &[(&str, &str)], token: bool) -> Option<u16> {
        let uri: Uri = "/admin/failover".parse().unwrap();
        check(&uri, &headers(pairs), LOCAL.parse().unwrap(), token)
            .err()
            .map(|(s, _)| s.as_u16())
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn a_local_json_request_passes() {
        for host in [
            "127.0.0.1:9901",
            "localhost:9901",
            "LOCALHOST.:9901",
            "[::1]:9901",
            "127.0.0.2:9901",
            "localhost",
            // A tunnel to the admin from another local port.
            "localhost:19901",
        ] {
            assert_eq!(status(&[("host", host), JSON], false), None, "{host}");
        }
        let charset = ("content-type", "Application/JSON; charset=utf-8");
        assert_eq!(status(&[("host", LOCAL), charset], false), None);
        let own = ("origin", "http://127.0.0.1:9901");
        assert_eq!(status(&[("host", LOCAL), JSON, own], false), None);
        let own = ("origin", "http://localhost");
        assert_eq!(status(&[("host", "localhost:80"), JSON, own], false), None);
        // The listener by another of its names.
        let own = ("origin", "http://localhost:9901");
        assert_eq!(status(&[("host", LOCAL), JSON, own], false), None);
    }

    #[test]
    fn a_foreign_host_is_misdirected_without_a_token_only() {
        for host in [
            "evil.example:9901",
            "10.0.0.1:9901",
            "localhost.evil.example",
        ] {
            assert_eq!(status(&[("host", host), JSON], false), Some(421), "{host}");
            assert_eq!(status(&[("host", host), JSON], true), None, "{host}");
        }
        assert_eq!(status(&[JSON], false), Some(421));
    }

    #[test]
    fn another_origin_is_forbidden_with_or_without_a_token() {
        for origin in [
            "http://evil.example",
            "http://localhost:3000",
            "https://127.0.0.1:9901",
            "http://127.0.0.1:9901/x",
            "http://user@127.0.0.1:9901",
            "null",
        ] {
            let pairs = [("host", LOCAL), JSON, ("origin", origin)];
            assert_eq!(status(&pairs, false), Some(403), "{origin}");
            assert_eq!(status(&pairs, true), Some(403), "{origin}");
        }
        // With a token, the origin of whatever name the client used.
        let pairs = [
            ("host", "admin.internal"),
            JSON,
            ("origin", "http://admin.internal"),
        ];
        assert_eq!(status(&pairs, true), None);
    }

    #[test]
    fn anything_but_json_is_unsupported() {
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            let pairs = [("host", LOCAL), ("content-type", ct)];
            assert_eq!(status(&pairs, false), Some(415), "{ct}");
        }
        assert_eq!(status(&[("host", LOCAL)], false), Some(415));
        let uri: Uri = "/admin/failover".parse().unwrap();
        let h = headers(&[("host", LOCAL), ("content-type", "text/plain")]);
        let (_, body) = check(&uri, &h, LOCAL.parse().unwrap(), false).unwrap_err();
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains("expected application/json, got text/plain"),
            "{msg}"
        );
    }
}
