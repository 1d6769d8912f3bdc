//! Turns the raw file ([`super::raw`]) into the typed [`Config`]: applies the
//! defaults of docs/design.md §5, checks every value and the rules between values,
//! and resolves relative file paths against the config file's folder.
//!
//! Syntax errors and values of the wrong TOML type stop at the first one
//! (the deserializer cannot go on); unknown keys are all named (each is
//! taken out and the file parsed again); every other problem is collected
//! so one run reports them all. Files named here (certificates, tokens, the
//! state file) are neither read nor checked for existence: `failway check`
//! and the code that uses them do.
//!
//! The sections are checked in `sections`, `upstreams` and `rules`; single
//! values are parsed in `values`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use super::keypath::{key_segments_at, path_of, Seg};
use super::raw::RawConfig;
use super::{
    AuditConfig, ByteSize, Config, ConfigError, ConfigErrors, FailbackMode, FailoverConfig,
    HealthConfig, StateConfig,
};

mod hooks;
mod keys;
mod rules;
mod sections;
mod services;
mod upstreams;
mod values;

pub(super) const STATE_PATH_WARNING: &str = "state.path is not set: a restart forgets the failover mode, the read-only deadline and the replica-writes latch";

/// Automatic failback sooner than the passive window: live traffic has not
/// judged the primary over a whole window when traffic goes back to it.
fn failback_warning(failover: &FailoverConfig, health: &HealthConfig) -> Option<String> {
    let window = health.passive.window;
    (failover.failback == FailbackMode::Safe && failover.failback_after < window).then(|| {
        format!(
            "failover.failback_after ({}) is shorter than health.passive.window ({}): failback happens before live traffic has judged the primary over a whole window, so a primary that still fails requests can be failed back to and failed over again at once; set failback_after to at least the window",
            humantime::format_duration(failover.failback_after),
            humantime::format_duration(window)
        )
    })
}

pub(super) fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let raw = parse_raw(text)?;
    if !raw.service.is_empty() {
        return services::from_raw(text, raw, base_dir);
    }
    let mut v = Validator {
        errors: Vec::new(),
        base_dir,
    };
    let config = v.config(raw);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

/// Parses the text into the raw mirror. The syntax is checked first on its
/// own so that a broken file is reported as such, not as a schema problem.
fn parse_raw(text: &str) -> Result<RawConfig, ConfigErrors> {
    if let Err(e) = text.parse::<toml::Table>() {
        let at = e
            .span()
            .map(|s| format!(" at {}", line_col(text, s.start)))
            .unwrap_or_default();
        return Err(ConfigErrors::single(ConfigError::new(
            "",
            format!("TOML syntax error{at}: {}", e.message().trim()),
        )));
    }
    toml::from_str::<RawConfig>(text).map_err(|e| {
        let span = e.span();
        let segs = span.clone().and_then(|s| key_segments_at(text, s.start));
        let path = segs.as_deref().map(path_of).unwrap_or_default();
        let at = span
            .map(|s: Range<usize>| format!(" (at {})", line_col(text, s.start)))
            .unwrap_or_default();
        let first = ConfigError::new(path, format!("{}{at}", friendly_serde_message(e.message())));
        let mut errors = vec![first];
        if let (true, Some(segs)) = (is_unknown_key(&e), segs) {
            errors.extend(more_unknown_keys(text, &segs));
        }
        ConfigErrors(errors)
    })
}

fn is_unknown_key(e: &toml::de::Error) -> bool {
    e.message().trim().starts_with("unknown field")
}

/// serde stops at the first unknown key; this finds the others by taking
/// each one out and parsing again, so one run names them all. Their
/// positions are those of a re-serialized file, so only the key is given.
fn more_unknown_keys(text: &str, first: &[Seg]) -> Vec<ConfigError> {
    let Ok(mut doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut remove = first.to_vec();
    // Bounded: a file has finitely many keys, but a bug must not loop.
    for _ in 0..100 {
        if !remove_key(&mut doc, &remove) {
            break;
        }
        let Ok(again) = toml::to_string(&doc) else {
            break;
        };
        let Err(e) = toml::from_str::<RawConfig>(&again) else {
            break;
        };
        let segs = e.span().and_then(|s| key_segments_at(&again, s.start));
        let (true, Some(segs)) = (is_unknown_key(&e), segs) else {
            break;
        };
        found.push(ConfigError::new(
            path_of(&segs),
            friendly_serde_message(e.message()),
        ));
        remove = segs;
    }
    found
}

/// Takes the key at `segs` out of `doc`; false when it is not there.
fn remove_key(doc: &mut toml::Table, segs: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = segs.split_last() else {
        return false;
    };
    let mut table = doc;
    let mut iter = parents.iter().peekable();
    while let Some(seg) = iter.next() {
        let Seg::Key(k) = seg else { return false };
        let value = match table.get_mut(k) {
            Some(v) => v,
            None => return false,
        };
        let value = match (value, iter.peek()) {
            (toml::Value::Array(items), Some(Seg::Index(i))) => {
                iter.next();
                match items.get_mut(*i) {
                    Some(v) => v,
                    None => return false,
                }
            }
            (v, _) => v,
        };
        match value {
            toml::Value::Table(t) => table = t,
            _ => return false,
        }
    }
    table.remove(last).is_some()
}

fn line_col(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

/// Rewords serde's messages for people editing a TOML file: "unknown field
/// `x`" becomes "unknown key" (the path already names it), Rust type names
/// become TOML ones.
fn friendly_serde_message(message: &str) -> String {
    let mut m = message.trim().to_owned();
    if let Some(rest) = m.strip_prefix("unknown field `") {
        m = match rest.split_once("`, ") {
            Some((_, expected)) => format!("unknown key, {expected}"),
            None => "unknown key".to_owned(),
        };
    }
    for (from, to) in [
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        (
            "expected a table of string values",
            "expected a table of strings",
        ),
    ] {
        m = m.replace(from, to);
    }
    if let Some(at) = m.find("expected struct ") {
        m.replace_range(at.., "expected a table");
    }
    m.replace('`', "")
}

struct Validator<'a> {
    errors: Vec<ConfigError>,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    /// Whether no error was recorded for `path` (so cross-checks do not pile
    /// a second complaint onto a value already reported as invalid).
    fn ok(&self, path: &str) -> bool {
        !self.errors.iter().any(|e| e.path == path)
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let proxy = self.proxy(raw.proxy);
        let admin = self.admin(raw.admin, &proxy);
        let upstreams = self.upstreams(raw.upstreams);
        let health = self.health(raw.health);
        let classify = self.classify(raw.classify);
        let failover = self.failover(raw.failover, classify.profile);
        let state = StateConfig {
            path: self.file("state.path", raw.state.path),
        };
        let retry = self.retry(raw.retry, &proxy);
        let fleet = raw.fleet.map(|f| self.fleet(f));
        let audit = self.audit(raw.audit);
        let rewrite = self.rewrite(raw.rewrite);
        let hooks = self.hooks(raw.hooks);
        let key_pairs = self.key_pairs("key_pairs", raw.key_pairs);
        let key_check = self.key_check(raw.key_check.unwrap_or_default());
        let mut warnings = Vec::new();
        if state.path.is_none() {
            warnings.push(STATE_PATH_WARNING.to_owned());
        }
        warnings.extend(failback_warning(&failover, &health));
        Config {
            proxy,
            admin,
            upstreams,
            health,
            failover,
            state,
            classify,
            retry,
            fleet,
            audit,
            rewrite,
            hooks,
            key_pairs,
            key_check,
            services: Vec::new(),
            base_dir: self.base_dir.to_path_buf(),
            warnings,
        }
    }
}

impl Validator<'_> {
    fn audit(&mut self, r: super::raw::RawAudit) -> AuditConfig {
        let path = self.file("audit.path", r.path);
        let max_size = self.size("audit.max_size", r.max_size, ByteSize(64 * ByteSize::MIB));
        if self.ok("audit.max_size") && max_size.0 < ByteSize::KIB {
            self.err(
                "audit.max_size",
                format!("must be at least 1KiB (a few records), got {max_size}"),
            );
        }
        let keep = self.int("audit.keep", r.keep, 5, 0, Some(1000));
        AuditConfig {
            path,
            max_size,
            keep,
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
