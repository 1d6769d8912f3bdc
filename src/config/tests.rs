mod keys;
mod props;
mod services;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, StatusCode};

use super::*;
use crate::classify::Class;

const PRIMARY: &str = "https://us-south.kms.cloud.ibm.com";
const REPLICA: &str = "https://us-east.kms.cloud.ibm.com";

fn minimal() -> String {
    format!(
        "[upstreams.primary]\nurl = \"{PRIMARY}\"\n\n[upstreams.replica]\nurl = \"{REPLICA}\"\n"
    )
}

fn base() -> &'static Path {
    Path::new("/etc/failway")
}

/// The minimal config followed by `extra` (which must open its own sections).
fn parse(extra: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(&format!("{}\n{extra}", minimal()), base())
}

fn ok(extra: &str) -> Config {
    match parse(extra) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}\n--- input:\n{extra}"),
    }
}

fn error_lines(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, base()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that `extra` (after the minimal config) fails with an error line
/// starting with `expected` (the key path and the start of the message).
#[track_caller]
fn assert_err(extra: &str, expected: &str) {
    assert_err_in(&format!("{}\n{extra}", minimal()), expected);
}

#[track_caller]
fn assert_err_in(text: &str, expected: &str) {
    let lines = error_lines(text);
    assert!(
        lines.iter().any(|l| l.starts_with(expected)),
        "no error starting with {expected:?} in {lines:#?}"
    );
}

#[test]
fn minimal_config_takes_design_defaults() {
    let c = ok("");
    let s = Duration::from_secs;

    assert_eq!(
        c.proxy.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.proxy.tls, None);
    assert_eq!(c.proxy.request_timeout, s(25));
    assert_eq!(c.proxy.max_request_body, ByteSize(1024 * 1024));
    assert_eq!(c.proxy.max_header_bytes, ByteSize(16 * 1024));
    assert_eq!(c.proxy.max_headers, 100);
    assert_eq!(c.proxy.header_read_timeout, s(10));
    assert_eq!(c.proxy.body_idle_timeout, s(10));
    assert_eq!(c.proxy.idle_timeout, s(60));
    assert_eq!(c.proxy.response_idle_timeout, s(30));
    assert_eq!(c.proxy.host_header, HostHeader::Upstream);
    assert_eq!(c.proxy.shutdown_grace, s(25));
    assert_eq!(c.proxy.max_connections, 10_000);
    assert!(c.proxy.trusted_proxies.is_empty());
    assert_eq!(c.proxy.worker_threads, None);

    assert_eq!(
        c.admin.listen,
        "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.admin.token_file, None);
    assert_eq!(c.admin.probe_listen, None);

    for (u, url) in [
        (&c.upstreams.primary, PRIMARY),
        (&c.upstreams.replica, REPLICA),
    ] {
        assert_eq!(u.url.scheme_str(), Some("https"));
        assert_eq!(
            u.url.authority().map(|a| a.as_str()),
            url.strip_prefix("https://")
        );
        assert!(u.is_https());
        assert_eq!(u.tls, None);
        assert_eq!(u.resolve_every, s(30));
        assert!(!u.http2);
        assert_eq!(u.pool_idle_timeout, s(30));
        assert_eq!(u.pool_max_lifetime, s(300));
        assert_eq!(u.max_connections, 256);
    }

    let h = &c.health;
    assert_eq!(h.method, Method::GET);
    assert_eq!(h.path, "/");
    assert_eq!(h.healthy_statuses.to_string(), "200-499");
    assert_eq!(h.interval, s(2));
    assert_eq!(h.timeout, s(1));
    assert_eq!(h.unhealthy_threshold, 3);
    assert_eq!(h.healthy_threshold, 2);
    assert!(h.headers.is_empty());
    assert_eq!(h.authorization_file, None);
    assert_eq!(h.passive.window, s(10));
    assert_eq!(h.passive.min_requests, 20);
    assert_eq!(h.passive.error_ratio, 0.5);

    let f = &c.failover;
    assert_eq!(f.mode, FailoverMode::Auto);
    assert_eq!(f.read_only_window, Some(s(6 * 3600)));
    assert_eq!(f.failback, FailbackMode::Safe);
    assert_eq!(f.failback_after, s(300));
    assert_eq!(f.blocked_write_status, StatusCode::CONFLICT);
    assert_eq!(f.blocked_retry_after, s(30));

    assert_eq!(c.state.path, None);
    assert_eq!(c.classify.profile, Profile::KeyProtect);
    assert!(c.classify.rules.is_empty());

    let r = &c.retry;
    assert_eq!(r.max_attempts, 3);
    assert_eq!(r.backoff_base, Duration::from_millis(50));
    assert_eq!(r.backoff_max, s(1));
    assert_eq!(r.max_retry_after, s(5));
    assert_eq!(r.per_try_timeout, s(10));
    assert_eq!(r.buffer_body, ByteSize(64 * 1024));
    assert_eq!(r.budget_ratio, 0.2);
    assert_eq!(r.budget_min_per_sec, 10);

    assert_eq!(c.fleet, None);
    assert!(c.rewrite.is_empty());
    assert_eq!(c.base_dir, base());
    assert_eq!(
        c.warnings,
        vec!["state.path is not set: a restart forgets the failover mode, the read-only deadline and the replica-writes latch".to_owned()]
    );
}

#[test]
fn state_path_silences_the_warning() {
    let c = ok("[state]\npath = \"/var/lib/failway/state.json\"\n");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        c.state.path,
        Some(PathBuf::from("/var/lib/failway/state.json"))
    );
}

#[test]
fn audit_defaults_and_keys() {
    let c = ok("");
    assert_eq!(c.audit.path, None);
    assert_eq!(c.audit.max_size, ByteSize(64 * ByteSize::MIB));
    assert_eq!(c.audit.keep, 5);
    let c = ok("[audit]\npath = \"audit.jsonl\"\nmax_size = \"1MiB\"\nkeep = 2\n");
    assert_eq!(c.audit.path, Some(base().join("audit.jsonl")));
    assert_eq!(c.audit.max_size, ByteSize(ByteSize::MIB));
    assert_eq!(c.audit.keep, 2);
}

#[test]
fn fleet_defaults() {
    let c = ok("[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\nkey = \"/failway/kp/mode\"\n");
    let f = c.fleet.expect("fleet");
    assert_eq!(f.backend, FleetBackend::Etcd);
    assert_eq!(f.endpoints.len(), 1);
    assert_eq!(
        f.endpoints[0].authority().map(|a| a.as_str()),
        Some("127.0.0.1:2379")
    );
    assert_eq!(f.key, "/failway/kp/mode");
    assert_eq!(f.lease_ttl, Duration::from_secs(10));
    assert_eq!(f.failover_quorum, 1);
    assert_eq!(f.instance_id, None);
}

#[test]
fn blocked_write_status_defaults_by_profile() {
    let c = ok("[classify]\nprofile = \"http-methods\"\n");
    assert_eq!(
        c.failover.blocked_write_status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let c = ok("[classify]\nprofile = \"key-protect\"\n");
    assert_eq!(c.failover.blocked_write_status, StatusCode::CONFLICT);
    let c = ok("[failover]\nblocked_write_status = 423\n[classify]\nprofile = \"http-methods\"\n");
    assert_eq!(c.failover.blocked_write_status.as_u16(), 423);
}

#[test]
fn never_read_only_window_and_zero_failback_after() {
    let c = ok("[failover]\nread_only_window = \"never\"\nfailback_after = \"0s\"\n");
    assert_eq!(c.failover.read_only_window, None);
    assert_eq!(c.failover.failback_after, Duration::ZERO);
}

#[test]
fn value_errors_name_the_key_and_what_is_valid() {
    let cases = [
        ("[retry]\nbackoff_max = \"1x\"\n", "retry.backoff_max: \"1x\" is not a duration (e.g. \"250ms\", \"5s\", \"1m\")"),
        ("[proxy]\nmax_request_body = \"1XB\"\n", "proxy.max_request_body: \"1XB\" is not a size (e.g. \"64KiB\", \"1MiB\""),
        ("[failover]\nmode = \"sometimes\"\n", "failover.mode: \"sometimes\" is not one of \"auto\", \"manual\""),
        ("[failover]\nfailback = \"auto\"\n", "failover.failback: \"auto\" is not one of \"safe\", \"manual\""),
        ("[proxy]\nhost_header = \"client\"\n", "proxy.host_header: \"client\" is not one of \"upstream\", \"preserve\""),
        ("[classify]\nprofile = \"kp\"\n", "classify.profile: \"kp\" is not one of \"key-protect\", \"http-methods\""),
        ("[proxy]\nlisten = \"localhost:8080\"\n", "proxy.listen: \"localhost:8080\" is not an IP:port address"),
        ("[admin]\nlisten = \"9901\"\n", "admin.listen: \"9901\" is not an IP:port address (e.g. \"127.0.0.1:8080\""),
        ("[admin]\nprobe_listen = \"0.0.0.0\"\n", "admin.probe_listen: \"0.0.0.0\" is not an IP:port address"),
        ("[proxy]\nrequest_timeout = \"0s\"\n", "proxy.request_timeout: must be greater than 0"),
        ("[proxy]\nidle_timeout = \"0s\"\n", "proxy.idle_timeout: must be greater than 0"),
        ("[health.passive]\nwindow = \"0s\"\n", "health.passive.window: must be greater than 0"),
        ("[retry]\nper_try_timeout = \"30s\"\n", "retry.per_try_timeout: must be <= proxy.request_timeout (25s), got 30s"),
        ("[retry]\nbackoff_base = \"2s\"\n", "retry.backoff_max: must be >= retry.backoff_base (2s), got 1s"),
        ("[retry]\nmax_attempts = 0\n", "retry.max_attempts: must be between 1 and 10, got 0"),
        ("[retry]\nmax_attempts = 11\n", "retry.max_attempts: must be between 1 and 10, got 11"),
        ("[retry]\nbudget_ratio = 10.5\n", "retry.budget_ratio: must be between 0 and 10"),
        ("[retry]\nbudget_ratio = -0.1\n", "retry.budget_ratio: must be between 0 and 10"),
        ("[retry]\nbuffer_body = \"lots\"\n", "retry.buffer_body: \"lots\" is not a size"),
        ("[health]\ntimeout = \"2s\"\n", "health.timeout: must be less than health.interval (2s), got 2s"),
        ("[health]\nunhealthy_threshold = 0\n", "health.unhealthy_threshold: must be at least 1, got 0"),
        ("[health]\nhealthy_threshold = -1\n", "health.healthy_threshold: must be at least 1, got -1"),
        ("[health.passive]\nerror_ratio = 0.0\n", "health.passive.error_ratio: must be greater than 0 and at most 1"),
        ("[health.passive]\nerror_ratio = 1.5\n", "health.passive.error_ratio: must be greater than 0 and at most 1"),
        ("[health.passive]\nmin_requests = 0\n", "health.passive.min_requests: must be at least 1"),
        ("[health]\nhealthy_statuses = \"200-700\"\n", "health.healthy_statuses: \"200-700\" is not a list of status codes or ranges"),
        ("[health]\nmethod = \"G ET\"\n", "health.method: \"G ET\" is not an HTTP method"),
        ("[health]\nmethod = \"get\"\n", "health.method: \"get\" is not a method; methods are case-sensitive, use \"GET\""),
        ("[health]\npath = \"healthz\"\n", "health.path: \"healthz\" is not a path starting with \"/\""),
        ("[health]\nheaders = { \"bad name\" = \"x\" }\n", "health.headers.\"bad name\": is not a valid header name"),
        ("[health]\nheaders = { x-token = \"a\\nb\" }\n", "health.headers.x-token: value is not a valid header value"),
        (
            "[health]\nauthorization_file = \"probe-token\"\nheaders = { Authorization = \"Bearer x\" }\n",
            "health.headers.Authorization: conflicts with health.authorization_file",
        ),
        ("[proxy]\nmax_headers = 0\n", "proxy.max_headers: must be between 1 and 1000, got 0"),
        ("[proxy]\nmax_headers = 1001\n", "proxy.max_headers: must be between 1 and 1000, got 1001"),
        ("[proxy]\nmax_header_bytes = \"512B\"\n", "proxy.max_header_bytes: must be between 1KiB and 1MiB, got 512B"),
        ("[proxy]\nmax_header_bytes = \"2MiB\"\n", "proxy.max_header_bytes: must be between 1KiB and 1MiB, got 2MiB"),
        ("[proxy]\nmax_connections = 0\n", "proxy.max_connections: must be at least 1, got 0"),
        ("[proxy]\nresponse_idle_timeout = \"0s\"\n", "proxy.response_idle_timeout: must be greater than 0"),
        ("[proxy]\nworker_threads = 0\n", "proxy.worker_threads: must be between 1 and 1024, got 0"),
        ("[proxy]\nworker_threads = 2000\n", "proxy.worker_threads: must be between 1 and 1024, got 2000"),
        ("[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n", "proxy.trusted_proxies[1]: \"10.0.0.0/33\" is not a CIDR"),
        ("[proxy]\ntrusted_proxies = [\"10.1.2.3/8\"]\n", "proxy.trusted_proxies[0]: \"10.1.2.3/8\" is not a CIDR (e.g. \"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\"): host bits are set; the network is 10.0.0.0/8"),
        ("[proxy]\ntls = { cert = \"tls.crt\" }\n", "proxy.tls.key: required"),
        ("[proxy]\ntls = { key = \"tls.key\" }\n", "proxy.tls.cert: required"),
        ("[failover]\nread_only_window = \"forever\"\n", "failover.read_only_window: \"forever\" is not a duration (e.g. \"250ms\", \"5s\", \"1m\") or \"never\""),
        ("[failover]\nfailback_after = \"soon\"\n", "failover.failback_after: \"soon\" is not a duration"),
        ("[failover]\nblocked_write_status = 200\n", "failover.blocked_write_status: must be an HTTP error status in 400..=599"),
        ("[failover]\nblocked_write_status = 600\n", "failover.blocked_write_status: must be an HTTP error status in 400..=599"),
        ("[failover]\nblocked_retry_after = \"30\"\n", "failover.blocked_retry_after: \"30\" is not a duration"),
        ("[admin]\nlisten = \"0.0.0.0:9901\"\n", "admin.token_file: required because admin.listen (0.0.0.0:9901) is not a loopback address"),
        ("[admin]\nlisten = \"127.0.0.1:8080\"\n", "admin.listen: 127.0.0.1:8080 is already used by proxy.listen"),
        ("[state]\npath = \"\"\n", "state.path: must not be empty"),
        ("[audit]\npath = \"\"\n", "audit.path: must not be empty"),
        ("[audit]\nmax_size = \"12 parsecs\"\n", "audit.max_size: "),
        ("[audit]\nmax_size = \"100B\"\n", "audit.max_size: must be at least 1KiB"),
        ("[audit]\nkeep = -1\n", "audit.keep: must be between 0 and 1000, got -1"),
    ];
    for (extra, expected) in cases {
        assert_err(extra, expected);
    }
}

#[test]
fn admin_off_loopback_is_fine_with_a_token_file() {
    let c = ok("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_file = \"admin-token\"\n");
    assert_eq!(
        c.admin.token_file,
        Some(PathBuf::from("/etc/failway/admin-token"))
    );
    let c = ok("[admin]\nlisten = \"[::1]:9901\"\n");
    assert!(c.admin.listen.ip().is_loopback());
}

#[test]
fn port_zero_listeners_may_repeat() {
    let c = ok("[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nprobe_listen = \"127.0.0.1:0\"\n");
    assert_eq!(c.admin.probe_listen, Some("127.0.0.1:0".parse().unwrap()));
}

fn upstreams(primary: &str, replica: &str) -> String {
    format!(
        "[upstreams.primary]\nurl = \"{primary}\"\n\n[upstreams.replica]\nurl = \"{replica}\"\n"
    )
}

#[track_caller]
fn assert_url_err(primary: &str, expected: &str) {
    let lines = error_lines(&upstreams(primary, REPLICA));
    assert!(
        lines.iter().any(|l| l.starts_with(expected)),
        "no error starting with {expected:?} in {lines:#?}"
    );
}

#[test]
fn upstream_urls_are_origins() {
    assert_url_err(
        "ftp://host",
        "upstreams.primary.url: \"ftp://host\" has scheme \"ftp\"; only http and https",
    );
    assert_url_err(
        "us-south.kms.cloud.ibm.com",
        "upstreams.primary.url: \"us-south.kms.cloud.ibm.com\" needs a scheme and a host",
    );
    assert_url_err(
        "https://user:pw@host",
        "upstreams.primary.url: \"https://user:pw@host\" must not contain user info",
    );
    assert_url_err("https://host/api/v2", "upstreams.primary.url: \"https://host/api/v2\" has path \"/api/v2\"; only the origin is allowed (a path other than \"/\" is not supported");
    assert_url_err(
        "https://host/?a=1",
        "upstreams.primary.url: \"https://host/?a=1\" must not have a query",
    );
    assert_url_err(
        "https://host#frag",
        "upstreams.primary.url: \"https://host#frag\" must not have a query or fragment",
    );
    assert_url_err(
        "https://",
        "upstreams.primary.url: \"https://\" is not a URL",
    );

    let c = Config::from_toml_str(
        &upstreams("http://10.0.0.1:8080/", "https://replica.example"),
        base(),
    )
    .unwrap();
    assert_eq!(c.upstreams.primary.url.to_string(), "http://10.0.0.1:8080/");
    assert_eq!(c.upstreams.primary.url.path(), "/");
    assert!(!c.upstreams.primary.is_https());
    assert_eq!(c.upstreams.replica.url.host(), Some("replica.example"));
}

#[test]
fn replica_must_differ_from_primary() {
    for (p, r) in [
        (PRIMARY, PRIMARY),
        ("https://kms.example", "https://KMS.example:443/"),
        ("http://10.0.0.1", "http://10.0.0.1:80"),
    ] {
        let lines = error_lines(&upstreams(p, r));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("upstreams.replica.url: ")
                    && l.contains("is also upstreams.primary.url")),
            "{p} vs {r}: {lines:#?}"
        );
    }
    // Same host, other port: another server.
    Config::from_toml_str(
        &upstreams("http://10.0.0.1:8080", "http://10.0.0.1:8081"),
        base(),
    )
    .unwrap();
}

#[test]
fn missing_upstreams_are_named() {
    let lines = error_lines("[proxy]\nlisten = \"127.0.0.1:8080\"\n");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upstreams.primary: missing")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("upstreams.replica: missing")),
        "{lines:#?}"
    );
    let lines = error_lines(&format!(
        "[upstreams.primary]\nurl = \"{PRIMARY}\"\n[upstreams.replica]\nhttp2 = true\n"
    ));
    assert_eq!(
        lines,
        vec!["upstreams.replica.url: required (e.g. \"https://us-south.kms.cloud.ibm.com\")"]
    );
}

#[test]
fn upstream_tls_rules() {
    let text = format!(
        "[upstreams.primary]\nurl = \"{PRIMARY}\"\ntls = {{ client_cert = \"c.pem\" }}\n\
         [upstreams.replica]\nurl = \"http://replica.example\"\ntls = {{ ca = \"ca.pem\" }}\n"
    );
    let lines = error_lines(&text);
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("upstreams.primary.tls.client_key: required when client_cert is set")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("upstreams.replica.tls: set, but upstreams.replica.url (http://replica.example/) is not https://")), "{lines:#?}");
}

#[test]
fn classify_rules_are_checked_by_index() {
    let rules = |path: &str| {
        format!(
            "[[classify.rules]]\nmethods = [\"POST\"]\npath = \"/api/v2/reports/**\"\nclass = \"read\"\n\
             [[classify.rules]]\npath = \"/api/v2/keys/*\"\naction = \"wrap\"\nclass = \"read\"\n\
             [[classify.rules]]\npath = \"{path}\"\nclass = \"write\"\n"
        )
    };
    let c = ok(&rules("/api/v2/*/x"));
    assert_eq!(c.classify.rules.len(), 3);
    assert_eq!(c.classify.rules[0].methods, vec![Method::POST]);
    assert_eq!(c.classify.rules[0].class, Class::Read);
    assert!(c.classify.rules[1].methods.is_empty());
    assert_eq!(c.classify.rules[1].action.as_deref(), Some("wrap"));
    assert_eq!(c.classify.rules[2].class, Class::Write);
    ok("[[classify.rules]]\npath = \"/\"\nclass = \"read\"\n");

    assert_err(
        &rules("api/v2"),
        "classify.rules[2].path: \"api/v2\" must start with \"/\"",
    );
    assert_err(
        &rules("/api//keys"),
        "classify.rules[2].path: \"/api//keys\" has an empty segment",
    );
    assert_err(
        &rules("/api/keys/"),
        "classify.rules[2].path: \"/api/keys/\" has an empty segment",
    );
    assert_err(
        &rules("/api/ke*"),
        "classify.rules[2].path: \"/api/ke*\" uses * inside a segment",
    );
    assert_err(
        &rules("/api/**/keys"),
        "classify.rules[2].path: \"/api/**/keys\" has ** before the last segment",
    );
    assert_err(
        &rules("/api?action=wrap"),
        "classify.rules[2].path: \"/api?action=wrap\" must not contain a query",
    );
    assert_err(
        "[[classify.rules]]\nclass = \"read\"\n",
        "classify.rules[0].path: required",
    );
    assert_err(
        "[[classify.rules]]\npath = \"/a\"\n",
        "classify.rules[0].class: required: \"read\" or \"write\"",
    );
    assert_err(
        "[[classify.rules]]\npath = \"/a\"\nclass = \"readonly\"\n",
        "classify.rules[0].class: \"readonly\" is not one of \"read\", \"write\"",
    );
    assert_err(
        "[[classify.rules]]\npath = \"/a\"\nclass = \"read\"\nmethods = [\"GET\", \"P OST\"]\n",
        "classify.rules[0].methods[1]: \"P OST\" is not an HTTP method",
    );
    assert_err(
        "[[classify.rules]]\npath = \"/a\"\nclass = \"read\"\naction = \"\"\n",
        "classify.rules[0].action: must not be empty",
    );
}

fn rewrite(entries: &[(&str, &str, &str)]) -> String {
    entries
        .iter()
        .map(|(kind, p, r)| format!("[[rewrite]]\n{kind}\nprimary = \"{p}\"\nreplica = \"{r}\"\n"))
        .collect()
}

#[test]
fn rewrite_entries() {
    let h = "header = \"Bluemix-Instance\"";
    let seg = "path_segment = true";
    let c = ok(&rewrite(&[
        (h, "p-inst", "r-inst"),
        (seg, "p-key", "r-key"),
        (seg, "p-inst", "r-inst"),
    ]));
    assert_eq!(c.rewrite.len(), 3);
    assert_eq!(
        c.rewrite[0].kind,
        RewriteKind::Header(http::HeaderName::from_static("bluemix-instance"))
    );
    assert_eq!(c.rewrite[1].kind, RewriteKind::PathSegment);
    assert_eq!(
        (c.rewrite[1].primary.as_str(), c.rewrite[1].replica.as_str()),
        ("p-key", "r-key")
    );

    assert_err(
        &rewrite(&[
            (h, "abc", "x"),
            (seg, "k1", "k2"),
            (seg, "k3", "k4"),
            (h, "abc", "x"),
        ]),
        "rewrite[3]: duplicates rewrite[0] (header bluemix-instance, primary \"abc\")",
    );
    assert_err(
        &rewrite(&[(seg, "k1", "k2"), (seg, "k1", "k9")]),
        "rewrite[1]: conflicts with rewrite[0] (path_segment, primary \"k1\" maps to \"k2\" there and \"k9\" here)",
    );
    assert_err(
        &rewrite(&[(seg, "k1", "k2"), (seg, "k3", "k2")]),
        "rewrite[1]: conflicts with rewrite[0] (path_segment, replica \"k2\" is the target of primary \"k1\" there and \"k3\" here)",
    );
    assert_err(
        &rewrite(&[("", "a", "b")]),
        "rewrite[0]: needs exactly one of header = \"name\" or path_segment = true",
    );
    assert_err(
        &rewrite(&[("path_segment = false", "a", "b")]),
        "rewrite[0]: needs exactly one of",
    );
    assert_err(
        &rewrite(&[("header = \"h\"\npath_segment = true", "a", "b")]),
        "rewrite[0]: needs exactly one of",
    );
    assert_err(
        &rewrite(&[(h, "a", "a")]),
        "rewrite[0].replica: \"a\" equals primary",
    );
    assert_err(
        &rewrite(&[(h, "", "b")]),
        "rewrite[0].primary: required and must not be empty",
    );
    assert_err(
        &rewrite(&[(seg, "a/b", "c")]),
        "rewrite[0].primary: \"a/b\" is not a single path segment",
    );
    assert_err(
        &rewrite(&[("header = \"bad header\"", "a", "b")]),
        "rewrite[0].header: \"bad header\" is not a valid header name",
    );
}

#[test]
fn fleet_rules() {
    let fleet = |body: &str| format!("[fleet]\n{body}");
    let good = "endpoints = [\"http://127.0.0.1:2379\"]\nkey = \"/failway/kp/mode\"\n";
    assert_err(
        &fleet("key = \"/k\"\n"),
        "fleet.endpoints: must list at least one etcd endpoint",
    );
    assert_err(
        &fleet("endpoints = []\nkey = \"/k\"\n"),
        "fleet.endpoints: must list at least one etcd endpoint",
    );
    assert_err(
        &fleet("endpoints = [\"127.0.0.1:2379\"]\nkey = \"/k\"\n"),
        "fleet.endpoints[0]: \"127.0.0.1:2379\"",
    );
    assert_err(
        &fleet("endpoints = [\"http://a:2379\", \"grpc://b:2379\"]\nkey = \"/k\"\n"),
        "fleet.endpoints[1]: \"grpc://b:2379\" has scheme \"grpc\"",
    );
    assert_err(
        &fleet("endpoints = [\"http://a:2379\", \"https://b:2379\"]\nkey = \"/k\"\n"),
        "fleet.endpoints: mixes http and https endpoints; use one scheme for all",
    );
    assert_err(
        &fleet("endpoints = [\"http://a:2379\"]\n"),
        "fleet.key: required",
    );
    assert_err(
        &fleet("endpoints = [\"http://a:2379\"]\nkey = \"failway\"\n"),
        "fleet.key: \"failway\" is not an etcd key starting with \"/\"",
    );
    assert_err(
        &fleet(&format!("{good}lease_ttl = \"1s\"\n")),
        "fleet.lease_ttl: must be at least 2s (etcd's minimum lease), got 1s",
    );
    assert_err(
        &fleet(&format!("{good}failover_quorum = 0\n")),
        "fleet.failover_quorum: must be at least 1, got 0",
    );
    assert_err(
        &fleet(&format!("{good}backend = \"consul\"\n")),
        "fleet.backend: \"consul\" is not \"etcd\"",
    );
    assert_err(
        &fleet(&format!("{good}instance_id = \"\"\n")),
        "fleet.instance_id: must not be empty",
    );
    assert_err(
        &fleet("endpoints = [\"http://a:2379\"]\nendpoints_file = \"etcd\"\nkey = \"/k\"\n"),
        "fleet.endpoints_file: set together with fleet.endpoints; use one of them",
    );
    assert_err(
        &fleet(&format!("{good}tls = {{ ca = \"ca.pem\" }}\n")),
        "fleet.tls: set, but fleet.endpoints are http://",
    );
    assert_err(
        &fleet(&format!("{good}username = \"failway\"\n")),
        "fleet.password_file: required when fleet.username is set",
    );
    assert_err(
        &fleet(&format!("{good}password_file = \"pw\"\n")),
        "fleet.username: required when fleet.password_file is set",
    );
    assert_err(
        &fleet(
            "endpoints = [\"https://a:2379\"]\nkey = \"/k\"\ntls = { client_cert = \"c.pem\" }\n",
        ),
        "fleet.tls.client_key: required when client_cert is set",
    );
    let c = ok(&fleet(
        "endpoints_file = \"etcd-endpoints\"\nkey = \"/k\"\nusername = \"failway\"\npassword_file = \"pw\"\n\
         tls = { ca = \"ca.pem\", client_cert = \"c.pem\", client_key = \"k.pem\" }\n",
    ));
    let f = c.fleet.unwrap();
    assert!(f.endpoints.is_empty());
    assert!(f.endpoints_file.unwrap().ends_with("etcd-endpoints"));
    assert_eq!(f.username.as_deref(), Some("failway"));
    assert!(f.password_file.unwrap().ends_with("pw"));
    assert!(f.tls.unwrap().client_key.unwrap().ends_with("k.pem"));
    let c = ok(&fleet(&format!(
        "{good}lease_ttl = \"2s\"\nfailover_quorum = 2\ninstance_id = \"pod-a\"\n"
    )));
    let f = c.fleet.unwrap();
    assert_eq!(
        (f.lease_ttl, f.failover_quorum, f.instance_id.as_deref()),
        (Duration::from_secs(2), 2, Some("pod-a"))
    );
}

#[test]
fn several_errors_are_reported_at_once() {
    let err = parse(
        "[proxy]\nlisten = \"localhost:8080\"\nmax_headers = 0\n\
         [retry]\nbackoff_max = \"1x\"\nmax_attempts = 20\n\
         [failover]\nmode = \"sometimes\"\n\
         [[rewrite]]\nprimary = \"a\"\nreplica = \"b\"\n",
    )
    .unwrap_err();
    let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "proxy.listen",
            "proxy.max_headers",
            "failover.mode",
            "retry.backoff_max",
            "retry.max_attempts",
            "rewrite[0]"
        ]
    );
    // One error a line, each naming its key.
    let text = err.to_string();
    assert_eq!(text.lines().count(), 6);
    assert!(text.lines().all(|l| l.contains(": ")), "{text}");
    assert!(text.contains("use \"127.0.0.1:8080\""), "{text}");
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let cases = [
        ("[proxy]\nlistn = \"127.0.0.1:8080\"\n", "proxy.listn: unknown key, expected one of listen, tls, request_timeout"),
        ("[prxy]\nlisten = \"x\"\n", "prxy: unknown key, expected one of proxy"),
        ("[proxy]\ntls = { cert = \"a\", kee = \"b\" }\n", "proxy.tls.kee: unknown key, expected cert or key"),
        ("[proxy.tls]\ncert = \"a\"\nkey = \"b\"\npassword = \"c\"\n", "proxy.tls.password: unknown key"),
        ("[health.passive]\nratio = 0.5\n", "health.passive.ratio: unknown key, expected one of window, min_requests, error_ratio"),
        ("[health]\npassive.ratio = 0.5\n", "health.passive.ratio: unknown key"),
        ("[upstreams.primary.tls]\nsni = \"x\"\n", "upstreams.primary.tls.sni: unknown key"),
        ("[upstreams.backup]\nurl = \"https://x\"\n", "upstreams.backup: unknown key, expected primary or replica"),
        (
            "[[classify.rules]]\npath = \"/a\"\nclass = \"read\"\n[[classify.rules]]\npath = \"/b\"\nclas = \"read\"\n",
            "classify.rules[1].clas: unknown key, expected one of methods, path, action, class",
        ),
        (
            "[[rewrite]]\nheader = \"h\"\nprimary = \"a\"\nreplica = \"b\"\n[[rewrite]]\nheader = \"h\"\nprimary = \"c\"\nreplika = \"d\"\n",
            "rewrite[1].replika: unknown key",
        ),
        ("[fleet]\nendpoint = \"http://a:2379\"\n", "fleet.endpoint: unknown key, expected one of backend, endpoints"),
        ("[state]\nfile = \"s.json\"\n", "state.file: unknown key, expected path"),
    ];
    for (extra, expected) in cases {
        assert_err(extra, expected);
    }
    assert_err_in(
        &format!("bogus = 1\n{}", minimal()),
        "bogus: unknown key, expected one of proxy, admin, upstreams",
    );
    // The line is given too, so the key can be found in a long file.
    let lines = error_lines(&format!("{}\n[proxy]\nlistn = \"x\"\n", minimal()));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with("(at line 8, column 1)"), "{lines:?}");
}

#[test]
fn wrong_types_are_named_with_their_path() {
    assert_err(
        "[proxy]\nmax_headers = \"many\"\n",
        "proxy.max_headers: invalid type: string \"many\", expected an integer",
    );
    assert_err(
        "[retry]\nbudget_ratio = \"0.2\"\n",
        "retry.budget_ratio: invalid type: string \"0.2\", expected a number",
    );
    assert_err(
        "[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", 5]\n",
        "proxy.trusted_proxies[1]: invalid type: integer 5, expected a string",
    );
    assert_err(
        "[proxy]\ntrusted_proxies = \"10.0.0.0/8\"\n",
        "proxy.trusted_proxies: invalid type: string \"10.0.0.0/8\", expected an array",
    );
    assert_err_in(
        &format!("proxy = 5\n{}", minimal()),
        "proxy: invalid type: integer 5, expected a table",
    );
    assert_err(
        "[health]\nheaders = { \"x-a\" = 1 }\n",
        "health.headers.x-a: invalid type: integer 1, expected a string",
    );
    assert_err(
        "[upstreams.replica.tls]\nca = 1\n",
        "upstreams.replica.tls.ca: invalid type: integer 1, expected a string",
    );
}

#[test]
fn syntax_errors_give_the_line() {
    let lines = error_lines("[proxy]\nlisten = \"127.0.0.1:8080\n");
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("TOML syntax error at line 2, column"),
        "{lines:?}"
    );
    let lines = error_lines("[proxy]\nmax_headers = 1\nmax_headers = 2\n");
    assert!(
        lines[0].starts_with("TOML syntax error at line 3"),
        "{lines:?}"
    );
    assert!(lines[0].contains("duplicate key"), "{lines:?}");
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let c = ok(
        "[proxy]\ntls = { cert = \"tls/tls.crt\", key = \"/abs/tls.key\" }\n\
         [admin]\ntoken_file = \"admin-token\"\n\
         [health]\nauthorization_file = \"secrets/probe\"\n\
         [state]\npath = \"state.json\"\n",
    );
    let tls = c.proxy.tls.unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/failway/tls/tls.crt"));
    assert_eq!(tls.key, PathBuf::from("/abs/tls.key"));
    assert_eq!(
        c.admin.token_file,
        Some(PathBuf::from("/etc/failway/admin-token"))
    );
    assert_eq!(
        c.health.authorization_file,
        Some(PathBuf::from("/etc/failway/secrets/probe"))
    );
    assert_eq!(c.state.path, Some(PathBuf::from("/etc/failway/state.json")));

    let text = format!(
        "[upstreams.primary]\nurl = \"{PRIMARY}\"\n\
         tls = {{ ca = \"ca.pem\", client_cert = \"c.pem\", client_key = \"k.pem\", server_name = \"kms.example\" }}\n\
         [upstreams.replica]\nurl = \"{REPLICA}\"\n"
    );
    let c = Config::from_toml_str(&text, Path::new("conf")).unwrap();
    let tls = c.upstreams.primary.tls.unwrap();
    assert_eq!(tls.ca, Some(PathBuf::from("conf/ca.pem")));
    assert_eq!(tls.client_cert, Some(PathBuf::from("conf/c.pem")));
    assert_eq!(tls.client_key, Some(PathBuf::from("conf/k.pem")));
    assert_eq!(tls.server_name.as_deref(), Some("kms.example"));
}

/// A config that sets every key, most of them away from the default.
fn everything() -> String {
    format!(
        r#"
[proxy]
listen = "0.0.0.0:8443"
tls = {{ cert = "tls.crt", key = "tls.key" }}
request_timeout = "20s"
max_request_body = "2MiB"
max_header_bytes = "32KiB"
max_headers = 50
header_read_timeout = "5s"
body_idle_timeout = "7s"
idle_timeout = "90s"
response_idle_timeout = "45s"
host_header = "preserve"
shutdown_grace = "0s"
max_connections = 500
trusted_proxies = ["10.0.0.0/8", "fd00::/8", "192.168.1.7"]
worker_threads = 4

[admin]
listen = "0.0.0.0:9901"
token_file = "admin-token"
probe_listen = "0.0.0.0:9902"

[upstreams.primary]
url = "{PRIMARY}"
tls = {{ ca = "ca.pem", client_cert = "c.pem", client_key = "k.pem", server_name = "kms.example" }}
resolve_every = "1m"
http2 = true
pool_idle_timeout = "15s"
pool_max_lifetime = "10m"
max_connections = 64

[upstreams.replica]
url = "http://127.0.0.1:8081"
max_connections = 1000

[health]
method = "HEAD"
path = "/api/v2/keys?limit=1"
healthy_statuses = "200,204,300-399"
interval = "5s"
timeout = "1500ms"
unhealthy_threshold = 4
healthy_threshold = 1
headers = {{ "bluemix-instance" = "<redacted>", "x-probe" = "<redacted>" }}
authorization_file = "probe-token"

[health.passive]
window = "30s"
min_requests = 5
error_ratio = 1

[failover]
mode = "manual"
read_only_window = "never"
failback = "manual"
failback_after = "90s"
blocked_write_status = 423
blocked_retry_after = "1m"

[state]
path = "state.json"

[classify]
profile = "http-methods"

[[classify.rules]]
methods = ["POST", "PURGE"]
path = "/api/v2/reports/**"
class = "read"

[[classify.rules]]
path = "/api/v2/keys/*"
action = "wrap"
class = "write"

[retry]
max_attempts = 5
backoff_base = "100ms"
backoff_max = "2s"
max_retry_after = "0s"
per_try_timeout = "20s"
buffer_body = "1000000"
budget_ratio = 0.35
budget_min_per_sec = 0

[fleet]
backend = "etcd"
endpoints = ["https://127.0.0.1:2379", "https://etcd.example:2379"]
key = "/failway/kp/mode"
lease_ttl = "3s"
failover_quorum = 2
instance_id = "pod-a"

[[rewrite]]
header = "bluemix-instance"
primary = "p-inst"
replica = "r-inst"

[[rewrite]]
path_segment = true
primary = "p-key"
replica = "r-key"

[[key_pairs]]
name = "payments-root"
primary = "p-key"
replica = "r-key"

[key_check]
interval = "5m"
authorization_file = "kp-token"
"#
    )
}

#[test]
fn upstream_connection_caps_are_bounded_and_name_their_region() {
    for (region, value) in [("primary", "0"), ("replica", "2000000")] {
        let text = minimal().replace(
            &format!("[upstreams.{region}]\n"),
            &format!("[upstreams.{region}]\nmax_connections = {value}\n"),
        );
        assert_err_in(
            &text,
            &format!(
                "upstreams.{region}.max_connections: must be between 1 and 1048576, got {value}"
            ),
        );
    }
}

#[test]
fn effective_toml_round_trips() {
    let dir = Path::new("/srv/failway");
    for text in [minimal(), everything()] {
        let c = Config::from_toml_str(&text, dir).unwrap();
        let printed = c.to_effective_toml();
        let back = Config::from_toml_str(&printed, dir)
            .unwrap_or_else(|e| panic!("effective TOML does not parse back: {e}\n{printed}"));
        assert_eq!(back, c, "{printed}");
        // Printing is stable.
        assert_eq!(back.to_effective_toml(), printed);
    }
}

#[test]
fn effective_toml_shows_resolved_values() {
    let c = Config::from_toml_str(&everything(), Path::new("/srv/failway")).unwrap();
    let printed = c.to_effective_toml();
    for line in [
        "read_only_window = \"never\"",
        "blocked_write_status = 423",
        "buffer_body = \"1000000B\"",
        "max_request_body = \"2MiB\"",
        "timeout = \"1s 500ms\"",
        "error_ratio = 1.0",
        "cert = \"/srv/failway/tls.crt\"",
        "path = \"/srv/failway/state.json\"",
        "trusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\", \"192.168.1.7/32\"]",
        "url = \"http://127.0.0.1:8081\"",
    ] {
        assert!(printed.contains(line), "missing {line:?} in\n{printed}");
    }
    let minimal = ok("").to_effective_toml();
    assert!(minimal.contains("blocked_write_status = 409"), "{minimal}");
    assert!(minimal.contains("read_only_window = \"6h\""), "{minimal}");
}

#[test]
fn effective_toml_redacts_probe_header_values() {
    let c = ok("[health]\nheaders = { \"bluemix-instance\" = \"s3cr3t-instance\", \"x-api-key\" = \"hunter2\" }\n");
    // Kept in file order, with the real values for the prober.
    let names: Vec<&str> = c.health.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["bluemix-instance", "x-api-key"]);
    assert_eq!(c.health.headers[1].1, "hunter2");
    let printed = c.to_effective_toml();
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(
        printed.contains(
            "headers = { bluemix-instance = \"<redacted>\", x-api-key = \"<redacted>\" }"
        ),
        "{printed}"
    );
    // Debug output must not leak them either.
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn shipped_config_files_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for name in ["example.toml", "sidecar.toml", "gateway.toml"] {
        let c = Config::load(&dir.join(name)).unwrap_or_else(|e| panic!("config/{name}:\n{e}"));
        assert_eq!(c.base_dir, dir, "{name}");
        if name != "example.toml" {
            assert!(c.warnings.is_empty(), "config/{name}: {:?}", c.warnings);
            assert_eq!(
                c.state.path,
                Some(PathBuf::from("/var/lib/failway/state.json"))
            );
            assert_eq!(c.classify.profile, Profile::KeyProtect);
            assert_eq!(
                c.upstreams.primary.url.host(),
                Some("us-south.kms.cloud.ibm.com")
            );
            assert_eq!(
                c.upstreams.replica.url.host(),
                Some("us-east.kms.cloud.ibm.com")
            );
            assert_eq!(
                c.admin.listen,
                "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
            );
        }
    }
    // The example documents the defaults, so it equals the minimal config.
    let example = Config::load(&dir.join("example.toml")).unwrap();
    let minimal = Config::from_toml_str(&minimal(), &dir).unwrap();
    assert_eq!(example, minimal);

    let sidecar = Config::load(&dir.join("sidecar.toml")).unwrap();
    assert_eq!(
        sidecar.proxy.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(sidecar.failover.failback, FailbackMode::Manual);

    let gateway = Config::load(&dir.join("gateway.toml")).unwrap();
    assert_eq!(
        gateway.proxy.listen,
        "0.0.0.0:8443".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        gateway.proxy.tls,
        Some(ServerTls {
            cert: PathBuf::from("/etc/failway/tls/tls.crt"),
            key: PathBuf::from("/etc/failway/tls/tls.key"),
        })
    );
    assert_eq!(
        gateway.admin.probe_listen,
        Some("0.0.0.0:9902".parse().unwrap())
    );
}

#[test]
fn example_toml_documents_every_key() {
    // Every key the effective configuration prints appears in the example,
    // set or commented out.
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml"))
            .unwrap();
    let full = Config::from_toml_str(&everything(), Path::new("/"))
        .unwrap()
        .to_effective_toml();
    for line in full.lines() {
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        let key = key.trim_start_matches("# ");
        assert!(
            example.contains(&format!("\n{key} = ")) || example.contains(&format!(" {key} = ")),
            "config/example.toml does not document {key:?}"
        );
    }
}

#[test]
fn config_error_display() {
    assert_eq!(
        ConfigError::new("proxy.listen", "bad").to_string(),
        "proxy.listen: bad"
    );
    assert_eq!(
        ConfigError::new("", "cannot read").to_string(),
        "cannot read"
    );
    let errs = ConfigErrors(vec![
        ConfigError::new("a", "x"),
        ConfigError::new("b.c", "y"),
    ]);
    assert_eq!(errs.to_string(), "a: x\nb.c: y");
    assert_eq!(errs.len(), 2);
    let single = ConfigErrors::single(ConfigError::new("", "z"));
    assert_eq!(single.iter().count(), 1);
}

#[test]
fn load_reports_an_unreadable_file() {
    let err = Config::load(Path::new("/nonexistent/failway.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/failway.toml"),
        "{err}"
    );
}

// ---- value types -----------------------------------------------------------

#[test]
fn byte_size_parses_and_prints() {
    let cases = [
        ("512B", 512),
        ("1KiB", 1024),
        ("16KiB", 16 * 1024),
        ("64KiB", 64 * 1024),
        ("1MiB", 1 << 20),
        ("10MiB", 10 << 20),
        ("1GiB", 1 << 30),
        ("1KB", 1000),
        ("1MB", 1_000_000),
        ("1mib", 1 << 20),
        ("2 MiB", 2 << 20),
        ("4096", 4096),
        ("0", 0),
    ];
    for (text, bytes) in cases {
        assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
    }
    for bad in [
        "",
        "MiB",
        "1XB",
        "1.5MiB",
        "-1",
        "1 M",
        "99999999999999999999",
        "18446744073709551615KiB",
    ] {
        let err = bad.parse::<ByteSize>().unwrap_err().to_string();
        assert!(
            err.contains("is not a size (e.g. \"64KiB\", \"1MiB\""),
            "{bad}: {err}"
        );
    }
    assert_eq!(ByteSize(1 << 20).to_string(), "1MiB");
    assert_eq!(ByteSize(1536).to_string(), "1536B");
    assert_eq!(ByteSize(3 << 10).to_string(), "3KiB");
    assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
    assert_eq!(ByteSize(1_000_000).to_string(), "1000000B");
    assert_eq!(ByteSize(0).to_string(), "0B");
    for n in [0, 1, 1023, 1024, 1536, 1 << 20, 1_000_000, u64::MAX] {
        assert_eq!(ByteSize(n).to_string().parse::<ByteSize>(), Ok(ByteSize(n)));
    }
}

#[test]
fn status_ranges_parse_and_match() {
    let r: StatusRanges = "200-499".parse().unwrap();
    assert!(r.contains(200) && r.contains(404) && r.contains(499));
    assert!(!r.contains(199) && !r.contains(500) && !r.contains(503));

    let r: StatusRanges = "200, 204,300-399".parse().unwrap();
    assert!(r.contains(200) && r.contains(204) && r.contains(301));
    assert!(!r.contains(201) && !r.contains(400));
    assert_eq!(r.to_string(), "200,204,300-399");
    assert_eq!(r.to_string().parse::<StatusRanges>(), Ok(r));

    for bad in [
        "", "200-", "99", "600", "200-600", "499-200", "2xx", "200,,204",
    ] {
        let err = bad.parse::<StatusRanges>().unwrap_err().to_string();
        assert!(
            err.contains("(e.g. \"200-499\", \"200,204,300-399\"; each code in 100..=599)"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn cidr_parses_and_matches() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let c: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(c.contains(ip("10.1.2.3")));
    assert!(!c.contains(ip("11.0.0.1")));
    // Dual-stack sockets report IPv4 peers as IPv4-mapped IPv6 addresses.
    assert!(c.contains(ip("::ffff:10.1.2.3")));
    assert!(!c.contains(ip("::ffff:11.1.2.3")));
    assert!(!c.contains(ip("::1")));
    assert_eq!(c.to_string(), "10.0.0.0/8");

    let host: Cidr = "192.168.1.7".parse().unwrap();
    assert_eq!(host.prefix(), 32);
    assert!(host.contains(ip("192.168.1.7")) && !host.contains(ip("192.168.1.8")));
    assert_eq!(host.to_string(), "192.168.1.7/32");

    let v6: Cidr = "::1/128".parse().unwrap();
    assert!(v6.contains(ip("::1")) && !v6.contains(ip("::2")));
    let bare6: Cidr = "fd00::1".parse().unwrap();
    assert_eq!(bare6.prefix(), 128);
    let net6: Cidr = "fd00::/8".parse().unwrap();
    assert!(net6.contains(ip("fd12:3456::1")) && !net6.contains(ip("fe80::1")));
    assert!(!net6.contains(ip("10.0.0.1")));
    let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
    assert!(mapped.contains(ip("10.9.9.9")));

    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("8.8.8.8")) && all.contains(ip("::ffff:8.8.8.8")));
    assert!(!all.contains(ip("2001:db8::1")));

    for bad in [
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0/8",
        "example.com",
        "10.1.2.3/8",
        "",
    ] {
        let err = bad.parse::<Cidr>().unwrap_err().to_string();
        assert!(
            err.contains("is not a CIDR (e.g. \"10.0.0.0/8\""),
            "{bad}: {err}"
        );
    }
    for s in ["10.0.0.0/8", "fd00::/8", "1.2.3.4/32", "0.0.0.0/0"] {
        let c: Cidr = s.parse().unwrap();
        assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
    }
}

#[test]
fn is_trusted_proxy_uses_the_cidrs() {
    let c = ok("[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]\n");
    assert!(c.is_trusted_proxy("10.2.3.4".parse().unwrap()));
    assert!(c.is_trusted_proxy("::ffff:10.2.3.4".parse().unwrap()));
    assert!(c.is_trusted_proxy("fd00::5".parse().unwrap()));
    assert!(!c.is_trusted_proxy("192.168.0.1".parse().unwrap()));
}

#[test]
fn a_failback_sooner_than_the_passive_window_is_warned_about() {
    let state = "[state]\npath = \"/var/lib/failway/state.json\"\n";
    let c = ok(&format!(
        "{state}[failover]\nfailback_after = \"5s\"\n[health.passive]\nwindow = \"10s\"\n"
    ));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert!(w.contains("failover.failback_after (5s)"), "{w}");
    assert!(w.contains("health.passive.window (10s)"), "{w}");
    // As long as the window, or no automatic failback: nothing to warn about.
    for failover in [
        "failback_after = \"10s\"",
        "failback_after = \"5s\"\nfailback = \"manual\"",
    ] {
        let c = ok(&format!(
            "{state}[failover]\n{failover}\n[health.passive]\nwindow = \"10s\"\n"
        ));
        assert!(c.warnings.is_empty(), "{failover}: {:?}", c.warnings);
    }
}

#[test]
fn hooks_entries_are_checked_and_their_url_path_never_printed() {
    let c = ok(concat!(
        "[[hooks]]\nurl = \"https://hooks.example.com/services/T0/B0/s3cret\"\n",
        "events = [\"transition\", \"drill\"]\ntimeout = \"2s\"\n",
        "[[hooks]]\nurl = \"http://127.0.0.1:9093/api/v2/alerts\"\n",
    ));
    assert_eq!(c.hooks.len(), 2);
    assert_eq!(
        c.hooks[0].events,
        vec![
            crate::config::HookEvent::Transition,
            crate::config::HookEvent::Drill
        ]
    );
    assert_eq!(c.hooks[0].timeout, std::time::Duration::from_secs(2));
    assert_eq!(c.hooks[1].events.len(), 5, "all events by default");
    assert_eq!(c.hooks[1].max_attempts, 5);
    let printed = c.to_effective_toml();
    assert!(
        printed.contains("url = \"https://hooks.example.com/\""),
        "{printed}"
    );
    assert!(!printed.contains("s3cret"), "{printed}");

    assert_err(
        "[[hooks]]\nurl = \"ftp://x/\"\n",
        "hooks[0].url: has scheme \"ftp\"; only http and https are supported",
    );
    assert_err(
        "[[hooks]]\nevents = [\"drill\"]\n",
        "hooks[0].url: required",
    );
    assert_err(
        "[[hooks]]\nurl = \"https://x/\"\nevents = [\"outage\"]\n",
        "hooks[0].events: \"outage\" is not an event; use transition, operator, drill, latch, reload",
    );
    assert_err(
        "[[hooks]]\nurl = \"https://x/\"\nmax_attempts = 0\n",
        "hooks[0].max_attempts:",
    );
    assert_err(
        "[[hooks]]\nurl = \"https://x/\"\ncolour = 1\n",
        "hooks[0].colour: unknown key",
    );
}
