//! Classification of requests into reads and writes (DESIGN.md §2).
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
//! resolve what the raw form hides (dot segments, `%2F`, an encoded `action`
//! parameter), the check leans towards write. `classify` does not allocate.
//!
//! Deliberately not here: method-override headers (the proxy strips or
//! refuses them), request bodies and content types (Key Protect clients do
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
        let safe = is_safe(method);
        // A `.` or `..` segment lets the upstream resolve the path to
        // something other than what the rules see. Only safe methods keep
        // their chance to be reads; no rule may turn such a write into a read.
        if !safe && raw::has_dot_segment(path) {
            let name = match self.profile {
                Profile::KeyProtect => keyprotect::DOT_SEGMENT,
                Profile::HttpMethods => HTTP_DOT_SEGMENT,
            };
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
            Profile::HttpMethods if safe => (Class::Read, HTTP_SAFE),
            Profile::HttpMethods => (Class::Write, HTTP_OTHER),
        };
        Decision {
            class,
            by: DecidedBy::Profile(name),
        }
    }
}

/// GET, HEAD and OPTIONS: the methods that change nothing in a sane API.
fn is_safe(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}
