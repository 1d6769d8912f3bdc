//! `[[key_pairs]]` (or `key_pairs = "from-rewrite"`) and `[key_check]`.
//! The pairs are read from the TOML value itself rather than through serde,
//! so the string form and the table form share one key and every bad entry
//! is named by its own path (`key_pairs[1].replica`).

use super::super::raw::RawKeyCheck;
use super::super::{KeyCheckConfig, KeyPairConfig, KeyPairs};
use super::{secs, Validator};

const FORMS: &str =
    "expected [[key_pairs]] tables (name, primary, replica) or the string \"from-rewrite\"";

impl Validator<'_> {
    pub(super) fn key_pairs(&mut self, at: &str, raw: Option<toml::Value>) -> KeyPairs {
        let entries = match raw {
            None => return KeyPairs::default(),
            Some(toml::Value::String(s)) if s == "from-rewrite" => return KeyPairs::FromRewrite,
            Some(toml::Value::String(s)) => {
                self.err(at, format!("{s:?} is not a form of key_pairs; {FORMS}"));
                return KeyPairs::default();
            }
            Some(toml::Value::Array(items)) => items,
            Some(_) => {
                self.err(at, FORMS);
                return KeyPairs::default();
            }
        };
        let mut out: Vec<KeyPairConfig> = Vec::new();
        for (i, item) in entries.iter().enumerate() {
            let path = format!("{at}[{i}]");
            let Some(table) = item.as_table() else {
                self.err(path, "expected a table (name, primary, replica)");
                continue;
            };
            if let Some(pair) = self.key_pair(&path, table) {
                if let Some(j) = out.iter().position(|p| p.name == pair.name) {
                    self.err(
                        format!("{path}.name"),
                        format!("{:?} is also {at}[{j}].name; names are unique", pair.name),
                    );
                    continue;
                }
                out.push(pair);
            }
        }
        KeyPairs::Listed(out)
    }

    fn key_pair(&mut self, at: &str, table: &toml::Table) -> Option<KeyPairConfig> {
        for key in table.keys() {
            if !["name", "primary", "replica"].contains(&key.as_str()) {
                self.err(
                    format!("{at}.{key}"),
                    "unknown key, expected one of name, primary, replica",
                );
            }
        }
        let before = self.errors.len();
        let name = self.pair_string(at, table, "name");
        if let Some(n) = &name {
            let valid = (1..=64).contains(&n.len())
                && n.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !valid {
                self.err(
                    format!("{at}.name"),
                    format!("{n:?} is not a pair name: use 1-64 of a-z, 0-9, - and _"),
                );
            }
        }
        let primary = self.pair_string(at, table, "primary");
        let replica = self.pair_string(at, table, "replica");
        for (key, id) in [("primary", &primary), ("replica", &replica)] {
            let bad = id.as_deref().is_some_and(|s| {
                s.is_empty() || s.chars().any(|c| c.is_whitespace() || "/?#%".contains(c))
            });
            if bad {
                self.err(
                    format!("{at}.{key}"),
                    "is not a key ID or alias (non-empty, no spaces, /, ?, # or %)",
                );
            }
        }
        match (name, primary, replica) {
            (Some(name), Some(primary), Some(replica)) if self.errors.len() == before => {
                Some(KeyPairConfig {
                    name,
                    primary,
                    replica,
                })
            }
            _ => None,
        }
    }

    fn pair_string(&mut self, at: &str, table: &toml::Table, key: &str) -> Option<String> {
        match table.get(key) {
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.err(format!("{at}.{key}"), "expected a string");
                None
            }
            None => {
                self.err(format!("{at}.{key}"), "required");
                None
            }
        }
    }

    pub(super) fn key_check(&mut self, raw: RawKeyCheck) -> KeyCheckConfig {
        // No floor: a test checks every second, a deployment every few minutes.
        let interval = self.positive_duration("key_check.interval", raw.interval, secs(600));
        KeyCheckConfig {
            interval,
            authorization_file: self.file("key_check.authorization_file", raw.authorization_file),
        }
    }
}
