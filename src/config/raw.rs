//! The config file as written: a serde mirror of docs/design.md §5. Every struct
//! denies unknown keys, and every value is optional and kept in its written
//! form (durations and sizes as strings, integers as `i64`) so that `validate`
//! can apply the defaults and report each bad value with its key path and what
//! would be valid. Nothing here checks a value.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub upstreams: RawUpstreams,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub failover: RawFailover,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub classify: RawClassify,
    #[serde(default)]
    pub retry: RawRetry,
    pub fleet: Option<RawFleet>,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub rewrite: Vec<RawRewrite>,
    #[serde(default)]
    pub hooks: Vec<RawHook>,
    /// `[[key_pairs]]` or `key_pairs = "from-rewrite"`: read by
    /// `validate::keys`, which names each bad entry's key.
    pub key_pairs: Option<toml::Value>,
    pub key_check: Option<RawKeyCheck>,
    /// The `[[service]]` form; checked here for its keys and types only
    /// (`validate::services` merges each block over the top level).
    #[serde(default)]
    pub service: Vec<RawService>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub headers_file: Option<String>,
    pub timeout: Option<String>,
    pub max_attempts: Option<i64>,
}

// The sections are deserialized for their keys and types only (errors then
// carry the file's line); the values are read from the merged table.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub name: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub path_prefix: Option<String>,
    pub upstreams: Option<RawUpstreams>,
    pub health: Option<RawHealth>,
    pub failover: Option<RawFailover>,
    pub classify: Option<RawClassify>,
    pub retry: Option<RawRetry>,
    #[serde(default)]
    pub rewrite: Vec<RawRewrite>,
    pub key_pairs: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeyCheck {
    pub interval: Option<String>,
    pub authorization_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub listen: Option<String>,
    pub tls: Option<RawServerTls>,
    pub request_timeout: Option<String>,
    pub max_request_body: Option<String>,
    pub max_header_bytes: Option<String>,
    pub max_headers: Option<i64>,
    pub header_read_timeout: Option<String>,
    pub body_idle_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub response_idle_timeout: Option<String>,
    pub host_header: Option<String>,
    pub shutdown_grace: Option<String>,
    pub max_connections: Option<i64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub worker_threads: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub tokens_file: Option<String>,
    pub probe_listen: Option<String>,
}

/// Both upstreams are required; `validate` reports a missing one by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreams {
    pub primary: Option<RawUpstream>,
    pub replica: Option<RawUpstream>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub url: Option<String>,
    pub tls: Option<RawUpstreamTls>,
    pub resolve_every: Option<String>,
    pub http2: Option<bool>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_lifetime: Option<String>,
    pub max_connections: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub method: Option<String>,
    pub path: Option<String>,
    pub healthy_statuses: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub unhealthy_threshold: Option<i64>,
    pub healthy_threshold: Option<i64>,
    pub headers: Option<OrderedStrings>,
    pub authorization_file: Option<String>,
    #[serde(default)]
    pub passive: RawPassive,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassive {
    pub window: Option<String>,
    pub min_requests: Option<i64>,
    pub error_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFailover {
    pub mode: Option<String>,
    pub read_only_window: Option<String>,
    pub failback: Option<String>,
    pub failback_after: Option<String>,
    pub blocked_write_status: Option<i64>,
    pub blocked_retry_after: Option<String>,
    pub max_drill: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub path: Option<String>,
    pub max_size: Option<String>,
    pub keep: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClassify {
    pub profile: Option<String>,
    #[serde(default)]
    pub rules: Vec<RawClassifyRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClassifyRule {
    pub methods: Option<Vec<String>>,
    pub path: Option<String>,
    pub action: Option<String>,
    pub class: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub max_attempts: Option<i64>,
    pub backoff_base: Option<String>,
    pub backoff_max: Option<String>,
    pub max_retry_after: Option<String>,
    pub per_try_timeout: Option<String>,
    pub buffer_body: Option<String>,
    pub budget_ratio: Option<f64>,
    pub budget_min_per_sec: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub backend: Option<String>,
    pub endpoints: Option<Vec<String>>,
    pub key: Option<String>,
    pub lease_ttl: Option<String>,
    pub failover_quorum: Option<i64>,
    pub instance_id: Option<String>,
    pub endpoints_file: Option<String>,
    pub tls: Option<RawUpstreamTls>,
    pub username: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRewrite {
    pub header: Option<String>,
    pub path_segment: Option<bool>,
    pub primary: Option<String>,
    pub replica: Option<String>,
}

/// A table of string values kept in file order (the `toml` map type sorts its
/// keys, and probe headers are sent in the order written).
#[derive(Debug, Default)]
pub(super) struct OrderedStrings(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedStrings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedStrings;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of string values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    out.push(entry);
                }
                Ok(OrderedStrings(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}
