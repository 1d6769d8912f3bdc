//! The `[[service]]` form's types: a service is one regional pair with its
//! own upstreams, health, failover, classification, retry and rewrite
//! settings, chosen by host and path. The single-pair form is one service
//! named `default` that takes every request.

use super::{
    ClassifyConfig, Config, FailoverConfig, HealthConfig, KeyPairs, RetryConfig, RewriteRule,
    Upstreams,
};

/// The name of the one service of the single-pair form.
pub const DEFAULT_SERVICE: &str = "default";

/// A host a service answers for: exact, or `*.suffix` (any subdomain of
/// the suffix, not the suffix itself). Stored lower-case, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot: `*.example.com` is `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    /// Whether `host` (as received: any case, no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// Whether every host this one matches, `other` matches too.
    pub fn covered_by(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (_, HostPattern::Exact(o)) => matches!(self, HostPattern::Exact(h) if h == o),
            (HostPattern::Exact(h), sub @ HostPattern::Subdomains(_)) => sub.matches(h),
            (HostPattern::Subdomains(a), HostPattern::Subdomains(b)) => {
                a == b || HostPattern::Subdomains(b.clone()).matches(&a[1..])
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(s) => write!(f, "*{s}"),
        }
    }
}

/// One service: where it is chosen (`hosts`, `path_prefix`) and its own
/// sections, inherited keys already filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    /// Empty: every host (the catch-all, allowed once and last).
    pub hosts: Vec<HostPattern>,
    /// Starts with `/`; no trailing `/` unless it is `/`.
    pub path_prefix: String,
    pub upstreams: Upstreams,
    pub health: HealthConfig,
    pub failover: FailoverConfig,
    pub classify: ClassifyConfig,
    pub retry: RetryConfig,
    pub rewrite: Vec<RewriteRule>,
    /// `[[service.key_pairs]]`; never inherited from the top level.
    pub key_pairs: KeyPairs,
}

/// Whether `path` starts with `prefix` on a segment boundary (`/api`
/// takes `/api` and `/api/x`, not `/apix`).
pub fn prefix_takes(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `hosts` take a request for `host` (no port): none listed take
/// every host, even an absent one.
pub fn hosts_take(hosts: &[HostPattern], host: Option<&str>) -> bool {
    hosts.is_empty() || host.is_some_and(|h| hosts.iter().any(|p| p.matches(h)))
}

impl ServiceConfig {
    /// Whether it takes requests to `path` (see [`prefix_takes`]).
    pub fn takes_path(&self, path: &str) -> bool {
        prefix_takes(&self.path_prefix, path)
    }
}

impl Config {
    /// The services in file order: the `[[service]]` blocks, or the one
    /// `default` service of the single-pair form (from the top-level
    /// sections as they are now).
    pub fn services(&self) -> Vec<ServiceConfig> {
        if !self.services.is_empty() {
            return self.services.clone();
        }
        vec![ServiceConfig {
            name: DEFAULT_SERVICE.to_owned(),
            hosts: Vec::new(),
            path_prefix: "/".to_owned(),
            upstreams: self.upstreams.clone(),
            health: self.health.clone(),
            failover: self.failover.clone(),
            classify: self.classify.clone(),
            retry: self.retry.clone(),
            rewrite: self.rewrite.clone(),
            key_pairs: self.key_pairs.clone(),
        }]
    }

    /// Whether this is the `[[service]]` form.
    pub fn has_service_blocks(&self) -> bool {
        !self.services.is_empty()
    }

    /// This configuration as `service` sees it: the global sections, and
    /// the service's own in place of the top-level ones.
    pub fn for_service(&self, service: &ServiceConfig) -> Config {
        Config {
            upstreams: service.upstreams.clone(),
            health: service.health.clone(),
            failover: service.failover.clone(),
            classify: service.classify.clone(),
            retry: service.retry.clone(),
            rewrite: service.rewrite.clone(),
            key_pairs: service.key_pairs.clone(),
            services: Vec::new(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(h: &str) -> HostPattern {
        HostPattern::Exact(h.into())
    }

    fn sub(s: &str) -> HostPattern {
        HostPattern::Subdomains(s.into())
    }

    #[test]
    fn hosts_match_exactly_or_as_subdomains_in_any_case() {
        assert!(exact("kp.internal").matches("KP.Internal"));
        assert!(!exact("kp.internal").matches("kp.internal.evil"));
        assert!(sub(".example.com").matches("a.example.com"));
        assert!(sub(".example.com").matches("A.B.Example.COM"));
        assert!(!sub(".example.com").matches("example.com"));
        assert!(!sub(".example.com").matches("badexample.com"));
        assert!(exact("[::1]").matches("[::1]"));
    }

    #[test]
    fn coverage_follows_what_each_pattern_matches() {
        assert!(exact("a.example.com").covered_by(&sub(".example.com")));
        assert!(sub(".x.example.com").covered_by(&sub(".example.com")));
        assert!(!sub(".example.com").covered_by(&sub(".x.example.com")));
        assert!(!sub(".example.com").covered_by(&exact("a.example.com")));
        assert!(exact("a").covered_by(&exact("a")));
    }
}
