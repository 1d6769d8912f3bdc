mod props;

use http::Method;

use super::*;
use crate::config::{ClassifyRule, Profile};

const GOLDEN: &str = include_str!("../../tests/data/kp-classify.tsv");
const KEY: &str = "12e8c9c2-a162-472d-b7d6-8b9a86b815a6";

fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).expect("test method is a valid token")
}

/// Splits `path?query` the way `http::Uri` does: at the first `?`.
fn split(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

fn classify(c: &Classifier, m: &str, target: &str) -> Decision {
    let (path, query) = split(target);
    c.classify(&method(m), path, query)
}

fn rule(methods: &[&str], path: &str, action: Option<&str>, class: Class) -> ClassifyRule {
    ClassifyRule {
        methods: methods.iter().map(|m| method(m)).collect(),
        path: path.to_owned(),
        action: action.map(str::to_owned),
        class,
    }
}

fn kp() -> Classifier {
    Classifier::new(Profile::KeyProtect, &[])
}

#[test]
fn golden_key_protect_table() {
    let c = kp();
    let mut rows = 0;
    let mut failures = Vec::new();
    for (i, line) in GOLDEN.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [m, target, want] = fields[..] else {
            failures.push(format!(
                "line {line_no}: expected 3 tab-separated fields: {line:?}"
            ));
            continue;
        };
        let want = match want {
            "read" => Class::Read,
            "write" => Class::Write,
            other => {
                failures.push(format!("line {line_no}: bad class {other:?}"));
                continue;
            }
        };
        rows += 1;
        let got = classify(&c, m, target);
        if got.class != want {
            failures.push(format!(
                "line {line_no}: {m} {target}: want {}, got {got}",
                want.as_str()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(rows >= 120, "golden table has only {rows} rows");
}

#[test]
fn key_protect_names_the_deciding_rule() {
    let c = kp();
    let cases = [
        ("GET", "/api/v2/keys".to_owned(), keyprotect::SAFE),
        ("OPTIONS", "*".to_owned(), keyprotect::SAFE),
        (
            "GET",
            "/api/v2/import_token".to_owned(),
            keyprotect::IMPORT_TOKEN,
        ),
        (
            "HEAD",
            "/api/v2/import_token".to_owned(),
            keyprotect::IMPORT_TOKEN,
        ),
        ("GET", "/api/v2/x/../y".to_owned(), keyprotect::DOT_DOT_SAFE),
        (
            "POST",
            format!("/api/v2/keys/{KEY}/actions/wrap"),
            keyprotect::ACTION_READ,
        ),
        (
            "POST",
            format!("/api/v2/keys/{KEY}/actions/rotate"),
            keyprotect::ACTION_WRITE,
        ),
        (
            "POST",
            format!("/api/v2/keys/{KEY}?action=rewrap"),
            keyprotect::LEGACY_READ,
        ),
        (
            "POST",
            format!("/api/v2/keys/{KEY}"),
            keyprotect::LEGACY_WRITE,
        ),
        (
            "POST",
            format!("/api/v2/keys/{KEY}/./actions/wrap"),
            keyprotect::DOT_SEGMENT,
        ),
        ("POST", "/api/v2/keys".to_owned(), keyprotect::OTHER),
        ("DELETE", format!("/api/v2/keys/{KEY}"), keyprotect::OTHER),
        (
            "GET",
            "/api/v2/import_token%3Fx".to_owned(),
            keyprotect::STRUCTURAL_SAFE,
        ),
        (
            "POST",
            format!("/api/v2/keys/{KEY}/actions/wrap%00"),
            keyprotect::STRUCTURAL,
        ),
        (
            "GET",
            "/api/v2/keys?_method=DELETE".to_owned(),
            keyprotect::METHOD_OVERRIDE,
        ),
        (
            "POST",
            format!("/api/v2/keys/{KEY}?action[]=rotate&action=wrap"),
            keyprotect::LEGACY_WRITE,
        ),
        (
            "POST",
            format!("/api/v2/keys/{KEY}/actions/wrap?%20action=rotate"),
            keyprotect::ACTION_WRITE,
        ),
    ];
    for (m, target, want) in cases {
        assert_eq!(
            classify(&c, m, &target).by,
            DecidedBy::Profile(want),
            "{m} {target}"
        );
    }
}

#[test]
fn decision_display() {
    let c = kp();
    let d = classify(&c, "POST", &format!("/api/v2/keys/{KEY}/actions/unwrap"));
    assert_eq!(
        d.to_string(),
        "read (key-protect: key action wrap/unwrap/rewrap)"
    );
    let d = Decision {
        class: Class::Write,
        by: DecidedBy::Rule(2),
    };
    assert_eq!(d.to_string(), "write (classify.rules[2])");
}

#[test]
fn http_methods_profile_goes_by_method_only() {
    let c = Classifier::new(Profile::HttpMethods, &[]);
    for m in ["GET", "HEAD", "OPTIONS"] {
        for target in ["/", "/api/v2/import_token", "/a/../b", "/x?action=rotate"] {
            let d = classify(&c, m, target);
            assert_eq!(d.class, Class::Read, "{m} {target}");
            assert_eq!(d.by, DecidedBy::Profile(HTTP_SAFE));
        }
    }
    for m in [
        "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "PROPFIND", "get",
    ] {
        let target = format!("/api/v2/keys/{KEY}/actions/wrap");
        let d = classify(&c, m, &target);
        assert_eq!(d.class, Class::Write, "{m}");
        assert_eq!(d.by, DecidedBy::Profile(HTTP_OTHER));
    }
}

#[test]
fn rules_override_the_profile_first_match_wins() {
    let rules = [
        rule(&["POST"], "/api/v2/reports/**", None, Class::Read),
        rule(&[], "/api/v2/reports/admin/**", None, Class::Write),
        rule(&["GET", "HEAD"], "/api/v2/keys", None, Class::Write),
    ];
    let c = Classifier::new(Profile::KeyProtect, &rules);
    let d = classify(&c, "POST", "/api/v2/reports/daily");
    assert_eq!((d.class, d.by), (Class::Read, DecidedBy::Rule(0)));
    // The earlier, broader rule wins over the later, narrower one.
    let d = classify(&c, "POST", "/api/v2/reports/admin/purge");
    assert_eq!((d.class, d.by), (Class::Read, DecidedBy::Rule(0)));
    let d = classify(&c, "DELETE", "/api/v2/reports/admin/purge");
    assert_eq!((d.class, d.by), (Class::Write, DecidedBy::Rule(1)));
    // `**` also matches zero segments.
    let d = classify(&c, "POST", "/api/v2/reports");
    assert_eq!(d.by, DecidedBy::Rule(0));
    // Methods list, and a rule can turn a profile read into a write.
    assert_eq!(classify(&c, "GET", "/api/v2/keys/").by, DecidedBy::Rule(2));
    assert_eq!(classify(&c, "HEAD", "/api/v2/keys").class, Class::Write);
    assert_eq!(classify(&c, "OPTIONS", "/api/v2/keys").class, Class::Read);
    // The query takes no part in path matching.
    assert_eq!(
        classify(&c, "GET", "/api/v2/keys?x=1").by,
        DecidedBy::Rule(2)
    );
    // No rule matches: the profile decides.
    assert_eq!(
        classify(&c, "POST", "/api/v2/report").by,
        DecidedBy::Profile(keyprotect::OTHER)
    );
}

#[test]
fn single_star_is_one_non_empty_segment() {
    let c = Classifier::new(
        Profile::HttpMethods,
        &[
            rule(&["POST"], "/a/*/b", None, Class::Read),
            rule(&["POST"], "/c/*", None, Class::Read),
        ],
    );
    assert_eq!(classify(&c, "POST", "/a/x/b").by, DecidedBy::Rule(0));
    assert_eq!(classify(&c, "POST", "/a/x/b/").by, DecidedBy::Rule(0));
    for target in [
        "/a/b", "/a//b", "/a/x/y/b", "/a/x/b/c", "/a/x/b//", "a/x/b", "/A/x/b",
    ] {
        assert_eq!(classify(&c, "POST", target).class, Class::Write, "{target}");
    }
    assert_eq!(classify(&c, "POST", "/c/%2Fx").by, DecidedBy::Rule(1));
    assert_eq!(classify(&c, "POST", "/c/").class, Class::Write);
    assert_eq!(classify(&c, "POST", "/c").class, Class::Write);
    assert_eq!(classify(&c, "POST", "/c/x/y").class, Class::Write);
}

#[test]
fn root_and_catch_all_patterns() {
    let c = Classifier::new(
        Profile::KeyProtect,
        &[
            rule(&["PUT"], "/", None, Class::Read),
            rule(&["PATCH"], "/**", None, Class::Read),
        ],
    );
    assert_eq!(classify(&c, "PUT", "/").by, DecidedBy::Rule(0));
    assert_eq!(classify(&c, "PUT", "/x").class, Class::Write);
    assert_eq!(classify(&c, "PATCH", "/").by, DecidedBy::Rule(1));
    assert_eq!(classify(&c, "PATCH", "/a//b/c").by, DecidedBy::Rule(1));
    assert_eq!(
        classify(&c, "PATCH", "").class,
        Class::Write,
        "no leading slash"
    );
}

#[test]
fn dot_segments_keep_unsafe_methods_writes_despite_read_rules() {
    let c = Classifier::new(
        Profile::HttpMethods,
        &[rule(&[], "/api/v2/reports/**", None, Class::Read)],
    );
    for target in [
        "/api/v2/reports/../keys/k",
        "/api/v2/reports/./x",
        "/api/v2/reports/%2e%2E/keys/k",
        "/api/v2/reports/x%2F..%2Fkeys",
        "/api/v2/reports/..;x/keys",
    ] {
        let d = classify(&c, "POST", target);
        assert_eq!(d.class, Class::Write, "{target}");
        assert_eq!(d.by, DecidedBy::Profile(HTTP_DOT_SEGMENT), "{target}");
    }
    // Segments that merely contain dots are not dot segments.
    assert_eq!(
        classify(&c, "POST", "/api/v2/reports/.../a.b").class,
        Class::Read
    );
    // Safe methods keep going through the rules.
    assert_eq!(
        classify(&c, "GET", "/api/v2/reports/../x").by,
        DecidedBy::Rule(0)
    );
}

#[test]
fn overrides_and_structural_bytes_are_writes_despite_read_rules() {
    let rules = [rule(&[], "/**", None, Class::Read)];
    for profile in [Profile::KeyProtect, Profile::HttpMethods] {
        let c = Classifier::new(profile, &rules);
        let (override_name, structural_name) = match profile {
            Profile::KeyProtect => (keyprotect::METHOD_OVERRIDE, keyprotect::STRUCTURAL),
            Profile::HttpMethods => (HTTP_METHOD_OVERRIDE, HTTP_STRUCTURAL),
        };
        for m in ["GET", "HEAD", "OPTIONS", "POST"] {
            for target in ["/x?_method=DELETE", "/x?a=1&%20Method%5B%5D=PUT"] {
                let d = classify(&c, m, target);
                let want = (Class::Write, DecidedBy::Profile(override_name));
                assert_eq!((d.class, d.by), want, "{profile:?} {m} {target}");
            }
        }
        for target in ["/x%3F", "/x%00", "/x%23", "/a%5Cb", "/x%0D%0A", "/x%7f"] {
            let d = classify(&c, "POST", target);
            let want = (Class::Write, DecidedBy::Profile(structural_name));
            assert_eq!((d.class, d.by), want, "{profile:?} {target}");
            // Safe methods keep going through the rules.
            assert_eq!(classify(&c, "GET", target).by, DecidedBy::Rule(0));
        }
        // Near misses are ordinary parameters and segments.
        for target in ["/x%20y?_methods=1&methodx=2&x_method=3", "/%C3%A9"] {
            assert_eq!(classify(&c, "POST", target).by, DecidedBy::Rule(0));
        }
    }
}

#[test]
fn action_keys_are_read_the_way_permissive_servers_read_them() {
    for key in [
        "action",
        "Action",
        "%61ction",
        "action[]",
        "action%5B%5D",
        "action[0]",
        "action[a][b]",
        "action[x]y",
        "%20action",
        "+action+",
        "%09action%0D%0A",
        "action%20[]",
        "action%00junk",
    ] {
        assert!(raw::is_action_key(key), "{key}");
    }
    for key in [
        "actions",
        "actionx",
        "xaction",
        "action[",
        "action]",
        "act ion",
        "%2Faction",
        "action%2F",
        "",
    ] {
        assert!(!raw::is_action_key(key), "{key}");
    }
}

#[test]
fn read_rule_action_needs_every_indicator_to_be_it() {
    let c = Classifier::new(
        Profile::KeyProtect,
        &[rule(
            &["POST"],
            "/api/v2/jobs/*/**",
            Some("preview"),
            Class::Read,
        )],
    );
    for target in [
        "/api/v2/jobs/j1/actions/preview",
        "/api/v2/jobs/j1?action=preview",
        "/api/v2/jobs/j1/actions/preview?action=preview&x=1",
    ] {
        assert_eq!(
            classify(&c, "POST", target).by,
            DecidedBy::Rule(0),
            "{target}"
        );
    }
    for target in [
        "/api/v2/jobs/j1",
        "/api/v2/jobs/j1?action=run",
        "/api/v2/jobs/j1?action=preview&action=run",
        "/api/v2/jobs/j1/actions/preview?action=run",
        "/api/v2/jobs/j1/actions/run?action=preview",
        "/api/v2/jobs/j1/actions/Preview",
        "/api/v2/jobs/j1?action=preview&%61ction=run",
        "/api/v2/jobs/j1?Action=preview",
        "/api/v2/jobs/j1?action",
        "/api/v2/jobs/j1?action=preview&action[]=run",
        "/api/v2/jobs/j1?%20action=run&action=preview",
    ] {
        let d = classify(&c, "POST", target);
        assert_eq!(d.class, Class::Write, "{target}");
        assert_eq!(d.by, DecidedBy::Profile(keyprotect::OTHER), "{target}");
    }
}

#[test]
fn write_rule_action_matches_any_indicator() {
    let rules = [
        rule(&["GET"], "/export/**", Some("drain"), Class::Write),
        rule(&["POST"], "/api/v2/keys/*/**", Some("wrap"), Class::Write),
    ];
    let c = Classifier::new(Profile::KeyProtect, &rules);
    for target in [
        "/export/x?action=drain",
        "/export/x?action=keep&action=drain",
        "/export/x?%61ction=%64rain",
        "/export/x?ACTION=drain",
        "/export/x/actions/drain",
        "/export/x/actions/%64rain",
    ] {
        assert_eq!(
            classify(&c, "GET", target).by,
            DecidedBy::Rule(0),
            "{target}"
        );
    }
    assert_eq!(
        classify(&c, "GET", "/export/x?action=keep").class,
        Class::Read
    );
    assert_eq!(classify(&c, "GET", "/export/x").class, Class::Read);
    // A write rule can take wrap away from the profile's reads.
    let d = classify(&c, "POST", &format!("/api/v2/keys/{KEY}/actions/wrap"));
    assert_eq!((d.class, d.by), (Class::Write, DecidedBy::Rule(1)));
    let d = classify(&c, "POST", &format!("/api/v2/keys/{KEY}/actions/unwrap"));
    assert_eq!(
        (d.class, d.by),
        (Class::Read, DecidedBy::Profile(keyprotect::ACTION_READ))
    );
}

#[test]
fn classifier_is_shareable() {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
    assert_shareable::<Classifier>();
    let c = Classifier::new(Profile::KeyProtect, &[rule(&[], "/a", None, Class::Read)]);
    let d = c.clone().classify(&Method::PUT, "/a", None);
    assert_eq!(d.by, DecidedBy::Rule(0));
}

const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    "?",
    "&",
    "=",
    ";",
    "%",
    "%2F",
    "%2f",
    "%2e",
    "%2E",
    "%6",
    "%61",
    "%zz",
    "+",
    "action",
    "actions",
    "wrap",
    "unwrap",
    "rewrap",
    "rotate",
    "api",
    "v2",
    "keys",
    "import_token",
    "registrations",
    ".",
    "..",
    "*",
    "**",
    "x",
    "12e8c9c2-a162",
    "é",
    "🔑",
    "\u{0}",
    " ",
    "\t",
    "%C3%A9",
    "%F0",
    "\u{10FFFF}",
    "",
    "[",
    "]",
    "%5B%5D",
    "%20",
    "_method",
    "%3F",
    "%00",
    "%5C",
    "\\",
    "#",
];

fn random_string(rng: &mut fastrand::Rng) -> String {
    let mut s = String::new();
    let pieces = match rng.u8(0..5) {
        0 => rng.usize(0..24),
        // Arbitrary bytes, as far as a `&str` can hold them.
        4 => {
            let bytes: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
            s.push_str(&String::from_utf8_lossy(&bytes));
            0
        }
        1 => {
            s.push_str("/api/v2/keys/");
            rng.usize(0..24)
        }
        // Read routes and near misses of them, so that reads are exercised.
        2 => {
            s.push_str("/api/v2/keys/k1/actions/wrap");
            rng.usize(0..4)
        }
        _ => {
            s.push_str("/api/v2/keys/k1?action=unwrap");
            rng.usize(0..4)
        }
    };
    for _ in 0..pieces {
        s.push_str(PIECES[rng.usize(0..PIECES.len())]);
    }
    s
}

fn random_method(rng: &mut fastrand::Rng) -> Method {
    const NAMED: &[&str] = &[
        "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "post",
        "WRAP", "PROPFIND",
    ];
    if rng.u8(..) < 230 {
        return method(NAMED[rng.usize(0..NAMED.len())]);
    }
    let token: Vec<u8> = (0..rng.usize(0..12)).map(|_| rng.u8(..)).collect();
    Method::from_bytes(&token).unwrap_or(Method::GET)
}

#[test]
fn never_panics_and_keeps_invariants_on_random_input() {
    let mut rng = fastrand::Rng::with_seed(0x00c1_a551_f1e5);
    let rules = [
        rule(&["POST"], "/api/v2/reports/**", None, Class::Read),
        rule(&[], "/api/*/keys/*/actions/*", Some("wrap"), Class::Write),
        rule(&["GET"], "/**", Some("drain"), Class::Write),
        rule(&[], "/", None, Class::Read),
    ];
    let kp_plain = kp();
    let kp_rules = Classifier::new(Profile::KeyProtect, &rules);
    let http_plain = Classifier::new(Profile::HttpMethods, &[]);
    let http_rules = Classifier::new(Profile::HttpMethods, &rules);
    let mut post_reads = 0;
    for _ in 0..200_000 {
        let m = random_method(&mut rng);
        let raw = random_string(&mut rng);
        // Mostly split like a URI; sometimes a `?` stays in the path, or the
        // query is unrelated.
        let (path, query) = match rng.u8(0..4) {
            0 => (raw.as_str(), None),
            1 => (raw.as_str(), Some(raw.as_str())),
            _ => split(&raw),
        };
        let safe = m == Method::GET || m == Method::HEAD || m == Method::OPTIONS;
        // A method-override parameter makes every classifier answer write.
        let overridden = raw::has_method_override_param(query);

        let d = kp_plain.classify(&m, path, query);
        assert_eq!(d, kp_plain.classify(&m, path, query));
        if d.class == Class::Read {
            assert!(
                safe || (m == Method::POST && path.starts_with("/api/v2/keys/")),
                "{m} {path:?} {query:?} -> {d}"
            );
        }
        if m == Method::OPTIONS {
            assert_eq!(d.class == Class::Read, !overridden, "{path:?} {query:?}");
        }
        if m == Method::POST && d.class == Class::Read {
            let wraps = ["wrap", "unwrap", "rewrap"];
            let trimmed = path.strip_suffix('/').unwrap_or(path);
            let named = wraps
                .iter()
                .any(|w| trimmed.ends_with(&format!("/actions/{w}")))
                || query.is_some_and(|q| wraps.iter().any(|w| q.contains(&format!("action={w}"))));
            assert!(named, "POST read without a read action: {path:?} {query:?}");
            post_reads += 1;
        }

        let d = http_plain.classify(&m, path, query);
        let read = safe && !overridden;
        assert_eq!(d.class == Class::Read, read, "{m} {path:?} {query:?}");

        for c in [&kp_rules, &http_rules] {
            let d = c.classify(&m, path, query);
            if overridden {
                assert_eq!(d.class, Class::Write, "{m} {path:?} {query:?}");
            }
            if let DecidedBy::Rule(i) = d.by {
                assert!(i < rules.len());
                assert_eq!(d.class, rules[i].class);
            }
        }
    }
    assert!(post_reads > 1_000, "only {post_reads} POST reads generated");
}
