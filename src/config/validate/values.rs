//! Parsers for single values (durations, sizes, bounded integers, choices,
//! socket addresses, origins, methods, file paths). Each records an error
//! naming the key and what would be valid, and returns the default so that
//! validation goes on and reports every problem in one run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{Method, Uri};

use super::super::types::ParseByteSizeError;
use super::super::ByteSize;
use super::Validator;

const DURATION_EXAMPLES: &str = "(e.g. \"250ms\", \"5s\", \"1m\")";

impl Validator<'_> {
    pub(super) fn duration(
        &mut self,
        path: &str,
        raw: Option<String>,
        default: Duration,
    ) -> Duration {
        self.duration_or(path, raw.as_deref(), default, "")
    }

    pub(super) fn duration_or(
        &mut self,
        path: &str,
        raw: Option<&str>,
        default: Duration,
        alternatives: &str,
    ) -> Duration {
        match raw {
            None => default,
            Some(s) => humantime::parse_duration(s.trim()).unwrap_or_else(|_| {
                self.err(
                    path,
                    format!("{s:?} is not a duration {DURATION_EXAMPLES}{alternatives}"),
                );
                default
            }),
        }
    }

    pub(super) fn positive_duration(
        &mut self,
        path: &str,
        raw: Option<String>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path, raw, default);
        if d.is_zero() && self.ok(path) {
            self.err(path, "must be greater than 0");
            return default;
        }
        d
    }

    pub(super) fn size(&mut self, path: &str, raw: Option<String>, default: ByteSize) -> ByteSize {
        match raw {
            None => default,
            Some(s) => s.parse().unwrap_or_else(|e: ParseByteSizeError| {
                self.err(path, e.to_string());
                default
            }),
        }
    }

    /// An integer in `min..=max` (`max` None: up to what `T` holds).
    pub(super) fn int<T: TryFrom<i64>>(
        &mut self,
        path: &str,
        raw: Option<i64>,
        default: T,
        min: i64,
        max: Option<i64>,
    ) -> T {
        let Some(n) = raw else { return default };
        let in_range = n >= min && max.is_none_or(|max| n <= max);
        match T::try_from(n) {
            Ok(v) if in_range => v,
            _ => {
                let valid = match max {
                    Some(max) => format!("must be between {min} and {max}"),
                    None if n >= min => "is too large".to_owned(),
                    None => format!("must be at least {min}"),
                };
                self.err(path, format!("{valid}, got {n}"));
                default
            }
        }
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        path: &str,
        raw: Option<String>,
        default: T,
        options: &[(&str, T)],
    ) -> T {
        let Some(s) = raw else { return default };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == s) {
            return *v;
        }
        let valid: Vec<String> = options
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        let valid = match valid.as_slice() {
            [only] => format!("is not {only}"),
            _ => format!("is not one of {}", valid.join(", ")),
        };
        self.err(path, format!("{s:?} {valid}"));
        default
    }

    pub(super) fn socket_addr(
        &mut self,
        path: &str,
        raw: Option<String>,
        default: SocketAddr,
    ) -> SocketAddr {
        let Some(s) = raw else { return default };
        if let Ok(addr) = s.trim().parse::<SocketAddr>() {
            return addr;
        }
        let hint = match s.rsplit_once(':') {
            Some(("localhost", port)) if port.parse::<u16>().is_ok() => {
                format!("; host names are not resolved here, use \"127.0.0.1:{port}\"")
            }
            _ => String::new(),
        };
        self.err(
            path,
            format!("{s:?} is not an IP:port address (e.g. \"127.0.0.1:8080\", \"0.0.0.0:8443\", \"[::1]:8080\"){hint}"),
        );
        default
    }

    /// An `http://` or `https://` origin: a host, optional port, nothing else.
    pub(super) fn url(&mut self, path: &str, s: &str) -> Option<Uri> {
        let example = "(e.g. \"https://us-south.kms.cloud.ibm.com\", \"http://127.0.0.1:8080\")";
        let uri = match s.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => {
                self.err(path, format!("{s:?} is not a URL {example}"));
                return None;
            }
        };
        let problem = match (uri.scheme_str(), uri.authority()) {
            (None, _) | (_, None) => Some(format!("needs a scheme and a host {example}")),
            (Some(scheme), _) if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") => {
                Some(format!("has scheme {scheme:?}; only http and https are supported"))
            }
            (_, Some(a)) if a.as_str().contains('@') => {
                Some("must not contain user info (user:password@); credentials do not belong in the URL".to_owned())
            }
            (_, Some(a)) if a.host().is_empty() => Some(format!("has no host {example}")),
            _ if uri.path() != "/" => Some(format!(
                "has path {:?}; only the origin is allowed (a path other than \"/\" is not supported: request paths are forwarded unchanged)",
                uri.path()
            )),
            _ if uri.query().is_some() || s.contains('#') => {
                Some("must not have a query or fragment; give only scheme, host and port".to_owned())
            }
            _ => None,
        };
        if let Some(problem) = problem {
            self.err(path, format!("{s:?} {problem}"));
            return None;
        }
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        match Uri::from_parts(parts) {
            Ok(u) => Some(u),
            Err(_) => {
                self.err(path, format!("{s:?} is not a URL {example}"));
                None
            }
        }
    }

    pub(super) fn method(&mut self, path: &str, s: &str) -> Option<Method> {
        let upper = s.to_ascii_uppercase();
        let standard = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
        ];
        if s != upper && standard.contains(&upper.as_str()) {
            self.err(
                path,
                format!("{s:?} is not a method; methods are case-sensitive, use {upper:?}"),
            );
            return None;
        }
        match Method::from_bytes(s.as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                self.err(
                    path,
                    format!("{s:?} is not an HTTP method (e.g. \"GET\", \"POST\")"),
                );
                None
            }
        }
    }

    /// An optional file path, resolved against the config file's folder.
    pub(super) fn file(&mut self, path: &str, raw: Option<String>) -> Option<PathBuf> {
        let raw = raw?;
        if raw.trim().is_empty() {
            self.err(path, "must not be empty; omit the key instead");
            return None;
        }
        Some(self.base_dir.join(raw))
    }

    pub(super) fn required_file(&mut self, path: &str, raw: Option<String>) -> PathBuf {
        if raw.is_none() {
            self.err(path, "required (a PEM file path)");
        }
        self.file(path, raw).unwrap_or_default()
    }
}

/// Whether two origins name the same server (scheme, host and port, with the
/// scheme's default port filled in).
pub(super) fn same_origin(a: &Uri, b: &Uri) -> bool {
    let key = |u: &Uri| {
        let default_port = if u.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        };
        (
            u.scheme_str().map(str::to_ascii_lowercase),
            u.host().map(str::to_ascii_lowercase),
            u.port_u16().unwrap_or(default_port),
        )
    };
    key(a) == key(b)
}

/// A key as it would be written in a path: bare when it can be, else quoted.
pub(super) fn quote_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_owned()
    } else {
        format!("{k:?}")
    }
}
