//! The `[[service]]` form: inheritance, what is never inherited, the rules
//! between blocks, and the effective config printed per service.

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, HostPattern};

const TWO: &str = r#"
[health]
interval = "2s"
timeout = "1s"

[[service]]
name = "kp-us"
hosts = ["kp-us.internal", "*.kms.us.example"]
[service.upstreams.primary]
url = "https://us-south.kms.example"
[service.upstreams.replica]
url = "https://us-east.kms.example"
[service.health]
interval = "5s"

[[service]]
name = "kp-eu"
hosts = ["KP-EU.internal"]
path_prefix = "/api/"
[service.upstreams.primary]
url = "https://eu-de.kms.example"
[service.upstreams.replica]
url = "https://eu-gb.kms.example"
[[service.rewrite]]
header = "bluemix-instance"
primary = "a"
replica = "b"
"#;

fn parse(text: &str) -> Result<Config, Vec<String>> {
    Config::from_toml_str(text, Path::new("/etc/failway"))
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

#[track_caller]
fn assert_err(text: &str, expected: &str) {
    let lines = parse(text).expect_err("expected errors");
    assert!(
        lines.iter().any(|l| l.starts_with(expected)),
        "no error starting with {expected:?} in {lines:#?}"
    );
}

#[test]
fn blocks_inherit_the_top_level_then_the_defaults() {
    let c = parse(TWO).unwrap();
    let s = c.services();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].name, "kp-us");
    assert_eq!(s[0].health.interval, Duration::from_secs(5), "its own");
    assert_eq!(s[1].health.interval, Duration::from_secs(2), "from the top");
    assert_eq!(s[1].health.timeout, Duration::from_secs(1));
    assert_eq!(s[0].health.unhealthy_threshold, 3, "the default");
    assert_eq!(
        s[0].hosts,
        [
            HostPattern::Exact("kp-us.internal".into()),
            HostPattern::Subdomains(".kms.us.example".into())
        ]
    );
    assert_eq!(s[1].hosts, [HostPattern::Exact("kp-eu.internal".into())]);
    assert_eq!(s[1].path_prefix, "/api");
    assert!(s[0].rewrite.is_empty());
    assert_eq!(s[1].rewrite.len(), 1);
    assert_eq!(s[1].upstreams.replica.url.host(), Some("eu-gb.kms.example"));
}

#[test]
fn the_single_pair_form_is_one_catch_all_service_named_default() {
    let c = parse(
        "[upstreams.primary]\nurl = \"http://127.0.0.1:1\"\n[upstreams.replica]\nurl = \"http://127.0.0.1:2\"\n",
    )
    .unwrap();
    let s = c.services();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].name, "default");
    assert!(s[0].hosts.is_empty());
    assert_eq!(s[0].path_prefix, "/");
}

#[test]
fn both_forms_at_once_are_refused_naming_both() {
    let text = format!(
        "[upstreams.primary]\nurl = \"http://a\"\n[upstreams.replica]\nurl = \"http://b\"\n{TWO}"
    );
    assert_err(&text, "upstreams: the single-pair form ([upstreams.primary], [upstreams.replica]) and [[service]] blocks");
}

#[test]
fn tables_of_entries_are_never_inherited() {
    let text = format!("[[rewrite]]\nheader = \"x\"\nprimary = \"a\"\nreplica = \"b\"\n{TWO}");
    assert_err(&text, "rewrite: [[rewrite]] entries are not inherited");
    let text = format!("[[classify.rules]]\npath = \"/x\"\nclass = \"read\"\n{TWO}");
    assert_err(&text, "classify.rules: classify.rules are not inherited");
}

#[test]
fn a_service_without_upstreams_is_named_by_its_index() {
    let text = TWO.replace(
        "[service.upstreams.replica]\nurl = \"https://eu-gb.kms.example\"\n",
        "",
    );
    assert_err(
        &text,
        "service[1].upstreams.replica: missing; add [service.upstreams.replica]",
    );
    let text = TWO.replace("url = \"https://eu-gb.kms.example\"", "url = \"ftp://x\"");
    assert_err(&text, "service[1].upstreams.replica.url:");
}

#[test]
fn names_are_required_well_formed_and_unique() {
    assert_err(
        &TWO.replace("name = \"kp-eu\"", "name = \"kp-us\""),
        "service[1].name: \"kp-us\" is also service[0].name",
    );
    assert_err(
        &TWO.replace("name = \"kp-eu\"", "name = \"KP EU\""),
        "service[1].name: \"KP EU\" is not a service name",
    );
    assert_err(
        &TWO.replace("name = \"kp-eu\"\n", ""),
        "service[1].name: missing",
    );
}

#[test]
fn hosts_are_names_wildcards_or_ipv6_literals_without_ports() {
    assert_err(
        &TWO.replace("\"KP-EU.internal\"", "\"kp-eu.internal:8443\""),
        "service[1].hosts[0]: \"kp-eu.internal:8443\" carries a port",
    );
    assert_err(
        &TWO.replace("\"KP-EU.internal\"", "\"[::1\""),
        "service[1].hosts[0]:",
    );
    let c = parse(&TWO.replace("\"KP-EU.internal\"", "\"[0:0::1]\"")).unwrap();
    assert_eq!(c.services()[1].hosts, [HostPattern::Exact("[::1]".into())]);
}

#[test]
fn a_catch_all_is_allowed_once_and_last() {
    let text = TWO.replace("hosts = [\"kp-us.internal\", \"*.kms.us.example\"]\n", "");
    assert_err(&text, "service[0].hosts: empty: a catch-all service");
    let text = TWO.replace("hosts = [\"KP-EU.internal\"]\n", "");
    assert!(parse(&text).is_ok());
}

#[test]
fn a_service_an_earlier_one_shadows_completely_is_refused_naming_both() {
    let text = TWO.replace(
        "hosts = [\"KP-EU.internal\"]",
        "hosts = [\"a.kms.us.example\"]",
    );
    assert_err(&text, "service[1]: never matches: service[0] (\"kp-us\")");
    // A partial overlap goes by file order.
    let text = TWO.replace(
        "hosts = [\"KP-EU.internal\"]",
        "hosts = [\"a.kms.us.example\", \"kp-eu.internal\"]",
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn inherited_errors_are_reported_once_at_the_top_level() {
    let text = TWO.replace("interval = \"2s\"\ntimeout = \"1s\"", "interval = \"soon\"");
    let lines = parse(&text).unwrap_err();
    let hits: Vec<_> = lines.iter().filter(|l| l.contains("interval")).collect();
    assert_eq!(hits.len(), 1, "{lines:#?}");
    assert!(hits[0].starts_with("health.interval:"), "{hits:?}");
}

#[test]
fn the_effective_config_prints_each_service_and_parses_back() {
    let c = parse(TWO).unwrap();
    let text = c.to_effective_toml();
    assert!(text.contains("[[service]]\nname = \"kp-us\""), "{text}");
    assert!(
        text.contains("[service.upstreams.replica]\nurl = \"https://us-east.kms.example\""),
        "{text}"
    );
    assert!(text.contains("[[service.rewrite]]"), "{text}");
    assert!(!text.contains("[upstreams.primary]"), "{text}");
    let back = parse(&text).unwrap();
    assert_eq!(back.services(), c.services());
}
