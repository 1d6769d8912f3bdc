//! The list sections: `[[classify.rules]]` (methods, path patterns, class)
//! and `[[rewrite]]` (region ID mappings, which must neither repeat nor
//! contradict each other). Errors name the entry's index.

use http::header::{HeaderName, HeaderValue};

use super::super::raw;
use super::super::{ClassifyConfig, ClassifyRule, Profile, RewriteKind, RewriteRule};
use super::Validator;
use crate::classify::Class;

impl Validator<'_> {
    pub(super) fn classify(&mut self, r: raw::RawClassify) -> ClassifyConfig {
        let profile = self.choice(
            "classify.profile",
            r.profile,
            Profile::KeyProtect,
            &[
                ("key-protect", Profile::KeyProtect),
                ("http-methods", Profile::HttpMethods),
            ],
        );
        let mut rules = Vec::new();
        for (i, rule) in r.rules.into_iter().enumerate() {
            let at = format!("classify.rules[{i}]");
            let methods = rule
                .methods
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter_map(|(j, m)| self.method(&format!("{at}.methods[{j}]"), m))
                .collect();
            let path = match rule.path {
                Some(p) => {
                    if let Err(why) = check_rule_path(&p) {
                        self.err(format!("{at}.path"), format!("{p:?} {why}"));
                    }
                    p
                }
                None => {
                    self.err(format!("{at}.path"), "required (e.g. \"/api/v2/keys/*\")");
                    String::new()
                }
            };
            let action = rule.action.filter(|a| {
                if a.is_empty() {
                    self.err(
                        format!("{at}.action"),
                        "must not be empty; omit it to match any action",
                    );
                }
                !a.is_empty()
            });
            let class = match rule.class {
                None => {
                    self.err(format!("{at}.class"), "required: \"read\" or \"write\"");
                    Class::Write
                }
                Some(c) => self.choice(
                    &format!("{at}.class"),
                    Some(c),
                    Class::Write,
                    &[("read", Class::Read), ("write", Class::Write)],
                ),
            };
            rules.push(ClassifyRule {
                methods,
                path,
                action,
                class,
            });
        }
        ClassifyConfig { profile, rules }
    }

    pub(super) fn rewrite(&mut self, entries: Vec<raw::RawRewrite>) -> Vec<RewriteRule> {
        // Index in the file of each kept rule, for naming both sides of a clash.
        let mut kept: Vec<(usize, RewriteRule)> = Vec::new();
        for (i, r) in entries.into_iter().enumerate() {
            let at = format!("rewrite[{i}]");
            let before = self.errors.len();
            let kind = match (r.header, r.path_segment.unwrap_or(false)) {
                (Some(_), true) | (None, false) => {
                    self.err(
                        &at,
                        "needs exactly one of header = \"name\" or path_segment = true",
                    );
                    None
                }
                (Some(h), false) => match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => Some(RewriteKind::Header(name)),
                    Err(_) => {
                        self.err(
                            format!("{at}.header"),
                            format!("{h:?} is not a valid header name"),
                        );
                        None
                    }
                },
                (None, true) => Some(RewriteKind::PathSegment),
            };
            let mut value = |field: &str, v: Option<String>| -> String {
                let path = format!("{at}.{field}");
                let v = v.unwrap_or_default();
                if v.is_empty() {
                    self.err(path, "required and must not be empty");
                } else if matches!(kind, Some(RewriteKind::PathSegment)) && v.contains('/') {
                    self.err(
                        path,
                        format!("{v:?} is not a single path segment (no \"/\")"),
                    );
                } else if matches!(kind, Some(RewriteKind::Header(_)))
                    && HeaderValue::from_str(&v).is_err()
                {
                    self.err(path, format!("{v:?} is not a valid header value"));
                }
                v
            };
            let primary = value("primary", r.primary);
            let replica = value("replica", r.replica);
            if !primary.is_empty() && primary == replica {
                self.err(
                    format!("{at}.replica"),
                    format!("{replica:?} equals primary; a rewrite must change the value"),
                );
            }
            let Some(kind) = kind else { continue };
            if self.errors.len() > before {
                continue;
            }
            let rule = RewriteRule {
                kind,
                primary,
                replica,
            };
            if let Some(message) = kept
                .iter()
                .find_map(|(j, other)| rewrite_clash(&rule, *j, other))
            {
                self.err(at, message);
                continue;
            }
            kept.push((i, rule));
        }
        kept.into_iter().map(|(_, r)| r).collect()
    }
}

/// Checks a `[[classify.rules]]` path pattern; the error completes
/// "`<path>` ...".
fn check_rule_path(p: &str) -> Result<(), &'static str> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err("must start with \"/\" (e.g. \"/api/v2/keys/*\")");
    };
    if p.contains('?') {
        return Err("must not contain a query; match the action with action = \"...\"");
    }
    if rest.is_empty() {
        return Ok(());
    }
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            return Err("has an empty segment (\"//\" or a trailing \"/\")");
        }
        if seg.contains('*') && *seg != "*" && *seg != "**" {
            return Err("uses * inside a segment; * and ** must be whole segments (\"/keys/*\", \"/reports/**\")");
        }
        if *seg == "**" && i + 1 != segments.len() {
            return Err("has ** before the last segment; ** matches the rest of the path, so it must be last");
        }
    }
    Ok(())
}

fn rewrite_kind_label(kind: &RewriteKind) -> String {
    match kind {
        RewriteKind::Header(h) => format!("header {h}"),
        RewriteKind::PathSegment => "path_segment".to_owned(),
    }
}

/// Why `rule` cannot sit next to `other` (at index `j`), if it cannot.
fn rewrite_clash(rule: &RewriteRule, j: usize, other: &RewriteRule) -> Option<String> {
    if rule.kind != other.kind {
        return None;
    }
    let kind = rewrite_kind_label(&rule.kind);
    if rule.primary == other.primary {
        return Some(if rule.replica == other.replica {
            format!(
                "duplicates rewrite[{j}] ({kind}, primary {:?})",
                rule.primary
            )
        } else {
            format!(
                "conflicts with rewrite[{j}] ({kind}, primary {:?} maps to {:?} there and {:?} here)",
                rule.primary, other.replica, rule.replica
            )
        });
    }
    if rule.replica == other.replica {
        return Some(format!(
            "conflicts with rewrite[{j}] ({kind}, replica {:?} is the target of primary {:?} there and {:?} here)",
            rule.replica, other.primary, rule.primary
        ));
    }
    None
}
