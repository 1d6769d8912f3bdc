//! Properties over mutated config files: the shipped examples with values
//! replaced by random strings, numbers and other TOML types, lines deleted,
//! duplicated, uncommented or cut short, and keys added. Parsing never
//! panics, every error names a key path or the line it is about, and a file
//! that is accepted survives `failway check`'s effective TOML unchanged
//! (probe header values aside: it redacts them).

use std::path::Path;

use proptest::prelude::*;

use super::Config;

const FILES: &[&str] = &[
    include_str!("../../../config/example.toml"),
    include_str!("../../../config/sidecar.toml"),
    include_str!("../../../config/gateway.toml"),
];

/// Keys that exist somewhere in the schema, so that an inserted key is often
/// known in one section and unknown or mistyped in another.
const KEYS: &[&str] = &[
    "listen",
    "url",
    "tls",
    "path",
    "method",
    "interval",
    "timeout",
    "mode",
    "profile",
    "rules",
    "class",
    "methods",
    "action",
    "header",
    "primary",
    "replica",
    "path_segment",
    "endpoints",
    "key",
    "lease_ttl",
    "max_attempts",
    "budget_ratio",
    "window",
    "error_ratio",
    "headers",
    "read_only_window",
    "blocked_write_status",
    "trusted_proxies",
    "ca",
    "cert",
    "x",
    "é",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value of the line's `key = value` (uncommenting it).
    Value(prop::sample::Index, String),
    Delete(prop::sample::Index),
    Duplicate(prop::sample::Index),
    /// Insert `key = value` before the line.
    Insert(prop::sample::Index, &'static str, String),
    /// Insert a table header before the line.
    Header(prop::sample::Index, String),
    /// Cut the line short at a byte (on a char boundary).
    Cut(prop::sample::Index, prop::sample::Index),
}

/// A TOML value of any type, often of the wrong one for the key.
fn value() -> impl Strategy<Value = String> {
    let text = "[ -~é]{0,12}";
    prop_oneof![
        text.prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        (
            0u32..100_000,
            prop::sample::select(&["ms", "s", "m", "h", "KiB", "MiB", "B", ""][..])
        )
            .prop_map(|(n, unit)| format!("\"{n}{unit}\"")),
        // `NaN` and `inf` as Rust prints them: TOML wants `nan`, takes `inf`.
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        text.prop_map(|s| format!("[{s:?}, 1]")),
        text.prop_map(|s| format!("{{ a = {s:?} }}")),
        Just("\"never\"".to_owned()),
        Just("\"0.0.0.0:0\"".to_owned()),
        Just("\"http://127.0.0.1:1\"".to_owned()),
        // Not TOML at all.
        text,
    ]
}

fn header() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "[proxy]",
            "[fleet]",
            "[[rewrite]]",
            "[[classify.rules]]",
            "[upstreams.primary.tls]",
            "[health.passive]",
            "[nope]",
            "[proxy.tls]",
            "[[proxy]]",
        ][..],
    )
    .prop_map(str::to_owned)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>;
    prop_oneof![
        4 => (at(), value()).prop_map(|(i, v)| Mutation::Value(i, v)),
        2 => at().prop_map(Mutation::Delete),
        1 => at().prop_map(Mutation::Duplicate),
        2 => (at(), prop::sample::select(KEYS), value()).prop_map(|(i, k, v)| Mutation::Insert(i, k, v)),
        1 => (at(), header()).prop_map(|(i, h)| Mutation::Header(i, h)),
        1 => (at(), at()).prop_map(|(i, j)| Mutation::Cut(i, j)),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in mutations {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match m {
            Mutation::Value(i, v) => {
                let line = &mut lines[i.index(n)];
                let bare = line.trim_start_matches(['#', ' ']);
                if let Some((key, _)) = bare.split_once('=') {
                    *line = format!("{} = {v}", key.trim());
                }
            }
            Mutation::Delete(i) => {
                lines.remove(i.index(n));
            }
            Mutation::Duplicate(i) => {
                let line = lines[i.index(n)].clone();
                lines.insert(i.index(n), line);
            }
            Mutation::Insert(i, key, v) => lines.insert(i.index(n), format!("{key} = {v}")),
            Mutation::Header(i, h) => lines.insert(i.index(n), h.clone()),
            Mutation::Cut(i, j) => {
                let line = &mut lines[i.index(n)];
                let mut cut = j.index(line.len() + 1);
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.truncate(cut);
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(crate::test_support::proptest_config())]

    #[test]
    fn mutated_configs_never_panic_and_every_error_names_its_key_or_line(
        file in prop::sample::select(FILES),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let text = apply(file, &mutations);
        let base = Path::new("/etc/failway");
        match Config::from_toml_str(&text, base) {
            Ok(config) => {
                let effective = config.to_effective_toml();
                let again = Config::from_toml_str(&effective, base);
                let mut again = again.map_err(|e| e.to_string());
                // Probe header values are printed redacted, by design.
                if let Ok(again) = &mut again {
                    let names = |c: &Config| -> Vec<_> {
                        c.health.headers.iter().map(|(n, _)| n.clone()).collect()
                    };
                    prop_assert_eq!(names(again), names(&config));
                    again.health.headers = config.health.headers.clone();
                }
                prop_assert_eq!(again.as_ref(), Ok(&config), "effective TOML:\n{}", effective);
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for e in &errors {
                    let line = e.to_string();
                    let names_line = e.message.contains("line ");
                    prop_assert!(
                        !e.path.is_empty() || names_line,
                        "error names no key and no line: {:?}\n--- config:\n{}",
                        line,
                        text
                    );
                    prop_assert!(!e.message.trim().is_empty(), "empty message for {}", e.path);
                }
            }
        }
    }
}
