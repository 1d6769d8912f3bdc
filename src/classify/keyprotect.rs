//! The `key-protect` profile: the Key Protect (and HPCS) v2 API table.
//!
//! Reads are a short allow-list; everything else is a write, so routes the
//! table does not know stay safe:
//! - GET, HEAD and OPTIONS on any path, except `GET /api/v2/import_token`:
//!   every retrieval consumes one of the token's `maxAllowedRetrievals`.
//!   HEAD there is a write too: common server frameworks answer HEAD by
//!   running the GET handler, so it may consume a retrieval as well, and a
//!   token is only useful before an import, itself a write. That path is
//!   recognised the way a permissive upstream would route it (percent-decoded,
//!   `%2F` as a separator, empty and `.` segments and `;params` ignored, ASCII
//!   case ignored); a `..` segment, or an encoded `?`, `#`, backslash or
//!   control character, in a GET or HEAD path is a write, as it could
//!   resolve or be cut to that path.
//! - `POST /api/v2/keys/{id}/actions/{wrap|unwrap|rewrap}` and the legacy
//!   `POST /api/v2/keys/{id}?action={wrap|unwrap|rewrap}`: they compute on an
//!   existing key version and store nothing. Names are case-sensitive. The
//!   query may hold exactly one parameter a server could read as `action`
//!   (`%61ction`, `Action`, `action[]`, ` action`: see `raw::key_is`), and it
//!   must be literally `action=NAME` with the path's read action, if the path
//!   names one; anything else (missing, empty, unknown, repeated even with
//!   the same name, or spelled otherwise) makes the request a write. `{id}`
//!   (a UUID or an alias) must be plain unreserved characters:
//!   aliases cannot hold anything else, and an encoded `/` must not move the
//!   action.
//!
//! Matching starts at the beginning of the path: no prefix is skipped.

use http::Method;

use super::raw::{self, Dots};
use super::Class;

pub(super) const SAFE: &str = "key-protect: safe method";
pub(super) const IMPORT_TOKEN: &str = "key-protect: GET/HEAD import_token consumes a retrieval";
pub(super) const DOT_DOT_SAFE: &str =
    "key-protect: dot-dot segment in a GET/HEAD path (fail closed)";
pub(super) const DOT_SEGMENT: &str = "key-protect: dot segment in path (fail closed)";
pub(super) const STRUCTURAL_SAFE: &str =
    "key-protect: encoded ?, #, backslash or control character in a GET/HEAD path (fail closed)";
pub(super) const STRUCTURAL: &str =
    "key-protect: encoded ?, #, backslash or control character in path (fail closed)";
pub(super) const METHOD_OVERRIDE: &str =
    "key-protect: method-override query parameter such as _method (fail closed)";
pub(super) const ACTION_READ: &str = "key-protect: key action wrap/unwrap/rewrap";
pub(super) const ACTION_WRITE: &str =
    "key-protect: key action other than wrap/unwrap/rewrap, or conflicting";
pub(super) const LEGACY_READ: &str = "key-protect: legacy ?action=wrap/unwrap/rewrap";
pub(super) const LEGACY_WRITE: &str = "key-protect: legacy ?action missing, other or conflicting";
pub(super) const OTHER: &str = "key-protect: no read route matched (fail closed)";

pub(super) fn classify(method: &Method, path: &str, query: Option<&str>) -> (Class, &'static str) {
    if *method == Method::GET || *method == Method::HEAD {
        return match import_token(path) {
            Lenient::ImportToken => (Class::Write, IMPORT_TOKEN),
            Lenient::DotDot => (Class::Write, DOT_DOT_SAFE),
            Lenient::Structural => (Class::Write, STRUCTURAL_SAFE),
            Lenient::Other => (Class::Read, SAFE),
        };
    }
    if *method == Method::OPTIONS {
        return (Class::Read, SAFE);
    }
    if *method != Method::POST {
        return (Class::Write, OTHER);
    }
    match route(path) {
        Route::Actions(name) => match (read_action(name), query_action(query)) {
            (Some(_), QueryAction::Absent) => (Class::Read, ACTION_READ),
            (Some(name), QueryAction::Read(q)) if q == name => (Class::Read, ACTION_READ),
            _ => (Class::Write, ACTION_WRITE),
        },
        Route::Legacy => match query_action(query) {
            QueryAction::Read(_) => (Class::Read, LEGACY_READ),
            QueryAction::Absent | QueryAction::Bad => (Class::Write, LEGACY_WRITE),
        },
        Route::Other => (Class::Write, OTHER),
    }
}

enum Route<'a> {
    /// `/api/v2/keys/{id}/actions/{name}`
    Actions(&'a str),
    /// `/api/v2/keys/{id}`
    Legacy,
    Other,
}

fn route(path: &str) -> Route<'_> {
    let Some(segments) = raw::segments(path) else {
        return Route::Other;
    };
    // The longest route has six segments; a seventh means no match.
    let mut segs = [""; 7];
    let mut n = 0;
    for seg in segments {
        if n == segs.len() {
            return Route::Other;
        }
        segs[n] = seg;
        n += 1;
    }
    match segs[..n] {
        ["api", "v2", "keys", id, "actions", name] if is_key_id(id) => Route::Actions(name),
        ["api", "v2", "keys", id] if is_key_id(id) => Route::Legacy,
        _ => Route::Other,
    }
}

/// A key UUID or alias: unreserved characters only (aliases allow letters,
/// digits, `-` and `_`), not a dot segment, and not the literal
/// `registrations` of `/api/v2/keys/registrations`.
fn is_key_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id != "registrations"
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

fn read_action(name: &str) -> Option<&'static str> {
    match name {
        "wrap" => Some("wrap"),
        "unwrap" => Some("unwrap"),
        "rewrap" => Some("rewrap"),
        _ => None,
    }
}

enum QueryAction {
    /// No parameter that could mean `action`.
    Absent,
    /// The only such parameter is literally `action=NAME` with a read NAME.
    Read(&'static str),
    Bad,
}

fn query_action(query: Option<&str>) -> QueryAction {
    let mut actions = raw::params(query).filter(|p| raw::is_action_key(p.key));
    let Some(only) = actions.next() else {
        return QueryAction::Absent;
    };
    // Servers disagree on which of several wins (first, last, an array), so
    // a second one, even with the same name, is never a read.
    if actions.next().is_some() || only.key != "action" {
        return QueryAction::Bad;
    }
    only.value
        .and_then(read_action)
        .map_or(QueryAction::Bad, QueryAction::Read)
}

enum Lenient {
    ImportToken,
    DotDot,
    Structural,
    Other,
}

/// Whether an upstream that decodes, collapses and ignores case could route
/// `path` to `/api/v2/import_token`.
fn import_token(path: &str) -> Lenient {
    const TARGET: [&str; 3] = ["api", "v2", "import_token"];
    // `/api/v2/import_token%3Fx` or `...%00` is that path to a server that
    // decodes before cutting off a query, or reads the path as a C string.
    if raw::has_structural_byte(path) {
        return Lenient::Structural;
    }
    let mut matched = 0;
    let mut mismatch = false;
    for seg in raw::lenient_segments(path) {
        let seg = raw::without_params(seg);
        if seg.is_empty() {
            continue;
        }
        match raw::is_dot_segment(seg) {
            Dots::One => continue,
            Dots::Two => return Lenient::DotDot,
            Dots::None => {}
        }
        match TARGET.get(matched) {
            Some(want) if !mismatch && raw::decoded_eq(seg, want, false, true) => matched += 1,
            _ => mismatch = true,
        }
    }
    if !mismatch && matched == TARGET.len() {
        Lenient::ImportToken
    } else {
        Lenient::Other
    }
}
