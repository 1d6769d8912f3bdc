//! Properties over generated requests, against a model of the profile's
//! action rules: a write action (or a method override) anywhere in the query,
//! under any spelling a server could read as the parameter, makes a request a
//! write whatever read actions and other parameters surround it; exactly one
//! literal read action among other parameters keeps a read route a read; an
//! encoded separator or control character in the path fails closed.

use proptest::prelude::*;

use super::{classify, kp, rule, Class, Classifier, Profile, KEY};

const READ_ACTIONS: &[&str] = &["wrap", "unwrap", "rewrap"];
const WRITE_ACTIONS: &[&str] = &[
    "rotate",
    "enable",
    "disable",
    "restore",
    "setKeyForDeletion",
    "unsetKeyForDeletion",
    "sync",
    "Wrap",
    "%77rap",
    "",
];

/// Names a permissive server reads as `action`; only the first is literal.
const ACTION_NAMES: &[&str] = &[
    "action",
    "Action",
    "ACTION",
    "%61ction",
    "%41CTION",
    "action[]",
    "action%5B%5D",
    "action%5b0%5d",
    "action[x][y]",
    "action[]junk",
    "%20action",
    "+action",
    "action%20",
    "%09action%0A",
    "action%00junk",
    "%20action%20[]",
];

/// Names a server reads as the request's method.
const OVERRIDE_NAMES: &[&str] = &[
    "_method",
    "method",
    "_METHOD",
    "Method",
    "%5Fmethod",
    "_method[]",
    "%20_method",
    "x-http-method-override",
    "X-HTTP-Method-Override",
    "x-http-method",
    "x-method-override",
    "X-Method-Override%00",
];

/// Parameters that mean neither: near misses included.
const NOISE_KEYS: &[&str] = &[
    "x",
    "limit",
    "state",
    "actions",
    "actionx",
    "xaction",
    "action[",
    "act%20ion",
    "%2Faction",
    "_methods",
    "methodx",
    "x_method",
    "foo[]",
];

fn param(names: &'static [&'static str], values: &'static [&'static str]) -> BoxedStrategy<String> {
    (prop::sample::select(names), prop::sample::select(values))
        .prop_map(|(k, v)| format!("{k}={v}"))
        .boxed()
}

fn noise() -> BoxedStrategy<String> {
    let value = "[A-Za-z0-9%._~-]{0,8}";
    prop_oneof![
        (prop::sample::select(NOISE_KEYS), value).prop_map(|(k, v)| format!("{k}={v}")),
        prop::sample::select(NOISE_KEYS).prop_map(str::to_owned),
    ]
    .boxed()
}

/// `params` shuffled and joined with `&` or `;`.
fn query(params: impl Strategy<Value = Vec<String>>) -> impl Strategy<Value = String> {
    (params.prop_shuffle(), prop::sample::select(&["&", ";"][..]))
        .prop_map(|(params, sep)| params.join(sep))
}

/// A write indicator: a write value under any spelling, or a read value
/// under a spelling that is not literally `action`.
fn write_action() -> BoxedStrategy<String> {
    prop_oneof![
        param(ACTION_NAMES, WRITE_ACTIONS),
        param(&ACTION_NAMES[1..], READ_ACTIONS),
        prop::sample::select(ACTION_NAMES).prop_map(str::to_owned),
    ]
    .boxed()
}

/// The routes that can be reads for a POST, by the read action they name.
fn read_route() -> impl Strategy<Value = (String, Option<&'static str>)> {
    let id = prop::sample::select(&[KEY, "payroll-root_key"][..]);
    let action = prop::sample::select(READ_ACTIONS);
    let slash = prop::sample::select(&["", "/"][..]);
    (id, prop::option::of(action), slash).prop_map(|(id, action, slash)| match action {
        Some(a) => (format!("/api/v2/keys/{id}/actions/{a}{slash}"), Some(a)),
        None => (format!("/api/v2/keys/{id}{slash}"), None),
    })
}

/// The key-protect profile alone, and behind a read rule for wrap on every
/// key route (which must be no way around the profile's fail-closed checks).
fn classifiers() -> [Classifier; 2] {
    let read_wrap = rule(&["POST"], "/api/v2/keys/**", Some("wrap"), Class::Read);
    [kp(), Classifier::new(Profile::KeyProtect, &[read_wrap])]
}

proptest! {
    #![proptest_config(crate::test_support::proptest_config())]

    #[test]
    fn a_write_action_anywhere_in_the_query_makes_a_write(
        (path, _) in read_route(),
        q in query((
            prop::collection::vec(noise(), 0..4),
            prop::collection::vec(param(&ACTION_NAMES[..1], READ_ACTIONS), 0..3),
            write_action(),
        ).prop_map(|(mut all, reads, write)| {
            all.extend(reads);
            all.push(write);
            all
        })),
    ) {
        for c in &classifiers() {
            let target = format!("{path}?{q}");
            let d = classify(c, "POST", &target);
            prop_assert_eq!(d.class, Class::Write, "{} -> {}", target, d);
        }
    }

    #[test]
    fn a_method_override_anywhere_in_the_query_makes_a_write(
        m in prop::sample::select(&["GET", "HEAD", "OPTIONS", "POST", "PUT"][..]),
        (path, _) in read_route(),
        profile in prop::sample::select(&[Profile::KeyProtect, Profile::HttpMethods][..]),
        q in query((
            prop::collection::vec(noise(), 0..4),
            prop::option::of(param(&ACTION_NAMES[..1], READ_ACTIONS)),
            param(OVERRIDE_NAMES, &["DELETE", "PUT", "GET", ""]),
        ).prop_map(|(mut all, read, over)| {
            all.extend(read);
            all.push(over);
            all
        })),
    ) {
        let catch_all = rule(&[], "/**", None, Class::Read);
        for c in [Classifier::new(profile, &[]), Classifier::new(profile, &[catch_all])] {
            let target = format!("{path}?{q}");
            let d = classify(&c, m, &target);
            prop_assert_eq!(d.class, Class::Write, "{} {} -> {}", m, target, d);
        }
    }

    #[test]
    fn one_literal_read_action_among_other_parameters_stays_a_read(
        (path, in_path) in read_route(),
        name in prop::sample::select(READ_ACTIONS),
        with_action in any::<bool>(),
        noise in prop::collection::vec(noise(), 0..5),
    ) {
        let mut params = noise;
        // The path form may carry its own name again; the legacy form needs it.
        let action = in_path.map_or(Some(name), |a| with_action.then_some(a));
        params.extend(action.map(|a| format!("action={a}")));
        let q = params.join("&");
        for c in &classifiers() {
            let target = format!("{path}?{q}");
            let d = classify(c, "POST", &target);
            prop_assert_eq!(d.class, Class::Read, "{} -> {}", target, d);
        }
    }

    #[test]
    fn an_encoded_separator_or_control_character_in_the_path_makes_a_write(
        (path, _) in read_route(),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![0u8..0x20, Just(0x7f), Just(b'?'), Just(b'#'), Just(b'\\')],
        lower in any::<bool>(),
    ) {
        let encoded = if lower { format!("%{byte:02x}") } else { format!("%{byte:02X}") };
        // Anywhere after the leading `/`, in a POST read route or after
        // import_token in a GET.
        let mut post = path.clone();
        post.insert_str(1 + at.index(path.len()), &encoded);
        for c in &classifiers() {
            let d = classify(c, "POST", &post);
            prop_assert_eq!(d.class, Class::Write, "POST {} -> {}", post, d);
            let get = format!("/api/v2/import_token{encoded}x");
            let d = classify(c, "GET", &get);
            prop_assert_eq!(d.class, Class::Write, "GET {} -> {}", get, d);
        }
    }
}
