//! Prints a validated [`Config`] back as TOML: every key with its resolved
//! value (defaults filled in, relative paths resolved, the profile's
//! `blocked_write_status` chosen), in the order of docs/design.md §5, so
//! `failway check` shows what will actually run. The output parses back to the
//! same configuration, except that probe header values are printed as
//! `"<redacted>"`: they often carry credentials. Files are never read here.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{
    AdminConfig, ClassifyConfig, Config, FailbackMode, FailoverConfig, FailoverMode, FleetBackend,
    FleetConfig, HealthConfig, HostHeader, KeyCheckConfig, KeyPairs, ProxyConfig, RetryConfig,
    RewriteKind, RewriteRule, ServiceConfig, UpstreamConfig, UpstreamTls,
};

pub(super) const REDACTED: &str = "<redacted>";

pub(super) fn effective_toml(c: &Config) -> String {
    let mut w = Writer::default();
    proxy(&mut w, &c.proxy);
    admin(&mut w, &c.admin);
    if !c.has_service_blocks() {
        upstream(&mut w, "upstreams.primary", &c.upstreams.primary);
        upstream(&mut w, "upstreams.replica", &c.upstreams.replica);
    }
    health(&mut w, &c.health);
    failover(&mut w, &c.failover);
    w.section("state");
    match &c.state.path {
        Some(f) => w.kv("path", path(f)),
        None => w.comment("path is not set: the failover state is not persisted"),
    }
    classify(&mut w, &c.classify);
    retry(&mut w, &c.retry);
    fleet(&mut w, c.fleet.as_ref());
    w.section("audit");
    match &c.audit.path {
        Some(f) => w.kv("path", path(f)),
        None => w.comment("path is not set: no audit file is written"),
    }
    w.kv("max_size", s(&c.audit.max_size.to_string()));
    w.kv("keep", c.audit.keep.to_string());
    hooks(&mut w, &c.hooks);
    key_check(&mut w, &c.key_check);
    if c.has_service_blocks() {
        for svc in &c.services {
            service(&mut w, svc);
        }
    } else {
        rewrite(&mut w, &c.rewrite);
        key_pairs(&mut w, &c.key_pairs);
    }
    w.out
}

/// One `[[service]]` block with every section as it takes effect.
fn service(w: &mut Writer, svc: &ServiceConfig) {
    w.prefix = "";
    w.array_section("service");
    w.kv("name", s(&svc.name));
    w.kv("hosts", list(svc.hosts.iter().map(|h| s(&h.to_string()))));
    w.kv("path_prefix", s(&svc.path_prefix));
    w.prefix = "service.";
    upstream(w, "upstreams.primary", &svc.upstreams.primary);
    upstream(w, "upstreams.replica", &svc.upstreams.replica);
    health(w, &svc.health);
    failover(w, &svc.failover);
    classify(w, &svc.classify);
    retry(w, &svc.retry);
    rewrite(w, &svc.rewrite);
    key_pairs(w, &svc.key_pairs);
    w.prefix = "";
}

fn proxy(w: &mut Writer, p: &ProxyConfig) {
    w.section("proxy");
    w.kv("listen", s(&p.listen.to_string()));
    match &p.tls {
        Some(t) => w.kv(
            "tls",
            format!("{{ cert = {}, key = {} }}", path(&t.cert), path(&t.key)),
        ),
        None => w.comment("tls is not set: plain HTTP"),
    }
    w.kv("request_timeout", dur(p.request_timeout));
    w.kv("max_request_body", s(&p.max_request_body.to_string()));
    w.kv("max_header_bytes", s(&p.max_header_bytes.to_string()));
    w.kv("max_headers", p.max_headers.to_string());
    w.kv("header_read_timeout", dur(p.header_read_timeout));
    w.kv("body_idle_timeout", dur(p.body_idle_timeout));
    w.kv("idle_timeout", dur(p.idle_timeout));
    w.kv("response_idle_timeout", dur(p.response_idle_timeout));
    let host_header = match p.host_header {
        HostHeader::Upstream => "upstream",
        HostHeader::Preserve => "preserve",
    };
    w.kv("host_header", s(host_header));
    w.kv("shutdown_grace", dur(p.shutdown_grace));
    w.kv("max_connections", p.max_connections.to_string());
    w.kv(
        "trusted_proxies",
        list(p.trusted_proxies.iter().map(|c| s(&c.to_string()))),
    );
    match p.worker_threads {
        Some(n) => w.kv("worker_threads", n.to_string()),
        None => w.comment("worker_threads is not set: the CPUs available to the process"),
    }
}

fn admin(w: &mut Writer, a: &AdminConfig) {
    w.section("admin");
    w.kv("listen", s(&a.listen.to_string()));
    match &a.token_file {
        Some(f) => w.kv("token_file", path(f)),
        None => w.comment("token_file is not set: the admin API takes no token"),
    }
    if let Some(f) = &a.tokens_file {
        w.kv("tokens_file", path(f));
    }
    match a.probe_listen {
        Some(addr) => w.kv("probe_listen", s(&addr.to_string())),
        None => w.comment("probe_listen is not set"),
    }
}

fn health(w: &mut Writer, h: &HealthConfig) {
    w.section("health");
    w.kv("method", s(h.method.as_str()));
    w.kv("path", s(&h.path));
    w.kv("healthy_statuses", s(&h.healthy_statuses.to_string()));
    w.kv("interval", dur(h.interval));
    w.kv("timeout", dur(h.timeout));
    w.kv("unhealthy_threshold", h.unhealthy_threshold.to_string());
    w.kv("healthy_threshold", h.healthy_threshold.to_string());
    let headers = h
        .headers
        .iter()
        .map(|(name, _)| format!("{} = {}", key(name.as_str()), s(REDACTED)));
    w.kv("headers", inline_table(headers));
    match &h.authorization_file {
        Some(f) => w.kv("authorization_file", path(f)),
        None => w.comment("authorization_file is not set"),
    }
    w.section("health.passive");
    w.kv("window", dur(h.passive.window));
    w.kv("min_requests", h.passive.min_requests.to_string());
    w.kv(
        "error_ratio",
        toml::Value::Float(h.passive.error_ratio).to_string(),
    );
}

fn failover(w: &mut Writer, f: &FailoverConfig) {
    w.section("failover");
    let mode = match f.mode {
        FailoverMode::Auto => "auto",
        FailoverMode::Manual => "manual",
        FailoverMode::Shadow => "shadow",
    };
    w.kv("mode", s(mode));
    w.kv(
        "read_only_window",
        f.read_only_window.map_or_else(|| s("never"), dur),
    );
    let failback = match f.failback {
        FailbackMode::Safe => "safe",
        FailbackMode::Manual => "manual",
    };
    w.kv("failback", s(failback));
    w.kv("failback_after", dur(f.failback_after));
    w.kv(
        "blocked_write_status",
        f.blocked_write_status.as_u16().to_string(),
    );
    w.kv("blocked_retry_after", dur(f.blocked_retry_after));
    w.kv("max_drill", dur(f.max_drill));
}

fn classify(w: &mut Writer, c: &ClassifyConfig) {
    w.section("classify");
    w.kv("profile", s(c.profile.as_str()));
    for rule in &c.rules {
        w.array_section("classify.rules");
        w.kv("methods", list(rule.methods.iter().map(|m| s(m.as_str()))));
        w.kv("path", s(&rule.path));
        if let Some(action) = &rule.action {
            w.kv("action", s(action));
        }
        w.kv("class", s(rule.class.as_str()));
    }
}

fn retry(w: &mut Writer, r: &RetryConfig) {
    w.section("retry");
    w.kv("max_attempts", r.max_attempts.to_string());
    w.kv("backoff_base", dur(r.backoff_base));
    w.kv("backoff_max", dur(r.backoff_max));
    w.kv("max_retry_after", dur(r.max_retry_after));
    w.kv("per_try_timeout", dur(r.per_try_timeout));
    w.kv("buffer_body", s(&r.buffer_body.to_string()));
    w.kv(
        "budget_ratio",
        toml::Value::Float(r.budget_ratio).to_string(),
    );
    w.kv("budget_min_per_sec", r.budget_min_per_sec.to_string());
}

/// A hook's URL is printed as its origin only: chat webhooks carry their
/// secret in the path.
fn hooks(w: &mut Writer, hooks: &[crate::config::HookConfig]) {
    for h in hooks {
        w.array_section("hooks");
        let redacted = h.url.path() != "/" || h.url.query().is_some();
        w.kv("url", s(&format!("{}/", origin(&h.url))));
        if redacted {
            w.comment("the url's path and query are not shown (they may hold a secret)");
        }
        w.kv("events", list(h.events.iter().map(|e| s(e.as_str()))));
        if let Some(f) = &h.headers_file {
            w.kv("headers_file", path(f));
        }
        w.kv("timeout", dur(h.timeout));
        w.kv("max_attempts", h.max_attempts.to_string());
    }
}

fn fleet(w: &mut Writer, fleet: Option<&FleetConfig>) {
    match fleet {
        Some(fl) => {
            w.section("fleet");
            let backend = match fl.backend {
                FleetBackend::Etcd => "etcd",
            };
            w.kv("backend", s(backend));
            match &fl.endpoints_file {
                Some(f) => w.kv("endpoints_file", path(f)),
                None => w.kv(
                    "endpoints",
                    list(fl.endpoints.iter().map(|e| s(&origin(e)))),
                ),
            }
            w.kv("key", s(&fl.key));
            w.kv("lease_ttl", dur(fl.lease_ttl));
            w.kv("failover_quorum", fl.failover_quorum.to_string());
            match &fl.instance_id {
                Some(id) => w.kv("instance_id", s(id)),
                None => w.comment("instance_id is not set: $POD_NAME, else hostname:admin port"),
            }
            if let Some(user) = &fl.username {
                w.kv("username", s(user));
            }
            if let Some(f) = &fl.password_file {
                w.kv("password_file", path(f));
            }
            if let Some(t) = &fl.tls {
                w.kv("tls", tls_table(t));
            }
        }
        None => {
            w.out.push('\n');
            w.comment("[fleet] is not set: this instance decides alone");
        }
    }
}

fn key_check(w: &mut Writer, k: &KeyCheckConfig) {
    w.section("key_check");
    w.kv("interval", dur(k.interval));
    if let Some(f) = &k.authorization_file {
        w.kv("authorization_file", path(f));
    }
}

fn key_pairs(w: &mut Writer, pairs: &KeyPairs) {
    let KeyPairs::Listed(list) = pairs else {
        return w.comment(
            "key_pairs = \"from-rewrite\": every key-ID path_segment mapping of [[rewrite]]",
        );
    };
    for p in list {
        w.array_section("key_pairs");
        w.kv("name", s(&p.name));
        w.kv("primary", s(&p.primary));
        w.kv("replica", s(&p.replica));
    }
}

fn rewrite(w: &mut Writer, rules: &[RewriteRule]) {
    for rule in rules {
        w.array_section("rewrite");
        match &rule.kind {
            RewriteKind::Header(name) => w.kv("header", s(name.as_str())),
            RewriteKind::PathSegment => w.kv("path_segment", "true".to_owned()),
        }
        w.kv("primary", s(&rule.primary));
        w.kv("replica", s(&rule.replica));
    }
}

fn upstream(w: &mut Writer, name: &str, u: &UpstreamConfig) {
    w.section(name);
    w.kv("url", s(&origin(&u.url)));
    match &u.tls {
        Some(t) => w.kv("tls", tls_table(t)),
        None => w.comment("tls is not set: system roots, no client certificate"),
    }
    w.kv("resolve_every", dur(u.resolve_every));
    w.kv("http2", u.http2.to_string());
    w.kv("pool_idle_timeout", dur(u.pool_idle_timeout));
    w.kv("pool_max_lifetime", dur(u.pool_max_lifetime));
    w.kv("max_connections", u.max_connections.to_string());
}

fn tls_table(t: &UpstreamTls) -> String {
    let mut fields = Vec::new();
    if let Some(ca) = &t.ca {
        fields.push(format!("ca = {}", path(ca)));
    }
    if let Some(cert) = &t.client_cert {
        fields.push(format!("client_cert = {}", path(cert)));
    }
    if let Some(k) = &t.client_key {
        fields.push(format!("client_key = {}", path(k)));
    }
    if let Some(n) = &t.server_name {
        fields.push(format!("server_name = {}", s(n)));
    }
    inline_table(fields.into_iter())
}

#[derive(Default)]
struct Writer {
    out: String,
    /// `service.` inside a `[[service]]` block.
    prefix: &'static str,
}

impl Writer {
    fn section(&mut self, name: &str) {
        self.blank_line();
        let _ = writeln!(self.out, "[{}{name}]", self.prefix);
    }

    fn array_section(&mut self, name: &str) {
        self.blank_line();
        let _ = writeln!(self.out, "[[{}{name}]]", self.prefix);
    }

    fn blank_line(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    fn kv(&mut self, k: &str, value: String) {
        let _ = writeln!(self.out, "{} = {value}", key(k));
    }

    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.out, "# {text}");
    }
}

/// A TOML string literal.
fn s(v: &str) -> String {
    toml::Value::String(v.to_owned()).to_string()
}

fn dur(d: Duration) -> String {
    s(&humantime::format_duration(d).to_string())
}

fn path(p: &Path) -> String {
    s(&p.to_string_lossy())
}

/// `scheme://authority`, as the config file takes it (no trailing `/`).
/// `scheme://authority` of `u`, without the path and query (which may
/// hold a secret: hooks, etcd endpoints).
pub fn origin(u: &http::Uri) -> String {
    match (u.scheme_str(), u.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => u.to_string(),
    }
}

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_owned()
    } else {
        s(k)
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

fn inline_table(fields: impl Iterator<Item = String>) -> String {
    let fields: Vec<String> = fields.collect();
    if fields.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", fields.join(", "))
    }
}
