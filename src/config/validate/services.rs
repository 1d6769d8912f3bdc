//! The `[[service]]` form. Each block is merged over the top-level sections
//! (a key the block leaves out comes from the top level, then the default)
//! and validated as a whole configuration would be; its errors are named
//! `service[N].key`. Tables of entries (`[[rewrite]]`, `classify.rules`)
//! are never inherited, and the top-level `[upstreams]` of the single-pair
//! form cannot stand beside the blocks. Then the blocks are checked against
//! each other: unique names, one catch-all and last, none shadowed whole by
//! an earlier one.

use std::net::Ipv6Addr;
use std::path::Path;

use super::super::raw::{RawConfig, RawService, RawUpstream, RawUpstreams};
use super::super::{Config, ConfigError, ConfigErrors, HostPattern, ServiceConfig};
use super::Validator;

/// The sections a service block may hold besides its own keys.
const SECTIONS: [&str; 7] = [
    "upstreams",
    "health",
    "failover",
    "classify",
    "retry",
    "rewrite",
    "key_pairs",
];

pub(super) fn from_raw(
    text: &str,
    raw: RawConfig,
    base_dir: &Path,
) -> Result<Config, ConfigErrors> {
    let table: toml::Table = text
        .parse()
        .map_err(|_| ConfigErrors::single(ConfigError::new("", "TOML syntax error")))?;
    let mut errors = form_errors(&table);
    let blocks: Vec<toml::Table> = table
        .get("service")
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
        .unwrap_or_default();
    let mut base = table.clone();
    for k in ["service", "upstreams", "rewrite", "key_pairs"] {
        base.remove(k);
    }
    if let Some(c) = base.get_mut("classify").and_then(toml::Value::as_table_mut) {
        c.remove("rules");
    }
    let RawConfig { service, .. } = raw;
    let (mut config, global) = validate_global(&base, base_dir)?;
    errors.extend(global.iter().cloned());
    let mut services = Vec::new();
    for (i, (block, keys)) in blocks.iter().zip(service).enumerate() {
        let (sc, errs, warnings) = service_block(i, &base, block, keys, base_dir, &global)?;
        errors.extend(errs);
        for w in warnings {
            if !config.warnings.contains(&w) {
                config.warnings.push(w);
            }
        }
        services.push(sc);
    }
    errors.extend(across(&services));
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    // The top level shows the first service's upstreams where one is named.
    config.upstreams = services[0].upstreams.clone();
    config.services = services;
    Ok(config)
}

/// What the form itself forbids at the top level.
fn form_errors(table: &toml::Table) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if !table.get("service").is_some_and(toml::Value::is_array) {
        errors.push(ConfigError::new(
            "service",
            "expected [[service]] blocks (an array of tables)",
        ));
    }
    if table.contains_key("upstreams") {
        errors.push(ConfigError::new(
            "upstreams",
            "the single-pair form ([upstreams.primary], [upstreams.replica]) and [[service]] blocks cannot be used together; move the upstreams into each [[service]] block ([service.upstreams.primary])",
        ));
    }
    if table.contains_key("rewrite") {
        errors.push(ConfigError::new(
            "rewrite",
            "[[rewrite]] entries are not inherited by [[service]] blocks; put each mapping in [[service.rewrite]] of its service",
        ));
    }
    if table.contains_key("key_pairs") {
        errors.push(ConfigError::new(
            "key_pairs",
            "key_pairs are not inherited by [[service]] blocks; put each pair in [[service.key_pairs]] of its service",
        ));
    }
    let rules = table.get("classify").and_then(|c| c.get("rules")).is_some();
    if rules {
        errors.push(ConfigError::new(
            "classify.rules",
            "classify.rules are not inherited by [[service]] blocks; put them in [service.classify] of each service",
        ));
    }
    errors
}

/// Validates the global sections (and the inherited defaults) once, with
/// stand-in upstreams so that the missing top-level pair is no error.
fn validate_global(
    base: &toml::Table,
    base_dir: &Path,
) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
    let mut raw = to_raw(base.clone(), "")?;
    let stand_in = |url: &str| RawUpstream {
        url: Some(url.to_owned()),
        ..Default::default()
    };
    raw.upstreams = RawUpstreams {
        primary: Some(stand_in("http://primary.invalid")),
        replica: Some(stand_in("http://replica.invalid")),
    };
    let mut v = Validator {
        errors: Vec::new(),
        base_dir,
    };
    let config = v.config(raw);
    Ok((config, v.errors))
}

fn to_raw(table: toml::Table, at: &str) -> Result<RawConfig, ConfigErrors> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            ConfigErrors::single(ConfigError::new(at, e.message().trim()))
        })
}

type Block = (ServiceConfig, Vec<ConfigError>, Vec<String>);

/// One block: merged over `base`, validated, its own keys read.
fn service_block(
    i: usize,
    base: &toml::Table,
    block: &toml::Table,
    keys: RawService,
    base_dir: &Path,
    global: &[ConfigError],
) -> Result<Block, ConfigErrors> {
    let at = format!("service[{i}]");
    let mut merged = base.clone();
    for section in SECTIONS {
        if let Some(v) = block.get(section) {
            merge(&mut merged, section, v);
        }
    }
    let raw = to_raw(merged, &at)?;
    let mut v = Validator {
        errors: Vec::new(),
        base_dir,
    };
    let c = v.config(raw);
    let mut errors: Vec<ConfigError> = v
        .errors
        .into_iter()
        .filter(|e| SECTIONS.contains(&e.path.split(['.', '[']).next().unwrap_or("")))
        // Reported once, at the top level, when inherited from there.
        .filter(|e| !global.contains(e))
        // Hints name the tables as a block writes them.
        .map(|e| {
            let hint = e
                .message
                .replace("add [upstreams.", "add [service.upstreams.");
            ConfigError::new(format!("{at}.{}", e.path), hint)
        })
        .collect();
    let mut kv = Validator {
        errors: Vec::new(),
        base_dir,
    };
    let name = kv.service_name(&at, keys.name);
    let hosts = kv.service_hosts(&at, keys.hosts.unwrap_or_default());
    let path_prefix = kv.path_prefix(&at, keys.path_prefix);
    errors.extend(kv.errors);
    let warnings = c
        .warnings
        .iter()
        .filter(|w| w.starts_with("failover.") || w.starts_with("health."))
        .map(|w| format!("service {name}: {w}"))
        .collect();
    let sc = ServiceConfig {
        name,
        hosts,
        path_prefix,
        upstreams: c.upstreams,
        health: c.health,
        failover: c.failover,
        classify: c.classify,
        retry: c.retry,
        rewrite: c.rewrite,
        key_pairs: c.key_pairs,
    };
    Ok((sc, errors, warnings))
}

/// Puts `value` at `key` of `into`, tables merged key by key (the value
/// given wins), anything else replaced.
fn merge(into: &mut toml::Table, key: &str, value: &toml::Value) {
    match (into.get_mut(key), value) {
        (Some(toml::Value::Table(existing)), toml::Value::Table(over)) => {
            for (k, v) in over {
                merge(existing, k, v);
            }
        }
        _ => {
            into.insert(key.to_owned(), value.clone());
        }
    }
}

impl Validator<'_> {
    fn service_name(&mut self, at: &str, name: Option<String>) -> String {
        let path = format!("{at}.name");
        let Some(name) = name else {
            self.err(
                path,
                "missing; each [[service]] needs a name ([a-z0-9-], 1-40 characters)",
            );
            return String::new();
        };
        let valid = (1..=40).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            self.err(
                path,
                format!("{name:?} is not a service name: use 1-40 of a-z, 0-9 and -"),
            );
        }
        name
    }

    fn service_hosts(&mut self, at: &str, hosts: Vec<String>) -> Vec<HostPattern> {
        let mut out = Vec::new();
        for (j, h) in hosts.iter().enumerate() {
            let path = format!("{at}.hosts[{j}]");
            match host_pattern(h) {
                Ok(p) => out.push(p),
                Err(why) => self.err(path, format!("{h:?} {why}")),
            }
        }
        out
    }

    fn path_prefix(&mut self, at: &str, prefix: Option<String>) -> String {
        let Some(p) = prefix else {
            return "/".to_owned();
        };
        let bad = !p.starts_with('/')
            || p.contains(['?', '#', '%', '\\'])
            || p.contains("//")
            || p.split('/').any(|seg| seg == "." || seg == "..")
            || p.chars().any(|c| c.is_control() || c == ' ');
        if bad {
            self.err(
                format!("{at}.path_prefix"),
                format!("{p:?} is not a path prefix: start with /, whole segments, no query, %-escapes, dot segments or //"),
            );
            return "/".to_owned();
        }
        match p.trim_end_matches('/') {
            "" => "/".to_owned(),
            trimmed => trimmed.to_owned(),
        }
    }
}

/// A `hosts` entry: a host name, `*.suffix`, or an IPv6 literal in
/// brackets; lower-cased; never with a port.
fn host_pattern(h: &str) -> Result<HostPattern, &'static str> {
    let h = h.trim().to_ascii_lowercase();
    if let Some(inner) = h.strip_prefix('[') {
        let addr = inner
            .strip_suffix(']')
            .and_then(|a| a.parse::<Ipv6Addr>().ok())
            .ok_or("is not an IPv6 literal such as \"[::1]\" (no port)")?;
        return Ok(HostPattern::Exact(format!("[{addr}]")));
    }
    let (name, wildcard) = match h.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (h.as_str(), false),
    };
    if name.contains(':') {
        return Err("carries a port; hosts match without one");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err("is not a host name (or \"*.\" followed by one)");
    }
    Ok(if wildcard {
        HostPattern::Subdomains(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

/// The rules between blocks.
fn across(services: &[ServiceConfig]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (j, s) in services.iter().enumerate() {
        let earlier = &services[..j];
        if let Some(i) = earlier
            .iter()
            .position(|e| e.name == s.name && !s.name.is_empty())
        {
            errors.push(ConfigError::new(
                format!("service[{j}].name"),
                format!("{:?} is also service[{i}].name; names are unique", s.name),
            ));
        }
        if s.hosts.is_empty() && j + 1 != services.len() {
            errors.push(ConfigError::new(
                format!("service[{j}].hosts"),
                "empty: a catch-all service (no hosts) is allowed once, as the last [[service]]",
            ));
            continue;
        }
        if let Some(i) = earlier.iter().position(|e| shadows(e, s)) {
            errors.push(ConfigError::new(
                format!("service[{j}]"),
                format!(
                    "never matches: service[{i}] ({:?}) comes first and takes every request service[{j}] ({:?}) would (hosts and path_prefix); reorder or narrow them",
                    services[i].name, s.name
                ),
            ));
        }
    }
    errors
}

/// Whether `first` takes every request `later` would.
fn shadows(first: &ServiceConfig, later: &ServiceConfig) -> bool {
    let hosts = first.hosts.is_empty()
        || (!later.hosts.is_empty()
            && later
                .hosts
                .iter()
                .all(|h| first.hosts.iter().any(|f| h.covered_by(f))));
    hosts && first.takes_path(&later.path_prefix)
}
