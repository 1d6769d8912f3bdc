//! Allocation-free views of a raw request path and query.
//!
//! Two views of a path exist on purpose. [`segments`] is the exact one that
//! routes are matched against: split on `/` only, percent-encoding intact.
//! [`lenient_segments`] and the `decoded_*` helpers model what a permissive
//! upstream could make of the same bytes (percent-decoding once, `%2F` as a
//! separator); they are used only to detect requests that must be writes,
//! never to let a request become a read.

/// The exact segments of `path` after the leading `/`, with at most one
/// trailing `/` removed. `None` when the path does not start with `/`. The
/// root path `/` has no segments; `//` yields empty segments.
pub(super) fn segments(path: &str) -> Option<Segments<'_>> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    Some(Segments {
        rest: (!rest.is_empty()).then_some(rest),
    })
}

#[derive(Debug, Clone)]
pub(super) struct Segments<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.split_once('/') {
            Some((seg, tail)) => {
                self.rest = Some(tail);
                Some(seg)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Raw pieces of `path` split on `/` and on an encoded `%2F`/`%2f`, as an
/// upstream that decodes before routing would split it. The leading `/` is
/// not required; empty pieces are kept (callers skip them).
pub(super) fn lenient_segments(path: &str) -> LenientSegments<'_> {
    LenientSegments { rest: Some(path) }
}

pub(super) struct LenientSegments<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for LenientSegments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let b = rest.as_bytes();
        for i in 0..b.len() {
            // Every byte compared is ASCII, so each slice index below is a
            // char boundary.
            if b[i] == b'/' {
                self.rest = Some(&rest[i + 1..]);
                return Some(&rest[..i]);
            }
            if b[i] == b'%'
                && b.get(i + 1) == Some(&b'2')
                && matches!(b.get(i + 2), Some(b'F' | b'f'))
            {
                self.rest = Some(&rest[i + 3..]);
                return Some(&rest[..i]);
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// True when some segment of `path`, percent-decoded once and without
/// `;params`, is `.` or `..`. Splits leniently, so `a%2F..` counts too.
pub(super) fn has_dot_segment(path: &str) -> bool {
    lenient_segments(path).any(|seg| is_dot_segment(without_params(seg)) != Dots::None)
}

/// A segment without its `;params`, which some servlet containers drop
/// before routing (so `..;x` acts as `..` there).
pub(super) fn without_params(seg: &str) -> &str {
    seg.split(';').next().unwrap_or("")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dots {
    None,
    One,
    Two,
}

/// Whether a raw segment decodes to `.` or `..` (`%2e`, `.%2E` ...).
pub(super) fn is_dot_segment(seg: &str) -> Dots {
    let mut n = 0;
    for byte in Decoded::new(seg, false) {
        if byte != b'.' || n == 2 {
            return Dots::None;
        }
        n += 1;
    }
    match n {
        1 => Dots::One,
        2 => Dots::Two,
        _ => Dots::None,
    }
}

/// `raw`, percent-decoded once (and `+` as space when `plus` is set), equals
/// `want`; ASCII case is ignored when `ignore_case` is set.
pub(super) fn decoded_eq(raw: &str, want: &str, plus: bool, ignore_case: bool) -> bool {
    let want = want.as_bytes();
    let mut n = 0;
    for byte in Decoded::new(raw, plus) {
        let Some(&w) = want.get(n) else {
            return false;
        };
        let same = if ignore_case {
            byte.eq_ignore_ascii_case(&w)
        } else {
            byte == w
        };
        if !same {
            return false;
        }
        n += 1;
    }
    n == want.len()
}

/// Bytes of a raw string percent-decoded once. A `%` not followed by two hex
/// digits stays as it is, as most decoders leave it.
struct Decoded<'a> {
    b: &'a [u8],
    i: usize,
    plus: bool,
}

impl<'a> Decoded<'a> {
    fn new(raw: &'a str, plus: bool) -> Self {
        Decoded {
            b: raw.as_bytes(),
            i: 0,
            plus,
        }
    }
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let byte = *self.b.get(self.i)?;
        if byte == b'%' {
            let hi = self.b.get(self.i + 1).and_then(|&h| hex(h));
            let lo = self.b.get(self.i + 2).and_then(|&l| hex(l));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                self.i += 3;
                return Some(hi << 4 | lo);
            }
        }
        self.i += 1;
        if byte == b'+' && self.plus {
            return Some(b' ');
        }
        Some(byte)
    }
}

fn hex(h: u8) -> Option<u8> {
    match h {
        b'0'..=b'9' => Some(h - b'0'),
        b'a'..=b'f' => Some(h - b'a' + 10),
        b'A'..=b'F' => Some(h - b'A' + 10),
        _ => None,
    }
}

/// One query parameter, raw. `value` is `None` when there is no `=`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Param<'a> {
    pub key: &'a str,
    pub value: Option<&'a str>,
}

/// Query parameters split on `&` and also on `;` (some servers still accept
/// it as a separator; splitting on more can only reveal more parameters).
pub(super) fn params(query: Option<&str>) -> impl Iterator<Item = Param<'_>> {
    query
        .unwrap_or("")
        .split(['&', ';'])
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => Param {
                key,
                value: Some(value),
            },
            None => Param {
                key: pair,
                value: None,
            },
        })
}

/// A parameter an upstream could read as `action` (see [`key_is`]:
/// `%61ction`, `Action`, `action[]`, ` action`). Only a key that is literally
/// `action` can make a request a read; the others only make it a write.
pub(super) fn is_action_key(key: &str) -> bool {
    key_is(key, "action")
}

/// Query parameter names that web frameworks read as the request's method
/// (Rails and Laravel `_method`, Express's `method-override` options, the
/// header names some accept as parameters too).
const METHOD_OVERRIDE_PARAMS: [&str; 5] = [
    "_method",
    "method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether some parameter of `query` could override the request's method.
pub(super) fn has_method_override_param(query: Option<&str>) -> bool {
    params(query).any(|p| {
        METHOD_OVERRIDE_PARAMS
            .iter()
            .any(|name| key_is(p.key, name))
    })
}

/// Whether a raw parameter name could be read as `name` (lower-case ASCII)
/// by a permissive server: percent-decoded once with `+` as space, ASCII case
/// ignored, surrounding blanks (space and control characters) trimmed, cut at
/// a NUL (C strings), and a bracket suffix dropped (`name[]`, `name[0]`,
/// `name[a][b]`; PHP also ignores what follows the first `]`).
pub(super) fn key_is(key: &str, name: &str) -> bool {
    let is_blank = |b: u8| b <= b' ' || b == 0x7f;
    let mut bytes = Decoded::new(key, true).skip_while(|&b| b != 0 && is_blank(b));
    for &want in name.as_bytes() {
        match bytes.next() {
            Some(b) if b.eq_ignore_ascii_case(&want) => {}
            _ => return false,
        }
    }
    let mut open = false;
    let mut closed = false;
    for b in bytes {
        match b {
            0 => break,
            b'[' if !open => open = true,
            b']' if open => closed = true,
            _ if open => {}
            _ if is_blank(b) => {}
            _ => return false,
        }
    }
    // `name[` with no `]` is a different name (PHP makes it `name_`).
    !open || closed
}

/// Whether `path`, percent-decoded once, holds a byte that some server could
/// take as structure rather than as part of a segment: `?` or `#` (a server
/// that decodes before splitting off the query or fragment), a backslash (a
/// separator on some servers) or a control character (NUL ends a C string,
/// line breaks split a request line).
pub(super) fn has_structural_byte(path: &str) -> bool {
    Decoded::new(path, false).any(|b| matches!(b, b'?' | b'#' | b'\\') || b < b' ' || b == 0x7f)
}

/// The `NAME` of a path ending in `/actions/NAME` (exact segments).
pub(super) fn path_action(path: &str) -> Option<&str> {
    let mut prev = None;
    let mut last = None;
    for seg in segments(path)? {
        prev = last;
        last = Some(seg);
    }
    match prev {
        Some("actions") => last,
        _ => None,
    }
}
