//! Custom `[[classify.rules]]`, compiled once.
//!
//! A rule matches when the method is listed (an empty list means any), the
//! path matches the pattern segment by segment, and, when `action` is set, the
//! request's action indicators agree with it. Segments compare raw and
//! case-sensitively: `*` is exactly one non-empty segment (an empty one would
//! let `/a//b` pass for `/a/*/b` and then be collapsed upstream into `/a/b`),
//! `**` is the rest, zero or more segments of any content.
//!
//! Action indicators are the last segment after an `actions` segment and every
//! query parameter an upstream could read as `action`. A read rule needs them
//! all to be literally its action; a write rule needs only one of them to mean
//! its action after percent-decoding. Either way an ambiguous request ends up
//! a write. Validation of the pattern belongs to the config module; compiling
//! an invalid one still cannot panic here.

use http::Method;

use super::raw;
use super::{Class, ClassifyRule};

#[derive(Debug, Clone)]
pub(super) struct CompiledRule {
    methods: Vec<Method>,
    pattern: Vec<PatternSegment>,
    action: Option<String>,
    pub(super) class: Class,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternSegment {
    Literal(String),
    /// `*`
    One,
    /// `**`
    Rest,
}

impl CompiledRule {
    pub(super) fn new(rule: &ClassifyRule) -> Self {
        let rest = rule.path.strip_prefix('/').unwrap_or(&rule.path);
        let pattern = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/')
                .map(|seg| match seg {
                    "*" => PatternSegment::One,
                    "**" => PatternSegment::Rest,
                    lit => PatternSegment::Literal(lit.to_owned()),
                })
                .collect()
        };
        CompiledRule {
            methods: rule.methods.clone(),
            pattern,
            action: rule.action.clone(),
            class: rule.class,
        }
    }

    pub(super) fn matches(&self, method: &Method, path: &str, query: Option<&str>) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.matches_path(path)
            && self
                .action
                .as_deref()
                .is_none_or(|want| self.matches_action(want, path, query))
    }

    fn matches_path(&self, path: &str) -> bool {
        let Some(mut segs) = raw::segments(path) else {
            return false;
        };
        for pat in &self.pattern {
            match pat {
                PatternSegment::Rest => return true,
                PatternSegment::One => match segs.next() {
                    Some(seg) if !seg.is_empty() => {}
                    _ => return false,
                },
                PatternSegment::Literal(lit) => {
                    if segs.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        segs.next().is_none()
    }

    fn matches_action(&self, want: &str, path: &str, query: Option<&str>) -> bool {
        let in_path = raw::path_action(path);
        let mut in_query = raw::params(query).filter(|p| raw::is_action_key(p.key));
        match self.class {
            Class::Read => {
                let mut any = false;
                if let Some(name) = in_path {
                    if name != want {
                        return false;
                    }
                    any = true;
                }
                for p in in_query {
                    if p.key != "action" || p.value != Some(want) {
                        return false;
                    }
                    any = true;
                }
                any
            }
            Class::Write => {
                in_path.is_some_and(|name| raw::decoded_eq(name, want, false, false))
                    || in_query.any(|p| raw::decoded_eq(p.value.unwrap_or(""), want, true, false))
            }
        }
    }
}
