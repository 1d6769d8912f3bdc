//! `[[key_pairs]]`, `key_pairs = "from-rewrite"` and `[key_check]`: the
//! defaults, each bad entry named by its key path, and the per-service form.

use std::path::Path;
use std::time::Duration;

use super::{assert_err, ok};
use crate::config::{Config, KeyPairConfig, KeyPairs};

const PAIR: &str = r#"
[[key_pairs]]
name = "payments-root"
primary = "2e7b0000-aaaa-4bbb-8ccc-000000000001"
replica = "9c010000-aaaa-4bbb-8ccc-000000000002"
"#;

#[test]
fn pairs_and_the_check_interval_are_read_with_their_defaults() {
    let c = ok(PAIR);
    assert_eq!(
        c.key_pairs,
        KeyPairs::Listed(vec![KeyPairConfig {
            name: "payments-root".into(),
            primary: "2e7b0000-aaaa-4bbb-8ccc-000000000001".into(),
            replica: "9c010000-aaaa-4bbb-8ccc-000000000002".into(),
        }])
    );
    assert_eq!(c.key_check.interval, Duration::from_secs(600));
    assert_eq!(c.key_check.authorization_file, None);
    let top = format!(
        "key_pairs = \"from-rewrite\"\n{}\n[key_check]\ninterval = \"1s\"\nauthorization_file = \"kp-token\"\n",
        super::minimal()
    );
    let c = Config::from_toml_str(&top, Path::new("/etc/failway")).unwrap();
    assert_eq!(c.key_pairs, KeyPairs::FromRewrite);
    assert_eq!(c.key_check.interval, Duration::from_secs(1));
    assert_eq!(
        c.key_check.authorization_file.as_deref(),
        Some(Path::new("/etc/failway/kp-token"))
    );
    assert_eq!(ok("").key_pairs, KeyPairs::Listed(Vec::new()));
}

#[test]
fn bad_pairs_are_named_by_their_key_path() {
    assert_err(
        "[[key_pairs]]\nname = \"a\"\nprimary = \"x\"\n",
        "key_pairs[0].replica: required",
    );
    assert_err(
        "[[key_pairs]]\nname = \"Pay Root\"\nprimary = \"x\"\nreplica = \"y\"\n",
        "key_pairs[0].name: \"Pay Root\" is not a pair name",
    );
    assert_err(
        "[[key_pairs]]\nname = \"a\"\nprimary = \"x/y\"\nreplica = \"y\"\n",
        "key_pairs[0].primary: is not a key ID",
    );
    assert_err(
        "[[key_pairs]]\nname = \"a\"\nprimary = \"x\"\nreplica = \"y\"\nrotate = true\n",
        "key_pairs[0].rotate: unknown key",
    );
    assert_err(
        &format!("{PAIR}{PAIR}"),
        "key_pairs[1].name: \"payments-root\" is also key_pairs[0].name",
    );
    super::assert_err_in(
        &format!("key_pairs = \"all\"\n{}", super::minimal()),
        "key_pairs: \"all\" is not a form",
    );
    assert_err(
        "[key_check]\ninterval = \"0s\"\n",
        "key_check.interval: must be greater than 0",
    );
    assert_err(
        "[key_check]\nevery = \"1m\"\n",
        "key_check.every: unknown key",
    );
}

const SERVICE: &str = r#"
[[service]]
name = "kp-us"
[service.upstreams.primary]
url = "https://us-south.kms.example"
[service.upstreams.replica]
url = "https://us-east.kms.example"
"#;

#[test]
fn services_hold_their_own_pairs_and_never_inherit_the_top_level_ones() {
    let text = format!(
        "[key_check]\ninterval = \"2m\"\n{SERVICE}[[service.key_pairs]]\nname = \"root\"\nprimary = \"a\"\nreplica = \"b\"\n"
    );
    let c = Config::from_toml_str(&text, Path::new("/etc/failway")).unwrap();
    let s = &c.services()[0];
    assert!(matches!(&s.key_pairs, KeyPairs::Listed(p) if p.len() == 1 && p[0].name == "root"));
    assert_eq!(
        c.for_service(s).key_check.interval,
        Duration::from_secs(120)
    );

    let bad = format!("{SERVICE}[[service.key_pairs]]\nname = \"root\"\nprimary = \"a\"\n");
    let errs = Config::from_toml_str(&bad, Path::new("/etc/failway")).unwrap_err();
    assert!(
        errs.to_string()
            .contains("service[0].key_pairs[0].replica: required"),
        "{errs}"
    );
    let top = format!("{PAIR}{SERVICE}");
    let errs = Config::from_toml_str(&top, Path::new("/etc/failway")).unwrap_err();
    assert!(
        errs.to_string()
            .contains("key_pairs: key_pairs are not inherited"),
        "{errs}"
    );
}
