//! Header hygiene (RFC 9110 §7.6.1) and the headers failway adds.
//!
//! Requests: hop-by-hop fields and every field `Connection` names are removed;
//! a `Connection` that names a field failway sets or relies on is refused;
//! method- and URL-override headers are dropped (they must never change what
//! a request is); `X-Forwarded-*`, `Host` and the correlation id are set. Responses:
//! hop-by-hop fields removed, `failway-region` added.
//!
//! This module does not rewrite region IDs or classify; it only touches framing
//! and provenance headers, so it is safe to apply to every request.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::error::ProxyError;

pub const CORRELATION_ID: HeaderName = HeaderName::from_static("correlation-id");
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const FAILWAY_REGION: HeaderName = HeaderName::from_static("failway-region");
pub const FAILWAY_MODE: HeaderName = HeaderName::from_static("failway-mode");
pub const FAILWAY_OUTCOME: HeaderName = HeaderName::from_static("failway-outcome");
/// Headers that would let a client change what a request *is*; dropped so
/// that classification by method and path can never be bypassed. The method
/// overrides of common frameworks and gateways, and the URL overrides that
/// Symfony and IIS-style rewriters honour (they replace the path the
/// upstream routes on).
const OVERRIDES: [HeaderName; 7] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-method"),
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Fields failway sets or relies on: a client that lists one of them in
/// `Connection` is trying to make a proxy drop it, so the request is refused.
fn is_protected(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "authorization"
            | "content-length"
            | "content-type"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "forwarded"
            | "correlation-id"
            | "x-correlation-id"
            | "bluemix-instance"
    ) || name.starts_with("failway-")
}

/// Limits checked on every request's head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_headers: usize,
    pub max_header_bytes: u64,
}

/// Checks a request head before anything is forwarded.
pub fn check_request(
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    limits: HeadLimits,
) -> Result<(), ProxyError> {
    if headers.len() > limits.max_headers {
        return Err(ProxyError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    // Roughly what the head took on the wire: request line plus "name: value\r\n".
    let mut bytes = method.as_str().len() as u64
        + uri.path_and_query().map_or(1, |p| p.as_str().len()) as u64
        + 12;
    for (name, value) in headers {
        bytes += (name.as_str().len() + value.len() + 4) as u64;
    }
    if bytes > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            limit: limits.max_header_bytes,
        });
    }
    // hyper accepts `Transfer-Encoding: gzip, chunked`; forwarding it without
    // the header would hand the upstream a still-encoded body, so only plain
    // `chunked` is allowed.
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        if te.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::BadRequest(
                "Transfer-Encoding must be exactly \"chunked\"",
            ));
        }
    }
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else {
            return Err(ProxyError::BadRequest("Connection header is not ASCII"));
        };
        for token in value.split(',') {
            let token = token.trim().to_ascii_lowercase();
            if is_protected(&token) {
                return Err(ProxyError::BadRequest(
                    "Connection header names a field the proxy relies on",
                ));
            }
        }
    }
    Ok(())
}

/// Hop-by-hop fields (RFC 9110 §7.6.1, plus the legacy ones proxies still see).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// Removes the hop-by-hop fields and every field `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names settles the common case (none, or only
    // `Connection: keep-alive`) without hashing each hop-by-hop name.
    let mut found: [Option<HeaderName>; 9] = Default::default(); // as many as is_hop_by_hop names
    let mut n = 0;
    for name in headers.keys() {
        if is_hop_by_hop(name) && n < found.len() {
            found[n] = Some(name.clone());
            n += 1;
        }
    }
    if n == 0 {
        return;
    }
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let token = token.trim();
            // The usual tokens name no end-to-end field.
            if token.is_empty()
                || token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("close")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                if !is_hop_by_hop(&name) {
                    named.push(name);
                }
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    for name in found.into_iter().flatten() {
        headers.remove(name);
    }
}

/// What the upstream request's provenance headers are built from.
pub struct Provenance<'a> {
    pub peer: IpAddr,
    /// `peer` as a header value, formatted once per connection.
    pub peer_value: &'a HeaderValue,
    /// The peer may set `X-Forwarded-*` (it is in `proxy.trusted_proxies`).
    pub peer_trusted: bool,
    pub downstream_tls: bool,
    /// The `Host` (or `:authority`) the client addressed.
    pub original_host: Option<HeaderValue>,
    /// The value `Host` gets upstream.
    pub upstream_host: &'a HeaderValue,
    pub correlation_id: &'a HeaderValue,
}

/// Prepares a request's headers for the upstream.
pub fn prepare_request(headers: &mut HeaderMap, p: &Provenance<'_>) {
    strip_hop_by_hop(headers);
    // failway frames the body itself (it may re-frame chunked as sized) and
    // answers `Expect: 100-continue` towards the client. One pass over the
    // names first: most requests carry none of these.
    let drop_some = headers
        .keys()
        .any(|n| OVERRIDES.contains(n) || n == header::CONTENT_LENGTH || n == header::EXPECT);
    if drop_some {
        for name in OVERRIDES {
            headers.remove(name);
        }
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::EXPECT);
    }

    let peer = p.peer_value.clone();
    let xff = if p.peer_trusted {
        let prior: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            peer
        } else {
            let joined = format!("{}, {}", prior.join(", "), p.peer);
            HeaderValue::from_str(&joined).unwrap_or(peer)
        }
    } else {
        peer
    };
    headers.insert(X_FORWARDED_FOR, xff);
    if !(p.peer_trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        let proto = if p.downstream_tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(p.peer_trusted && headers.contains_key(X_FORWARDED_HOST)) {
        match &p.original_host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
    headers.insert(header::HOST, p.upstream_host.clone());
    // The id the access log shows; equal to the client's own when it sent a
    // usable one.
    headers.insert(CORRELATION_ID, p.correlation_id.clone());
}

/// Prepares an upstream response's headers for the client.
pub fn prepare_response(headers: &mut HeaderMap, region: &'static str) {
    strip_hop_by_hop(headers);
    headers.insert(FAILWAY_REGION, HeaderValue::from_static(region));
}

/// The request's correlation id (docs/design.md §8): `correlation-id`, else
/// `X-Correlation-ID`, else a new v4 UUID. Values that are not short printable
/// tokens are ignored, so a hostile id cannot bloat or corrupt the access log.
pub fn correlation_id(headers: &HeaderMap) -> HeaderValue {
    for name in [CORRELATION_ID, X_CORRELATION_ID] {
        if let Some(v) = headers.get(name) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
                return v.clone();
            }
        }
    }
    new_uuid()
}

fn new_uuid() -> HeaderValue {
    // Version 4, variant 10xx; written into a stack buffer, since this runs
    // for every request that arrives without an id.
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fastrand::u64(..).to_be_bytes());
    bytes[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1; // the dash already there
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
}

/// A peer address as an `X-Forwarded-For` element, formatted without a
/// heap string (once per connection).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 45];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let len = cursor.position() as usize;
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_headers: 100,
            max_header_bytes: 16 * 1024,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn check(h: &HeaderMap) -> Result<(), ProxyError> {
        check_request(&http::Method::GET, &"/x".parse().unwrap(), h, limits())
    }

    #[test]
    fn connection_naming_a_protected_field_is_refused() {
        for named in ["Host", "authorization", "X-Forwarded-For", "failway-region"] {
            let h = map(&[("connection", &format!("keep-alive, {named}"))]);
            assert!(
                matches!(check(&h), Err(ProxyError::BadRequest(_))),
                "{named}"
            );
        }
        assert!(check(&map(&[("connection", "keep-alive, x-custom")])).is_ok());
    }

    #[test]
    fn only_plain_chunked_transfer_encoding_passes() {
        assert!(check(&map(&[("transfer-encoding", "chunked")])).is_ok());
        assert!(check(&map(&[("transfer-encoding", "Chunked")])).is_ok());
        for bad in ["gzip, chunked", "xchunked", "chunked, chunked"] {
            assert!(check(&map(&[("transfer-encoding", bad)])).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_count_and_size_limits() {
        let many: Vec<(String, String)> =
            (0..101).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let mut h = HeaderMap::new();
        for (k, v) in &many {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        assert_eq!(check(&h), Err(ProxyError::TooManyHeaders { limit: 100 }));
        let big = "a".repeat(17 * 1024);
        assert_eq!(
            check(&map(&[("x-big", &big)])),
            Err(ProxyError::HeadersTooLarge { limit: 16 * 1024 })
        );
    }

    #[test]
    fn hop_by_hop_and_named_fields_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("x-http-method-override", "GET"),
            ("X-Original-Method", "DELETE"),
            ("x-forwarded-method", "PUT"),
            ("x-original-url", "/api/v2/keys/k/actions/rotate"),
            ("x-rewrite-url", "/api/v2/keys/k/actions/rotate"),
            ("x-keep", "yes"),
            ("content-length", "3"),
        ]);
        let host = HeaderValue::from_static("upstream.example");
        let cid = HeaderValue::from_static("cid-1");
        let peer = ip_value("10.0.0.9".parse().unwrap());
        prepare_request(
            &mut h,
            &Provenance {
                peer: "10.0.0.9".parse().unwrap(),
                peer_value: &peer,
                peer_trusted: false,
                downstream_tls: false,
                original_host: Some(HeaderValue::from_static("proxy.local")),
                upstream_host: &host,
                correlation_id: &cid,
            },
        );
        for gone in [
            "connection",
            "keep-alive",
            "x-secret-hop",
            "te",
            "upgrade",
            "proxy-authorization",
            "x-http-method-override",
            "x-original-method",
            "x-forwarded-method",
            "x-original-url",
            "x-rewrite-url",
            "content-length",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(h["x-keep"], "yes");
        assert_eq!(h["host"], "upstream.example");
        assert_eq!(h["x-forwarded-host"], "proxy.local");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["correlation-id"], "cid-1");
    }

    #[test]
    fn forwarded_for_is_replaced_unless_the_peer_is_trusted() {
        let host = HeaderValue::from_static("u");
        let cid = HeaderValue::from_static("c");
        let peer = ip_value("192.0.2.1".parse().unwrap());
        let mut prov = Provenance {
            peer: "192.0.2.1".parse().unwrap(),
            peer_value: &peer,
            peer_trusted: false,
            downstream_tls: true,
            original_host: None,
            upstream_host: &host,
            correlation_id: &cid,
        };
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "http"),
        ]);
        prepare_request(&mut h, &prov);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "https");

        prov.peer_trusted = true;
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "http"),
        ]);
        prepare_request(&mut h, &prov);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn response_hop_by_hop_fields_are_removed_end_to_end_ones_kept() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["content-type"], "application/json");

        let mut h = map(&[
            ("connection", "close, X-Internal"),
            ("x-internal", "1"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-sum"),
            ("proxy-authenticate", "Basic"),
            ("x-kept", "2"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);

        let mut h = map(&[("x-a", "1"), ("x-b", "2")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn correlation_id_prefers_kp_spelling_then_x_then_new() {
        let h = map(&[("correlation-id", "a"), ("x-correlation-id", "b")]);
        assert_eq!(correlation_id(&h), "a");
        let h = map(&[("x-correlation-id", "b")]);
        assert_eq!(correlation_id(&h), "b");
        let h = map(&[("correlation-id", "has space")]);
        let id = correlation_id(&h);
        let id = id.to_str().unwrap();
        // 8-4-4-4-12 lowercase hex, version 4, variant 10xx.
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(id
            .bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(id.as_bytes()[14], b'4', "{id}");
        assert!(
            matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{id}"
        );
        assert_ne!(
            correlation_id(&HeaderMap::new()),
            correlation_id(&HeaderMap::new())
        );
    }
}
