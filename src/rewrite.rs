//! Region ID mapping: rewrites a request bound for the replica so that it names
//! the replica's service instance and key IDs (`[[rewrite]]` entries).
//!
//! A key duplicated into the replica region has another key ID and lives in
//! another instance, so a request that fails over must carry the replica's
//! IDs. The caller applies [`Rewriter::to_replica`] only when a request goes to
//! the replica, after classification (classification always sees what the
//! client sent). Health probes of the replica take their header values from
//! [`Rewriter::replica_header_value`].
//!
//! Rules:
//! - **Exact matches only.** Values and segments are compared byte for byte,
//!   case-sensitively. A value with no mapping is forwarded unchanged and
//!   counted in [`Misses`]; nothing is ever guessed.
//! - **Replica values stand.** A value equal to a configured replica value is
//!   left as is and is no miss, so a client that already speaks to the replica
//!   is not punished and rewriting a rewritten request changes nothing. Should
//!   a value be both the replica of one rule and the primary of another, it is
//!   treated as a replica value for the same reason.
//! - **Headers.** For each configured header name, every value of that header
//!   is mapped on its own. A value that has neither a mapping nor is a replica
//!   value counts one header miss.
//! - **Path segments.** Only the path is looked at, never the query: any whole
//!   segment equal to a configured primary ID becomes the replica ID. The raw
//!   request target is used as is, so `%41bc` is not `Abc`; a primary ID only
//!   matches its raw form. Only the key-ID position of Key Protect paths,
//!   `{id}` in `/api/v2/keys/{id}...`, can count a path-segment miss, and only
//!   when it is shaped like a key ID (a UUID): other segments (`api`, `v2`,
//!   action names, CRNs) are not IDs, and Key Protect refuses UUID-shaped
//!   aliases, so an unmapped alias (aliases are per instance and can be made
//!   identical in both regions) is not a miss. The literal `registrations` of
//!   `/api/v2/keys/registrations` is never a key ID.
//! - A kind counts misses only when rules of that kind exist (for headers: for
//!   that header name).
//!
//! The hot path allocates nothing when nothing changes: look-ups borrow the
//! request's bytes, and a new path is built only when a segment is replaced.
//! This module does not decide where a request goes, does not touch the body,
//! and does not record metrics; the caller adds [`Misses`] to
//! `failway_rewrite_misses_total{kind}`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{RewriteKind, RewriteRule};

/// The compiled `[[rewrite]]` entries; cheap to clone and share across tasks.
#[derive(Debug, Clone, Default)]
pub struct Rewriter {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// One table per configured header name; a handful at most, so a list.
    headers: Vec<HeaderTable>,
    segments: SegmentTable,
}

#[derive(Debug)]
struct HeaderTable {
    name: HeaderName,
    /// Keyed by raw bytes: a configured value may hold non-ASCII text, which
    /// `HeaderValue::to_str` would refuse.
    to_replica: HashMap<Box<[u8]>, HeaderValue>,
    replicas: HashSet<Box<[u8]>>,
}

#[derive(Debug, Default)]
struct SegmentTable {
    to_replica: HashMap<Box<str>, Box<str>>,
    replicas: HashSet<Box<str>>,
    /// Length bounds of the known IDs, so most segments skip hashing.
    min_len: usize,
    max_len: usize,
}

/// What [`Rewriter::to_replica`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RewriteResult {
    /// The new path-and-query, only when it changed.
    pub path_and_query: Option<String>,
    pub misses: Misses,
}

/// Values that had no mapping, by kind; added to
/// `failway_rewrite_misses_total{kind}`.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Misses {
    pub header: u32,
    pub path_segment: u32,
}

impl Misses {
    pub fn get(&self, kind: MissKind) -> u32 {
        match kind {
            MissKind::Header => self.header,
            MissKind::PathSegment => self.path_segment,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.header == 0 && self.path_segment == 0
    }
}

/// The `kind` label of `failway_rewrite_misses_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MissKind {
    Header,
    PathSegment,
}

impl MissKind {
    pub const ALL: [MissKind; 2] = [MissKind::Header, MissKind::PathSegment];

    pub fn as_str(self) -> &'static str {
        match self {
            MissKind::Header => "header",
            MissKind::PathSegment => "path_segment",
        }
    }
}

/// Where Key Protect puts the key ID: the segment right after this prefix.
const KEY_ID_PREFIX: &str = "/api/v2/keys/";

impl Rewriter {
    /// Compiles validated rules (config validation rejects duplicates and
    /// conflicting mappings). A header rule whose replica value is not a valid
    /// header value cannot pass validation; should one get here it is skipped,
    /// and its primary value then shows up as a miss.
    pub fn new(rules: &[RewriteRule]) -> Rewriter {
        let mut inner = Inner::default();
        for rule in rules {
            match &rule.kind {
                RewriteKind::PathSegment => inner.segments.insert(&rule.primary, &rule.replica),
                RewriteKind::Header(name) => {
                    let Ok(replica) = HeaderValue::from_str(&rule.replica) else {
                        continue;
                    };
                    let table = match inner.headers.iter().position(|t| t.name == name) {
                        Some(i) => &mut inner.headers[i],
                        None => {
                            inner.headers.push(HeaderTable {
                                name: name.clone(),
                                to_replica: HashMap::new(),
                                replicas: HashSet::new(),
                            });
                            let last = inner.headers.len() - 1;
                            &mut inner.headers[last]
                        }
                    };
                    table
                        .to_replica
                        .insert(rule.primary.as_bytes().into(), replica);
                    table.replicas.insert(rule.replica.as_bytes().into());
                }
            }
        }
        Rewriter {
            inner: Arc::new(inner),
        }
    }

    /// True when no rule is configured: the caller may skip rewriting.
    pub fn is_empty(&self) -> bool {
        self.inner.headers.is_empty() && self.inner.segments.to_replica.is_empty()
    }

    /// Rewrites a request bound for the replica. `path_and_query` is the raw
    /// request target (percent-encoding intact; it is never decoded). Returns
    /// the new path-and-query only when it changed, and rewrites mapped
    /// headers in place.
    pub fn to_replica(&self, path_and_query: &str, headers: &mut HeaderMap) -> RewriteResult {
        let mut misses = Misses::default();
        for table in &self.inner.headers {
            misses.header += table.rewrite(headers);
        }
        let (path_and_query, path_misses) = self.inner.segments.rewrite(path_and_query);
        misses.path_segment = path_misses;
        RewriteResult {
            path_and_query,
            misses,
        }
    }

    /// The replica's value for a header when probing the replica (e.g.
    /// `bluemix-instance`), if a mapping for `primary_value` exists.
    pub fn replica_header_value(
        &self,
        name: &HeaderName,
        primary_value: &HeaderValue,
    ) -> Option<HeaderValue> {
        self.inner
            .headers
            .iter()
            .find(|t| t.name == name)?
            .to_replica
            .get(primary_value.as_bytes())
            .cloned()
    }
}

impl HeaderTable {
    /// Maps every value of this header; returns the number of misses.
    fn rewrite(&self, headers: &mut HeaderMap) -> u32 {
        // A read-only pass first: most requests need no change, and taking an
        // entry may grow the map.
        let mut misses = 0;
        let mut mapped = false;
        for value in headers.get_all(&self.name) {
            let bytes = value.as_bytes();
            if self.replicas.contains(bytes) {
                continue;
            }
            if self.to_replica.contains_key(bytes) {
                mapped = true;
            } else {
                misses += 1;
            }
        }
        if mapped {
            if let http::header::Entry::Occupied(mut entry) = headers.entry(&self.name) {
                for value in entry.iter_mut() {
                    if self.replicas.contains(value.as_bytes()) {
                        continue;
                    }
                    if let Some(replica) = self.to_replica.get(value.as_bytes()) {
                        let sensitive = value.is_sensitive();
                        *value = replica.clone();
                        value.set_sensitive(sensitive);
                    }
                }
            }
        }
        misses
    }
}

impl SegmentTable {
    fn insert(&mut self, primary: &str, replica: &str) {
        if self.to_replica.is_empty() {
            self.min_len = usize::MAX;
        }
        for len in [primary.len(), replica.len()] {
            self.min_len = self.min_len.min(len);
            self.max_len = self.max_len.max(len);
        }
        self.to_replica.insert(primary.into(), replica.into());
        self.replicas.insert(replica.into());
    }

    fn may_match(&self, segment: &str) -> bool {
        (self.min_len..=self.max_len).contains(&segment.len())
    }

    /// Maps the segments of the path; the query is carried over untouched.
    /// Returns the new path-and-query when it changed, and the misses.
    fn rewrite(&self, path_and_query: &str) -> (Option<String>, u32) {
        if self.to_replica.is_empty() {
            return (None, 0);
        }
        let path_end = path_and_query.find('?').unwrap_or(path_and_query.len());
        let path = &path_and_query[..path_end];
        let key_id_at = path
            .starts_with(KEY_ID_PREFIX)
            .then_some(KEY_ID_PREFIX.len());

        let mut out: Option<String> = None;
        let mut misses = 0;
        // Bytes of `path` already copied into `out`, or to copy once a
        // replacement starts it.
        let mut copied = 0;
        let mut start = 0;
        for segment in path.split('/') {
            let at = start;
            start += segment.len() + 1;
            let replacement = self.map(segment);
            if Some(at) == key_id_at && replacement.is_none() && self.is_unmapped_key_id(segment) {
                misses += 1;
            }
            let Some(replica) = replacement else { continue };
            let buf = out
                .get_or_insert_with(|| String::with_capacity(path_and_query.len() + self.max_len));
            buf.push_str(&path[copied..at]);
            buf.push_str(replica);
            copied = at + segment.len();
        }
        let out = out.map(|mut buf| {
            buf.push_str(&path_and_query[copied..]);
            buf
        });
        (out, misses)
    }

    /// The replica ID for a segment; replica IDs themselves stay as they are.
    fn map(&self, segment: &str) -> Option<&str> {
        if !self.may_match(segment) || self.replicas.contains(segment) {
            return None;
        }
        self.to_replica.get(segment).map(|r| &**r)
    }

    /// A segment in the key-ID position that should have had a mapping.
    fn is_unmapped_key_id(&self, segment: &str) -> bool {
        segment != "registrations" && is_uuid(segment) && !self.replicas.contains(segment)
    }
}

/// `8-4-4-4-12` hex digits, either case: the shape of a Key Protect key ID,
/// which an alias may not take.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P_INST: &str = "4f1c0000-aaaa-4bbb-8ccc-000000000001";
    const R_INST: &str = "9a2b0000-aaaa-4bbb-8ccc-000000000002";
    const P_KEY: &str = "0f5a7c3e-1111-4a4a-9b9b-00000000000a";
    const R_KEY: &str = "7d2e9b10-2222-4c4c-8d8d-00000000000b";
    const UNMAPPED_KEY: &str = "12345678-3333-4e4e-af0f-00000000000c";
    const INSTANCE: HeaderName = HeaderName::from_static("bluemix-instance");

    fn header(primary: &str, replica: &str) -> RewriteRule {
        RewriteRule {
            kind: RewriteKind::Header(INSTANCE),
            primary: primary.to_owned(),
            replica: replica.to_owned(),
        }
    }

    fn segment(primary: &str, replica: &str) -> RewriteRule {
        RewriteRule {
            kind: RewriteKind::PathSegment,
            primary: primary.to_owned(),
            replica: replica.to_owned(),
        }
    }

    fn rewriter() -> Rewriter {
        Rewriter::new(&[header(P_INST, R_INST), segment(P_KEY, R_KEY)])
    }

    fn instance(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(INSTANCE, HeaderValue::from_str(value).unwrap());
        h
    }

    fn values<'a>(h: &'a HeaderMap, name: &HeaderName) -> Vec<&'a str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    /// Rewrites a path with no headers; returns the new target and the misses.
    fn path(rw: &Rewriter, target: &str) -> (Option<String>, Misses) {
        let r = rw.to_replica(target, &mut HeaderMap::new());
        (r.path_and_query, r.misses)
    }

    fn misses(header: u32, path_segment: u32) -> Misses {
        Misses {
            header,
            path_segment,
        }
    }

    #[test]
    fn shared_across_tasks() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Rewriter>();
    }

    #[test]
    fn maps_header_and_keeps_its_sensitivity() {
        let mut h = instance(P_INST);
        h.get_mut(&INSTANCE).unwrap().set_sensitive(true);
        h.insert("x-other", HeaderValue::from_static(P_INST));
        let r = rewriter().to_replica("/api/v2/keys", &mut h);
        assert_eq!(r, RewriteResult::default());
        assert_eq!(values(&h, &INSTANCE), [R_INST]);
        assert!(h.get(&INSTANCE).unwrap().is_sensitive());
        // Only configured header names are touched.
        assert_eq!(values(&h, &HeaderName::from_static("x-other")), [P_INST]);
    }

    #[test]
    fn maps_each_value_of_a_multi_valued_header() {
        let mut h = instance(P_INST);
        h.append(INSTANCE, HeaderValue::from_static("unknown-instance"));
        h.append(INSTANCE, HeaderValue::from_static(R_INST));
        h.append(INSTANCE, HeaderValue::from_static(P_INST));
        let r = rewriter().to_replica("/", &mut h);
        assert_eq!(r.misses, misses(1, 0));
        assert_eq!(
            values(&h, &INSTANCE),
            [R_INST, "unknown-instance", R_INST, R_INST]
        );
    }

    #[test]
    fn unmapped_header_value_is_forwarded_and_counted() {
        let mut h = instance("unknown-instance");
        let r = rewriter().to_replica("/api/v2/keys", &mut h);
        assert_eq!(r.misses, misses(1, 0));
        assert_eq!(values(&h, &INSTANCE), ["unknown-instance"]);

        // Matching is exact: another case is another value.
        let mut h = instance(&P_INST.to_uppercase());
        assert_eq!(rewriter().to_replica("/", &mut h).misses, misses(1, 0));

        // No header, nothing to miss.
        let r = rewriter().to_replica("/", &mut HeaderMap::new());
        assert_eq!(r.misses, Misses::default());
    }

    #[test]
    fn maps_key_id_in_actions_path() {
        let target = format!("/api/v2/keys/{P_KEY}/actions/wrap");
        let (out, m) = path(&rewriter(), &target);
        assert_eq!(out, Some(format!("/api/v2/keys/{R_KEY}/actions/wrap")));
        // `api`, `v2`, `keys`, `actions` and `wrap` are not IDs.
        assert_eq!(m, Misses::default());
    }

    #[test]
    fn maps_key_id_in_legacy_form_and_keeps_query() {
        let target = format!("/api/v2/keys/{P_KEY}?action=unwrap&x={P_KEY}");
        let (out, m) = path(&rewriter(), &target);
        assert_eq!(
            out,
            Some(format!("/api/v2/keys/{R_KEY}?action=unwrap&x={P_KEY}"))
        );
        assert_eq!(m, Misses::default());
    }

    #[test]
    fn id_in_query_is_not_touched() {
        let target = format!("/api/v2/keys?search={P_KEY}&filter=/{P_KEY}/");
        assert_eq!(path(&rewriter(), &target), (None, Misses::default()));
    }

    #[test]
    fn maps_whole_segments_anywhere_and_every_occurrence() {
        let target = format!("/v/{P_KEY}/x{P_KEY}/{P_KEY}x/{P_KEY}/");
        let (out, _) = path(&rewriter(), &target);
        assert_eq!(out, Some(format!("/v/{R_KEY}/x{P_KEY}/{P_KEY}x/{R_KEY}/")));
        let (out, _) = path(&rewriter(), &format!("/api/v2/keys/{P_KEY}/"));
        assert_eq!(out, Some(format!("/api/v2/keys/{R_KEY}/")));
    }

    #[test]
    fn percent_encoded_segment_is_not_decoded() {
        let rw = Rewriter::new(&[segment("abc", "xyz"), segment("a%2Fb", "c")]);
        assert_eq!(path(&rw, "/api/v2/keys/%61bc").0, None);
        assert_eq!(path(&rw, "/api/v2/keys/abc%2Fd").0, None);
        // A primary ID matches its raw form; `%2F` does not split segments.
        assert_eq!(path(&rw, "/x/a%2Fb/abc").0.as_deref(), Some("/x/c/xyz"));
        assert_eq!(path(&rw, "/x/a%2fb").0, None);
    }

    #[test]
    fn unmapped_key_id_is_counted_once() {
        let target = format!("/api/v2/keys/{UNMAPPED_KEY}/actions/wrap");
        let mut h = instance(P_INST);
        let r = rewriter().to_replica(&target, &mut h);
        assert_eq!(r.path_and_query, None);
        assert_eq!(r.misses, misses(0, 1));
        assert_eq!(values(&h, &INSTANCE), [R_INST]);

        let (_, m) = path(
            &rewriter(),
            &format!("/api/v2/keys/{UNMAPPED_KEY}?action=wrap"),
        );
        assert_eq!(m, misses(0, 1));
        // Matching is exact: another case is another ID.
        let (out, m) = path(
            &rewriter(),
            &format!("/api/v2/keys/{}", P_KEY.to_uppercase()),
        );
        assert_eq!((out, m), (None, misses(0, 1)));
    }

    #[test]
    fn other_unmapped_segments_are_not_misses() {
        for target in [
            "/api/v2/keys".to_owned(),
            "/api/v2/keys/".to_owned(),
            "/api/v2/key_rings/my-ring".to_owned(),
            format!("/api/v2/kmip_adapters/{UNMAPPED_KEY}"),
            format!("/api/v1/keys/{UNMAPPED_KEY}"),
            format!("/api/v2/keys/{P_KEY}/aliases/{UNMAPPED_KEY}"),
            format!("/api/v2/keys/{P_KEY}/registrations/crn%3Av1%3Abluemix%2Fx"),
            // An alias in the key-ID position: per instance, not a key ID.
            "/api/v2/keys/my-alias/actions/unwrap".to_owned(),
            "*".to_owned(),
            String::new(),
        ] {
            assert_eq!(path(&rewriter(), &target).1, Misses::default(), "{target}");
        }
    }

    #[test]
    fn registrations_collection_is_not_a_key_id() {
        assert_eq!(
            path(&rewriter(), "/api/v2/keys/registrations?limit=10"),
            (None, Misses::default())
        );
    }

    #[test]
    fn replica_values_are_left_alone_and_not_misses() {
        let target = format!("/api/v2/keys/{R_KEY}/actions/wrap");
        let mut h = instance(R_INST);
        let r = rewriter().to_replica(&target, &mut h);
        assert_eq!(r, RewriteResult::default());
        assert_eq!(values(&h, &INSTANCE), [R_INST]);
    }

    #[test]
    fn rewriting_is_idempotent() {
        let rw = rewriter();
        let mut h = instance(P_INST);
        let first = rw.to_replica(&format!("/api/v2/keys/{P_KEY}/metadata?x=1"), &mut h);
        let target = first.path_and_query.unwrap();
        let before = h.clone();
        let second = rw.to_replica(&target, &mut h);
        assert_eq!(second, RewriteResult::default());
        assert_eq!(h, before);
    }

    #[test]
    fn a_value_that_is_both_replica_and_primary_stays() {
        // Validation allows chains; treating `b` as a replica value keeps
        // rewriting idempotent.
        let rw = Rewriter::new(&[segment("a", "b"), segment("b", "c")]);
        assert_eq!(path(&rw, "/x/a/b").0.as_deref(), Some("/x/b/b"));
        assert_eq!(path(&rw, "/x/b/b").0, None);
    }

    #[test]
    fn misses_count_only_kinds_that_have_rules() {
        let headers_only = Rewriter::new(&[header(P_INST, R_INST)]);
        let target = format!("/api/v2/keys/{UNMAPPED_KEY}");
        assert_eq!(path(&headers_only, &target), (None, Misses::default()));

        let segments_only = Rewriter::new(&[segment(P_KEY, R_KEY)]);
        let mut h = instance("unknown-instance");
        let r = segments_only.to_replica("/", &mut h);
        assert_eq!(r.misses, Misses::default());
        assert_eq!(values(&h, &INSTANCE), ["unknown-instance"]);
    }

    #[test]
    fn nothing_to_change_returns_none() {
        let empty = Rewriter::new(&[]);
        assert!(empty.is_empty());
        assert!(!rewriter().is_empty());
        let target = format!("/api/v2/keys/{P_KEY}/actions/wrap");
        let mut h = instance(P_INST);
        assert_eq!(empty.to_replica(&target, &mut h), RewriteResult::default());
        assert_eq!(values(&h, &INSTANCE), [P_INST]);
        // Rules configured, none matching.
        assert_eq!(
            path(&rewriter(), "/api/v2/keys/my-alias/actions/wrap?x=1"),
            (None, Misses::default())
        );
    }

    #[test]
    fn probe_header_value_is_mapped() {
        let rw = rewriter();
        let p = HeaderValue::from_static(P_INST);
        assert_eq!(
            rw.replica_header_value(&INSTANCE, &p),
            Some(HeaderValue::from_static(R_INST))
        );
        let other = HeaderName::from_static("x-other");
        assert_eq!(rw.replica_header_value(&other, &p), None);
        let unknown = HeaderValue::from_static("unknown-instance");
        assert_eq!(rw.replica_header_value(&INSTANCE, &unknown), None);
    }

    #[test]
    fn several_header_names_are_independent() {
        let tenant = HeaderName::from_static("x-tenant");
        let rw = Rewriter::new(&[
            header(P_INST, R_INST),
            RewriteRule {
                kind: RewriteKind::Header(tenant.clone()),
                primary: "t1".to_owned(),
                replica: "t2".to_owned(),
            },
        ]);
        let mut h = instance("t1");
        h.insert(&tenant, HeaderValue::from_static(P_INST));
        let r = rw.to_replica("/", &mut h);
        assert_eq!(r.misses, misses(2, 0));
        assert_eq!(values(&h, &INSTANCE), ["t1"]);
        assert_eq!(values(&h, &tenant), [P_INST]);
    }

    #[test]
    fn miss_kind_labels() {
        let labels: Vec<_> = MissKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels, ["header", "path_segment"]);
        assert_eq!(misses(3, 4).get(MissKind::PathSegment), 4);
        assert!(Misses::default().is_empty());
    }
}
