//! The upstream and health sections: origins, upstream TLS files, the probe
//! request and its headers (whose values are kept but never echoed in an
//! error: they often carry credentials).

use std::str::FromStr;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri};

use super::super::raw;
use super::super::{
    HealthConfig, PassiveHealthConfig, StatusRanges, UpstreamConfig, UpstreamTls, Upstreams,
};
use super::values::{quote_key, same_origin};
use super::{secs, Validator};

/// `upstreams.*.max_connections` by default: with the default
/// `proxy.max_connections` and the reserve, what a 1,500-descriptor limit
/// still holds next to 600 client connections.
const DEFAULT_UPSTREAM_CONNECTIONS: usize = 256;
/// Linux's default ceiling for open files per process (`fs.nr_open`).
const MAX_UPSTREAM_CONNECTIONS: i64 = 1 << 20;

impl Validator<'_> {
    pub(super) fn upstreams(&mut self, r: raw::RawUpstreams) -> Upstreams {
        let primary = self.upstream("upstreams.primary", r.primary);
        let replica = self.upstream("upstreams.replica", r.replica);
        if self.ok("upstreams.primary.url")
            && self.ok("upstreams.replica.url")
            && same_origin(&primary.url, &replica.url)
        {
            self.err(
                "upstreams.replica.url",
                format!(
                    "{} is also upstreams.primary.url; the replica must be another region",
                    replica.url
                ),
            );
        }
        Upstreams { primary, replica }
    }

    fn upstream(&mut self, path: &str, r: Option<raw::RawUpstream>) -> UpstreamConfig {
        let r = r.unwrap_or_else(|| {
            self.err(
                path,
                format!("missing; add [{path}] with url = \"https://...\""),
            );
            // Keeps validating the rest; this config is never returned.
            raw::RawUpstream {
                url: Some("http://0.0.0.0".to_owned()),
                ..Default::default()
            }
        });
        let url_path = format!("{path}.url");
        let url = match r.url {
            Some(u) => self.url(&url_path, &u),
            None => {
                self.err(
                    &url_path,
                    "required (e.g. \"https://us-south.kms.cloud.ibm.com\")",
                );
                None
            }
        };
        let url = url.unwrap_or_else(|| Uri::from_static("http://0.0.0.0/"));
        let tls = r.tls.map(|t| self.upstream_tls(&format!("{path}.tls"), t));
        if tls.is_some() && self.ok(&url_path) && url.scheme() != Some(&http::uri::Scheme::HTTPS) {
            self.err(
                format!("{path}.tls"),
                format!("set, but {url_path} ({url}) is not https://; use https:// or remove tls"),
            );
        }
        UpstreamConfig {
            url,
            tls,
            resolve_every: self.positive_duration(
                &format!("{path}.resolve_every"),
                r.resolve_every,
                secs(30),
            ),
            http2: r.http2.unwrap_or(false),
            pool_idle_timeout: self.positive_duration(
                &format!("{path}.pool_idle_timeout"),
                r.pool_idle_timeout,
                secs(30),
            ),
            pool_max_lifetime: self.positive_duration(
                &format!("{path}.pool_max_lifetime"),
                r.pool_max_lifetime,
                secs(300),
            ),
            max_connections: self.int(
                &format!("{path}.max_connections"),
                r.max_connections,
                DEFAULT_UPSTREAM_CONNECTIONS,
                1,
                Some(MAX_UPSTREAM_CONNECTIONS),
            ),
        }
    }

    pub(super) fn upstream_tls(&mut self, path: &str, t: raw::RawUpstreamTls) -> UpstreamTls {
        let ca = self.file(&format!("{path}.ca"), t.ca);
        let client_cert = self.file(&format!("{path}.client_cert"), t.client_cert);
        let client_key = self.file(&format!("{path}.client_key"), t.client_key);
        match (&client_cert, &client_key) {
            (Some(_), None) => self.err(
                format!("{path}.client_key"),
                "required when client_cert is set",
            ),
            (None, Some(_)) => self.err(
                format!("{path}.client_cert"),
                "required when client_key is set",
            ),
            _ => {}
        }
        let server_name = t.server_name.filter(|n| {
            let valid =
                !n.is_empty() && !n.contains(|c: char| c.is_whitespace() || "/:@".contains(c));
            if !valid {
                self.err(
                    format!("{path}.server_name"),
                    format!("{n:?} is not a DNS name (e.g. \"us-south.kms.cloud.ibm.com\")"),
                );
            }
            valid
        });
        UpstreamTls {
            ca,
            client_cert,
            client_key,
            server_name,
        }
    }

    pub(super) fn health(&mut self, r: raw::RawHealth) -> HealthConfig {
        let method = r
            .method
            .and_then(|m| self.method("health.method", &m))
            .unwrap_or(Method::GET);
        let path = r.path.unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') || http::uri::PathAndQuery::from_str(&path).is_err() {
            self.err(
                "health.path",
                format!("{path:?} is not a path starting with \"/\" (e.g. \"/\", \"/healthz\", \"/api/v2/keys?limit=1\")"),
            );
        }
        let default_statuses = StatusRanges::single_range(200, 499);
        let healthy_statuses = match r.healthy_statuses {
            None => default_statuses,
            Some(s) => s.parse::<StatusRanges>().unwrap_or_else(|e| {
                self.err("health.healthy_statuses", e.to_string());
                default_statuses
            }),
        };
        let interval = self.positive_duration("health.interval", r.interval, secs(2));
        let timeout = self.positive_duration("health.timeout", r.timeout, secs(1));
        if self.ok("health.interval") && self.ok("health.timeout") && timeout >= interval {
            self.err(
                "health.timeout",
                format!(
                    "must be less than health.interval ({}), got {}",
                    humantime::format_duration(interval),
                    humantime::format_duration(timeout)
                ),
            );
        }
        let authorization_file = self.file("health.authorization_file", r.authorization_file);
        let headers =
            self.health_headers(r.headers.unwrap_or_default(), authorization_file.is_some());
        let passive = r.passive;
        let error_ratio = passive.error_ratio.unwrap_or(0.5);
        if !(error_ratio > 0.0 && error_ratio <= 1.0) {
            self.err(
                "health.passive.error_ratio",
                format!("must be greater than 0 and at most 1, got {error_ratio}"),
            );
        }
        HealthConfig {
            method,
            path,
            healthy_statuses,
            interval,
            timeout,
            unhealthy_threshold: self.int(
                "health.unhealthy_threshold",
                r.unhealthy_threshold,
                3,
                1,
                None,
            ),
            healthy_threshold: self.int(
                "health.healthy_threshold",
                r.healthy_threshold,
                2,
                1,
                None,
            ),
            headers,
            authorization_file,
            passive: PassiveHealthConfig {
                window: self.positive_duration("health.passive.window", passive.window, secs(10)),
                min_requests: self.int(
                    "health.passive.min_requests",
                    passive.min_requests,
                    20,
                    1,
                    None,
                ),
                error_ratio,
            },
        }
    }

    fn health_headers(
        &mut self,
        raw: raw::OrderedStrings,
        has_authorization_file: bool,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::new();
        for (name, value) in raw.0 {
            let path = format!("health.headers.{}", quote_key(&name));
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                self.err(
                    path,
                    "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
                );
                continue;
            };
            if header == http::header::AUTHORIZATION && has_authorization_file {
                self.err(
                    path,
                    "conflicts with health.authorization_file, which sets Authorization; keep one",
                );
                continue;
            }
            // The value is never echoed: probe headers often carry credentials.
            match HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.push((header, v));
                }
                Err(_) => self.err(
                    path,
                    "value is not a valid header value (visible ASCII, spaces and tabs only)",
                ),
            }
        }
        headers
    }
}
