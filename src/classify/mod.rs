//! Classification of requests into reads and writes (docs/design.md §2).
//!
//! A [`Classifier`] is compiled once from the `[classify]` config and then
//! answers, for every request, whether it may change stored state. The answer
//! decides where a request may go while the primary region is lost: reads may
//! be served by the replica, writes are refused. Classification is per
//! operation, not per method: Key Protect's wrap, unwrap and rewrap are POSTs
//! that store nothing, and they are the data path that must keep working.
//!
//! Order: custom `[[classify.rules]]` first (first match wins), then the
//! profile. Whatever no rule recognises is a write (fail closed): a blocked
//! read costs availability during a failover, a write let through to the
//! replica is lost or diverges.
//!
//! Inputs are the path and query exactly as received. Nothing is
//! percent-decoded or normalised before matching: Key Protect registration
//! CRNs carry `%2F` inside one segment. Where an upstream might decode or
//! resolve what the raw form hides (dot segments, `%2F`, an encoded `?` or
//! NUL, an `action` parameter spelled `action[]` or `%61ction`), the check
//! leans towards write. A method-override query parameter (`_method=DELETE`)
//! makes any request a write, whatever the rules say. `classify` does not
//! allocate.
//!
//! Deliberately not here: method-override headers (the proxy strips them, so
//! they cannot change what the upstream does), request bodies and content types (Key Protect clients do
//! not send them reliably), and what to do with a write (routing decides).

mod keyprotect;
mod raw;
mod rules;
mod settings;
#[cfg(test)]
mod tests;

pub use settings::{ClassifyConfig, ClassifyRule, Profile};

use std::fmt;
use std::sync::Arc;

use http::Method;

use rules::CompiledRule;

/// Whether a request may change stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Read,
    Write,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
        }
    }
}

/// The class of one request and what decided it, for logs and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub class: Class,
    pub by: DecidedBy,
}

/// What produced a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// Index into `classify.rules`.
    Rule(usize),
    /// A short, stable name of the profile rule, prefixed with the profile
    /// name, e.g. `"key-protect: key action wrap/unwrap/rewrap"`.
    Profile(&'static str),
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.by {
            DecidedBy::Rule(i) => write!(f, "{} (classify.rules[{i}])", self.class.as_str()),
            DecidedBy::Profile(name) => write!(f, "{} ({name})", self.class.as_str()),
        }
    }
}

const HTTP_SAFE: &str = "http-methods: safe method";
const HTTP_OTHER: &str = "http-methods: other method";
const HTTP_DOT_SEGMENT: &str = "http-methods: dot segment in path (fail closed)";
const HTTP_STRUCTURAL: &str =
    "http-methods: encoded ?, #, backslash or control character in path (fail closed)";
const HTTP_METHOD_OVERRIDE: &str =
    "http-methods: method-override query parameter such as _method (fail closed)";

/// Read/write classifier compiled from `[classify]`. Cheap to clone: the
/// compiled rules are shared.
#[derive(Debug, Clone)]
pub struct Classifier {
    profile: Profile,
    rules: Arc<[CompiledRule]>,
}

impl Classifier {
    pub fn new(profile: Profile, rules: &[ClassifyRule]) -> Classifier {
        Classifier {
            profile,
            rules: rules.iter().map(CompiledRule::new).collect(),
        }
    }

    /// Classifies one request. `path` and `query` are raw, as received
    /// (`uri.path()` and `uri.query()`); never panics, never allocates.
    pub fn classify(&self, method: &Method, path: &str, query: Option<&str>) -> Decision {
        if let Some(name) = self.fail_closed(method, path, query) {
            return Decision {
                class: Class::Write,
                by: DecidedBy::Profile(name),
            };
        }
        if let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches(method, path, query))
        {
            return Decision {
                class: rule.class,
                by: DecidedBy::Rule(i),
            };
        }
        let (class, name) = match self.profile {
            Profile::KeyProtect => keyprotect::classify(method, path, query),
            Profile::HttpMethods if is_safe(method) => (Class::Read, HTTP_SAFE),
            Profile::HttpMethods => (Class::Write, HTTP_OTHER),
        };
        Decision {
            class,
            by: DecidedBy::Profile(name),
        }
    }

    /// Requests that are writes before any rule is asked: what the upstream
    /// runs may differ from what the rules see. A method-override parameter
    /// can make any method a DELETE. A `.` or `..` segment lets the upstream
    /// resolve the path elsewhere, and an encoded `?`, `#`, backslash or
    /// control character lets it cut or split the path elsewhere; only safe
    /// methods keep their chance to be reads there (the profile decides).
    fn fail_closed(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Option<&'static str> {
        let kp = self.profile == Profile::KeyProtect;
        let pick = |kp_name, http_name| Some(if kp { kp_name } else { http_name });
        if raw::has_method_override_param(query) {
            return pick(keyprotect::METHOD_OVERRIDE, HTTP_METHOD_OVERRIDE);
        }
        if is_safe(method) {
            return None;
        }
        if raw::has_dot_segment(path) {
            return pick(keyprotect::DOT_SEGMENT, HTTP_DOT_SEGMENT);
        }
        if raw::has_structural_byte(path) {
            return pick(keyprotect::STRUCTURAL, HTTP_STRUCTURAL);
        }
        None
    }
}

/// GET, HEAD and OPTIONS: the methods that change nothing in a sane API.
fn is_safe(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}
