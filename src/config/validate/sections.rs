//! The listener, failover, retry and fleet sections: defaults, ranges and the
//! rules between keys of these sections (`retry.per_try_timeout` within
//! `proxy.request_timeout`, a token for an admin API off loopback, ...).

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;

use super::super::raw;
use super::super::{
    AdminConfig, ByteSize, Cidr, FailbackMode, FailoverConfig, FailoverMode, FleetBackend,
    FleetConfig, HostHeader, Profile, ProxyConfig, RetryConfig, ServerTls, UpstreamTls,
};
use super::{loopback, secs, Validator};

/// etcd refuses leases shorter than this.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

impl Validator<'_> {
    pub(super) fn proxy(&mut self, r: raw::RawProxy) -> ProxyConfig {
        let listen = self.socket_addr("proxy.listen", r.listen, loopback(8080));
        let tls = r.tls.map(|t| ServerTls {
            cert: self.required_file("proxy.tls.cert", t.cert),
            key: self.required_file("proxy.tls.key", t.key),
        });
        let request_timeout =
            self.positive_duration("proxy.request_timeout", r.request_timeout, secs(25));
        let max_request_body = self.size(
            "proxy.max_request_body",
            r.max_request_body,
            ByteSize(ByteSize::MIB),
        );
        let max_header_bytes = self.size(
            "proxy.max_header_bytes",
            r.max_header_bytes,
            ByteSize(16 * ByteSize::KIB),
        );
        if self.ok("proxy.max_header_bytes")
            && !(ByteSize::KIB..=ByteSize::MIB).contains(&max_header_bytes.0)
        {
            self.err(
                "proxy.max_header_bytes",
                format!("must be between 1KiB and 1MiB, got {max_header_bytes}"),
            );
        }
        let max_headers = self.int("proxy.max_headers", r.max_headers, 100, 1, Some(1000));
        let header_read_timeout =
            self.positive_duration("proxy.header_read_timeout", r.header_read_timeout, secs(10));
        let body_idle_timeout =
            self.positive_duration("proxy.body_idle_timeout", r.body_idle_timeout, secs(10));
        let idle_timeout = self.positive_duration("proxy.idle_timeout", r.idle_timeout, secs(60));
        let response_idle_timeout = self.positive_duration(
            "proxy.response_idle_timeout",
            r.response_idle_timeout,
            secs(30),
        );
        let host_header = self.choice(
            "proxy.host_header",
            r.host_header,
            HostHeader::Upstream,
            &[
                ("upstream", HostHeader::Upstream),
                ("preserve", HostHeader::Preserve),
            ],
        );
        let shutdown_grace = self.duration("proxy.shutdown_grace", r.shutdown_grace, secs(25));
        let max_connections = self.int("proxy.max_connections", r.max_connections, 10_000, 1, None);
        let trusted_proxies = r
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.parse::<Cidr>() {
                Ok(c) => Some(c),
                Err(e) => {
                    self.err(format!("proxy.trusted_proxies[{i}]"), e.to_string());
                    None
                }
            })
            .collect();
        let worker_threads = r
            .worker_threads
            .map(|n| self.int("proxy.worker_threads", Some(n), 1, 1, Some(1024)));
        ProxyConfig {
            listen,
            tls,
            request_timeout,
            max_request_body,
            max_header_bytes,
            max_headers,
            header_read_timeout,
            body_idle_timeout,
            idle_timeout,
            response_idle_timeout,
            host_header,
            shutdown_grace,
            max_connections,
            trusted_proxies,
            worker_threads,
        }
    }

    pub(super) fn admin(&mut self, r: raw::RawAdmin, proxy: &ProxyConfig) -> AdminConfig {
        let listen = self.socket_addr("admin.listen", r.listen, loopback(9901));
        let probe_listen = r
            .probe_listen
            .map(|s| self.socket_addr("admin.probe_listen", Some(s), loopback(9902)));
        let token_file = self.file("admin.token_file", r.token_file);
        let tokens_file = self.file("admin.tokens_file", r.tokens_file);
        if self.ok("admin.listen")
            && !listen.ip().is_loopback()
            && token_file.is_none()
            && tokens_file.is_none()
        {
            self.err(
                "admin.token_file",
                format!(
                    "required because admin.listen ({listen}) is not a loopback address: \
                     the admin API changes the failover mode"
                ),
            );
        }
        // Port 0 asks the system for a free port, so equal addresses are fine then.
        let listeners = [
            ("proxy.listen", Some(proxy.listen)),
            ("admin.listen", Some(listen)),
            ("admin.probe_listen", probe_listen),
        ];
        for (i, (path, addr)) in listeners.iter().enumerate() {
            let Some(addr) = addr else { continue };
            if addr.port() == 0 || !self.ok(path) {
                continue;
            }
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| *a == Some(*addr)) {
                self.err(*path, format!("{addr} is already used by {other}"));
            }
        }
        AdminConfig {
            listen,
            token_file,
            tokens_file,
            probe_listen,
        }
    }

    pub(super) fn failover(&mut self, r: raw::RawFailover, profile: Profile) -> FailoverConfig {
        let read_only_window = match r.read_only_window.as_deref() {
            Some("never") => None,
            other => Some(self.duration_or(
                "failover.read_only_window",
                other,
                secs(6 * 3600),
                " or \"never\"",
            )),
        };
        let default_status = match profile {
            Profile::KeyProtect => StatusCode::CONFLICT,
            Profile::HttpMethods => StatusCode::SERVICE_UNAVAILABLE,
        };
        let blocked_write_status = match r.blocked_write_status {
            None => default_status,
            Some(n) => {
                match u16::try_from(n).ok().filter(|n| (400..=599).contains(n)) {
                    Some(n) => StatusCode::from_u16(n).unwrap_or(default_status),
                    None => {
                        self.err(
                        "failover.blocked_write_status",
                        format!("must be an HTTP error status in 400..=599 (e.g. 409, 503), got {n}"),
                    );
                        default_status
                    }
                }
            }
        };
        FailoverConfig {
            mode: self.choice(
                "failover.mode",
                r.mode,
                FailoverMode::Auto,
                &[
                    ("auto", FailoverMode::Auto),
                    ("manual", FailoverMode::Manual),
                    ("shadow", FailoverMode::Shadow),
                ],
            ),
            read_only_window,
            failback: self.choice(
                "failover.failback",
                r.failback,
                FailbackMode::Safe,
                &[
                    ("safe", FailbackMode::Safe),
                    ("manual", FailbackMode::Manual),
                ],
            ),
            failback_after: self.duration("failover.failback_after", r.failback_after, secs(300)),
            blocked_write_status,
            blocked_retry_after: self.duration(
                "failover.blocked_retry_after",
                r.blocked_retry_after,
                secs(30),
            ),
            max_drill: self.duration("failover.max_drill", r.max_drill, secs(3600)),
        }
    }

    pub(super) fn retry(&mut self, r: raw::RawRetry, proxy: &ProxyConfig) -> RetryConfig {
        let backoff_base = self.duration(
            "retry.backoff_base",
            r.backoff_base,
            Duration::from_millis(50),
        );
        let backoff_max = self.duration("retry.backoff_max", r.backoff_max, secs(1));
        if self.ok("retry.backoff_base")
            && self.ok("retry.backoff_max")
            && backoff_max < backoff_base
        {
            self.err(
                "retry.backoff_max",
                format!(
                    "must be >= retry.backoff_base ({}), got {}",
                    humantime::format_duration(backoff_base),
                    humantime::format_duration(backoff_max)
                ),
            );
        }
        let per_try_timeout =
            self.positive_duration("retry.per_try_timeout", r.per_try_timeout, secs(10));
        if self.ok("retry.per_try_timeout")
            && self.ok("proxy.request_timeout")
            && per_try_timeout > proxy.request_timeout
        {
            self.err(
                "retry.per_try_timeout",
                format!(
                    "must be <= proxy.request_timeout ({}), got {}",
                    humantime::format_duration(proxy.request_timeout),
                    humantime::format_duration(per_try_timeout)
                ),
            );
        }
        let budget_ratio = r.budget_ratio.unwrap_or(0.2);
        if !(0.0..=10.0).contains(&budget_ratio) {
            self.err(
                "retry.budget_ratio",
                format!("must be between 0 and 10 (retries per request), got {budget_ratio}"),
            );
        }
        RetryConfig {
            max_attempts: self.int("retry.max_attempts", r.max_attempts, 3, 1, Some(10)),
            backoff_base,
            backoff_max,
            max_retry_after: self.duration("retry.max_retry_after", r.max_retry_after, secs(5)),
            per_try_timeout,
            buffer_body: self.size(
                "retry.buffer_body",
                r.buffer_body,
                ByteSize(64 * ByteSize::KIB),
            ),
            budget_ratio,
            budget_min_per_sec: self.int(
                "retry.budget_min_per_sec",
                r.budget_min_per_sec,
                10,
                0,
                None,
            ),
        }
    }

    pub(super) fn fleet(&mut self, r: raw::RawFleet) -> FleetConfig {
        let backend = self.choice(
            "fleet.backend",
            r.backend,
            FleetBackend::Etcd,
            &[("etcd", FleetBackend::Etcd)],
        );
        let (endpoints, endpoints_file, tls) =
            self.fleet_endpoints(r.endpoints, r.endpoints_file, r.tls);
        let (username, password_file) = self.fleet_auth(r.username, r.password_file);
        let key = r.key.unwrap_or_default();
        if key.is_empty() {
            self.err("fleet.key", "required (e.g. \"/failway/my-service/mode\")");
        } else if !key.starts_with('/') {
            self.err(
                "fleet.key",
                format!("{key:?} is not an etcd key starting with \"/\" (e.g. \"/failway/my-service/mode\")"),
            );
        }
        let lease_ttl = self.duration("fleet.lease_ttl", r.lease_ttl, secs(10));
        if self.ok("fleet.lease_ttl") && lease_ttl < MIN_LEASE_TTL {
            self.err(
                "fleet.lease_ttl",
                format!(
                    "must be at least 2s (etcd's minimum lease), got {}",
                    humantime::format_duration(lease_ttl)
                ),
            );
        }
        let instance_id = r.instance_id.filter(|id| {
            if id.trim().is_empty() {
                self.err(
                    "fleet.instance_id",
                    "must not be empty; omit it to use $POD_NAME or hostname:admin port",
                );
            }
            !id.trim().is_empty()
        });
        FleetConfig {
            backend,
            endpoints,
            key,
            lease_ttl,
            failover_quorum: self.int("fleet.failover_quorum", r.failover_quorum, 1, 1, None),
            instance_id,
            endpoints_file,
            tls,
            username,
            password_file,
        }
    }

    /// `fleet.endpoints` or `fleet.endpoints_file`, and `fleet.tls`.
    fn fleet_endpoints(
        &mut self,
        endpoints: Option<Vec<String>>,
        endpoints_file: Option<String>,
        tls: Option<raw::RawUpstreamTls>,
    ) -> (Vec<http::Uri>, Option<PathBuf>, Option<UpstreamTls>) {
        let endpoints_file = self.file("fleet.endpoints_file", endpoints_file);
        let raw_endpoints = endpoints.unwrap_or_default();
        match (raw_endpoints.is_empty(), endpoints_file.is_some()) {
            (true, false) => self.err(
                "fleet.endpoints",
                "must list at least one etcd endpoint (e.g. [\"http://127.0.0.1:2379\"]), or set fleet.endpoints_file",
            ),
            (false, true) => self.err(
                "fleet.endpoints_file",
                "set together with fleet.endpoints; use one of them",
            ),
            _ => {}
        }
        let endpoints: Vec<http::Uri> = raw_endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| self.url(&format!("fleet.endpoints[{i}]"), e))
            .collect();
        // One client setup serves every endpoint: TLS is on for all or none.
        let https = endpoints
            .iter()
            .filter(|u| u.scheme_str() == Some("https"))
            .count();
        if https != 0 && https != endpoints.len() {
            self.err(
                "fleet.endpoints",
                "mixes http and https endpoints; use one scheme for all",
            );
        }
        let tls = tls.map(|t| self.upstream_tls("fleet.tls", t));
        if tls.is_some() && !endpoints.is_empty() && https == 0 {
            self.err(
                "fleet.tls",
                "set, but fleet.endpoints are http://; use https:// endpoints or remove tls",
            );
        }
        (endpoints, endpoints_file, tls)
    }

    /// `fleet.username` with `fleet.password_file`: both or neither.
    fn fleet_auth(
        &mut self,
        username: Option<String>,
        password_file: Option<String>,
    ) -> (Option<String>, Option<PathBuf>) {
        let username = username.filter(|u| {
            let valid = !u.trim().is_empty();
            if !valid {
                self.err(
                    "fleet.username",
                    "must not be empty; omit it when etcd has no authentication",
                );
            }
            valid
        });
        let password_file = self.file("fleet.password_file", password_file);
        match (&username, &password_file) {
            (Some(_), None) => {
                self.err("fleet.password_file", "required when fleet.username is set")
            }
            (None, Some(_)) => {
                self.err("fleet.username", "required when fleet.password_file is set")
            }
            _ => {}
        }
        (username, password_file)
    }
}
