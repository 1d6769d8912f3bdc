//! Which service a request is for: the first, in file order, whose `hosts`
//! hold the request's host (port stripped, any case; none = every host)
//! and whose `path_prefix` takes its path on a segment boundary. With TLS,
//! the SNI name must belong to the same service (else 421). The choice
//! borrows from the request and allocates nothing.

use std::sync::Arc;

use http::header::HOST;

use super::service::Service;
use crate::config::{hosts_take, prefix_takes, HostPattern, ServiceConfig};

/// Where one service is chosen: its hosts and path prefix.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub hosts: Vec<HostPattern>,
    pub path_prefix: String,
}

impl Matcher {
    pub fn new(cfg: &ServiceConfig) -> Matcher {
        Matcher {
            hosts: cfg.hosts.clone(),
            path_prefix: cfg.path_prefix.clone(),
        }
    }

    fn takes_host(&self, host: Option<&str>) -> bool {
        hosts_take(&self.hosts, host)
    }

    fn takes_path(&self, path: &str) -> bool {
        prefix_takes(&self.path_prefix, path)
    }

    fn takes_all(&self) -> bool {
        self.hosts.is_empty() && self.path_prefix == "/"
    }
}

/// One service and where it is chosen.
pub struct Route {
    pub matcher: Matcher,
    pub service: Arc<Service>,
}

impl Route {
    pub fn new(cfg: &ServiceConfig, service: Arc<Service>) -> Route {
        Route {
            matcher: Matcher::new(cfg),
            service,
        }
    }
}

/// The services in file order.
pub struct Routes {
    pub routes: Vec<Route>,
}

/// Why no service took a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// Host and path matched no service: 404.
    NoService,
    /// TLS named (SNI) a host the chosen service does not answer for: 421.
    Misdirected,
}

impl AsRef<Matcher> for Matcher {
    fn as_ref(&self) -> &Matcher {
        self
    }
}

impl AsRef<Matcher> for Route {
    fn as_ref(&self) -> &Matcher {
        &self.matcher
    }
}

/// The index of the first of `matchers` that takes a request with these
/// parts (headers, URI) on a connection whose TLS SNI was `sni`.
pub fn choose<M: AsRef<Matcher>>(
    matchers: &[M],
    parts: &http::request::Parts,
    sni: Option<&str>,
) -> Result<usize, Unrouted> {
    // The single-pair form: one catch-all for every request.
    if let [only] = matchers {
        if only.as_ref().takes_all() {
            return Ok(0);
        }
    }
    let host = request_host(parts);
    let path = parts.uri.path();
    for (i, m) in matchers.iter().map(AsRef::as_ref).enumerate() {
        if m.takes_host(host) && m.takes_path(path) {
            return match sni {
                Some(sni) if !m.takes_host(Some(sni)) => Err(Unrouted::Misdirected),
                _ => Ok(i),
            };
        }
    }
    Err(Unrouted::NoService)
}

impl Routes {
    /// The service for a request with these parts, on a connection whose
    /// TLS SNI was `sni`.
    pub fn pick(
        &self,
        parts: &http::request::Parts,
        sni: Option<&str>,
    ) -> Result<&Arc<Service>, Unrouted> {
        let i = choose(&self.routes, parts, sni)?;
        Ok(&self.routes[i].service)
    }

    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.routes
            .iter()
            .map(|r| &r.service)
            .find(|s| s.name() == name)
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.routes.iter().map(|r| &r.service)
    }
}

/// The request's host without its port: `Host`, else the URI's authority.
fn request_host(parts: &http::request::Parts) -> Option<&str> {
    let raw = match parts.headers.get(HOST) {
        Some(v) => v.to_str().ok()?,
        None => parts.uri.authority()?.as_str(),
    };
    Some(strip_port(raw))
}

/// `example.com:8443` -> `example.com`, `[::1]:8443` -> `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_names_and_ipv6_literals() {
        assert_eq!(strip_port("kp.internal:8443"), "kp.internal");
        assert_eq!(strip_port("kp.internal"), "kp.internal");
        assert_eq!(strip_port("[::1]:8443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a:b"), "a:b");
    }
}
