//! Configuration: a raw serde mirror of the TOML file (`raw.rs`, every struct
//! `deny_unknown_fields`) validated into the typed [`Config`] below, whose
//! fields cannot hold invalid values (durations, sizes, socket addresses,
//! URIs, enums). Every error names its key path and what would be valid.
//!
//! The whole schema of docs/design.md §5 is validated here, including sections whose
//! features land later, so no key ever needs renaming.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, StatusCode};

// The classification settings belong to `classify`; named here too, as
// every other section's type is.
pub use crate::classify::{ClassifyConfig, ClassifyRule, Profile};

mod effective;
mod error;
mod keypath;
mod raw;
mod service;
#[cfg(test)]
mod tests;
mod types;
mod validate;

pub use effective::origin;
pub use error::{ConfigError, ConfigErrors};
pub use service::{hosts_take, prefix_takes, HostPattern, ServiceConfig, DEFAULT_SERVICE};
pub use types::{
    ByteSize, Cidr, ParseByteSizeError, ParseCidrError, ParseStatusRangesError, StatusRanges,
};

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub upstreams: Upstreams,
    pub health: HealthConfig,
    pub failover: FailoverConfig,
    pub state: StateConfig,
    pub classify: ClassifyConfig,
    pub retry: RetryConfig,
    pub fleet: Option<FleetConfig>,
    pub audit: AuditConfig,
    pub rewrite: Vec<RewriteRule>,
    /// `[[hooks]]`: where events are POSTed.
    pub hooks: Vec<HookConfig>,
    /// `[[key_pairs]]`: the duplicated keys whose interchangeability is checked.
    pub key_pairs: KeyPairs,
    pub key_check: KeyCheckConfig,
    /// The `[[service]]` blocks, inherited keys filled in; empty in the
    /// single-pair form (see [`Config::services`]).
    pub services: Vec<ServiceConfig>,
    /// Folder the config file lives in; relative paths were resolved against it.
    pub base_dir: PathBuf,
    /// Non-fatal findings (`failway check` prints them), e.g. no `state.path`.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub tls: Option<ServerTls>,
    pub request_timeout: Duration,
    pub max_request_body: ByteSize,
    pub max_header_bytes: ByteSize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub idle_timeout: Duration,
    /// A client connection that takes no response bytes for this long is
    /// closed (an h2 stream whose window stays shut is reset).
    pub response_idle_timeout: Duration,
    pub host_header: HostHeader,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    pub trusted_proxies: Vec<Cidr>,
    /// `None`: the CPUs available to the process.
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHeader {
    /// `Host` is set to the upstream's authority (the default).
    Upstream,
    /// The client's `Host` is forwarded unchanged.
    Preserve,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    /// One `NAME TOKEN` a line: each operator's own token, named in the
    /// audit file (`by`).
    pub tokens_file: Option<PathBuf>,
    pub probe_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstreams {
    pub primary: UpstreamConfig,
    pub replica: UpstreamConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Scheme and authority only (`http://host:port` or `https://host`); no path.
    pub url: http::Uri,
    pub tls: Option<UpstreamTls>,
    pub resolve_every: Duration,
    pub http2: bool,
    pub pool_idle_timeout: Duration,
    pub pool_max_lifetime: Duration,
    /// Upstream connections to this region at most (HTTP/1.1); for
    /// `http2`, requests awaiting their response head at most.
    pub max_connections: usize,
}

impl UpstreamConfig {
    pub fn is_https(&self) -> bool {
        self.url.scheme() == Some(&http::uri::Scheme::HTTPS)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub method: Method,
    /// Path and optional query, starting with `/`.
    pub path: String,
    pub healthy_statuses: StatusRanges,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// Extra probe headers, in file order. Values are secret-ish: never printed.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub authorization_file: Option<PathBuf>,
    pub passive: PassiveHealthConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealthConfig {
    pub window: Duration,
    pub min_requests: u32,
    /// In (0, 1].
    pub error_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverMode {
    Auto,
    Manual,
    /// Decide and report what would happen; route and refuse as `primary`.
    Shadow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailbackMode {
    Safe,
    Manual,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailoverConfig {
    pub mode: FailoverMode,
    /// `None` = `"never"`: writes are enabled by an operator only.
    pub read_only_window: Option<Duration>,
    pub failback: FailbackMode,
    pub failback_after: Duration,
    /// Resolved default: 409 for `key-protect`, 503 for `http-methods`.
    pub blocked_write_status: StatusCode,
    pub blocked_retry_after: Duration,
    /// The longest drill `POST /admin/drill` accepts.
    pub max_drill: Duration,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateConfig {
    pub path: Option<PathBuf>,
}

/// `[audit]`: the audit file (none when `path` is unset).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    pub path: Option<PathBuf>,
    /// The file is rotated before a line would take it past this size.
    pub max_size: ByteSize,
    /// Rotated files kept (`audit.jsonl.1` ... `audit.jsonl.<keep>`).
    pub keep: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Total tries, the first included (>= 1).
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_retry_after: Duration,
    pub per_try_timeout: Duration,
    pub buffer_body: ByteSize,
    pub budget_ratio: f64,
    pub budget_min_per_sec: u32,
}

/// What a hook subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    /// A mode transition, whatever its trigger.
    Transition,
    /// An operator action, accepted or refused.
    Operator,
    /// A drill's start and end (with its report).
    Drill,
    /// The replica-writes latch set or cleared.
    Latch,
    /// A configuration reload, applied or rejected.
    Reload,
}

impl HookEvent {
    pub const ALL: [HookEvent; 5] = [
        HookEvent::Transition,
        HookEvent::Operator,
        HookEvent::Drill,
        HookEvent::Latch,
        HookEvent::Reload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Transition => "transition",
            HookEvent::Operator => "operator",
            HookEvent::Drill => "drill",
            HookEvent::Latch => "latch",
            HookEvent::Reload => "reload",
        }
    }
}

/// One `[[hooks]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HookConfig {
    /// Where the JSON POST goes; its path and query may hold a secret (chat
    /// webhooks put one there), so only its origin is ever printed.
    pub url: http::Uri,
    pub events: Vec<HookEvent>,
    /// Lines `Name: value` added to each POST, read at each delivery.
    pub headers_file: Option<PathBuf>,
    /// Bound on one delivery attempt (connect, answer and its body).
    pub timeout: Duration,
    /// Attempts per event before it is given up (counted as `failed`).
    pub max_attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub backend: FleetBackend,
    /// From `fleet.endpoints`; empty when `endpoints_file` names them.
    pub endpoints: Vec<http::Uri>,
    /// A file listing the endpoints (one per line or comma-separated), read
    /// at start and again when reconnecting, so a Kubernetes Secret can
    /// carry them.
    pub endpoints_file: Option<PathBuf>,
    pub key: String,
    pub lease_ttl: Duration,
    pub failover_quorum: u32,
    pub instance_id: Option<String>,
    /// TLS towards etcd (`ca`, `client_cert`, `client_key`, `server_name`);
    /// https endpoints use the platform roots without it.
    pub tls: Option<UpstreamTls>,
    /// etcd authentication: the user, with its password read from
    /// `password_file` each time failway authenticates.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetBackend {
    Etcd,
}

/// A duplicated key to watch: `primary` in the primary's instance and
/// `replica` in the replica's hold the same material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairConfig {
    /// The `pair` label value ([a-z0-9_-], bounded by configuration).
    pub name: String,
    pub primary: String,
    pub replica: String,
}

/// Which key pairs a service checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPairs {
    /// `[[key_pairs]]` as written (none: no check runs).
    Listed(Vec<KeyPairConfig>),
    /// `key_pairs = "from-rewrite"`: every path-segment mapping of
    /// `[[rewrite]]` whose primary value is shaped like a key ID.
    FromRewrite,
}

impl Default for KeyPairs {
    fn default() -> Self {
        KeyPairs::Listed(Vec::new())
    }
}

/// `[key_check]`: how often the pairs are checked, and the token sent.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCheckConfig {
    pub interval: Duration,
    /// Read again when it changes; a bare token is sent as `Bearer`.
    /// `None`: `health.authorization_file`, if any.
    pub authorization_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RewriteKind {
    /// Rewrites the value of this header (lower-cased name).
    Header(http::HeaderName),
    /// Rewrites any path segment equal to `primary`.
    PathSegment,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RewriteRule {
    pub kind: RewriteKind,
    pub primary: String,
    pub replica: String,
}

impl Config {
    /// Parses and validates a config held in memory; relative paths resolve
    /// against `base_dir`. Returns every error found, not just the first.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        validate::from_toml_str(text, base_dir)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single(ConfigError::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            ))
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Self::from_toml_str(&text, &base)
    }

    /// The effective configuration as TOML, every key with its value, secrets
    /// (probe header values) replaced by `"<redacted>"`. `failway check` prints it.
    pub fn to_effective_toml(&self) -> String {
        effective::effective_toml(self)
    }

    /// Whether `ip` may set `X-Forwarded-For` (it is in `proxy.trusted_proxies`).
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.proxy.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}
