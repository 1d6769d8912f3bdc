//! `failway check` loads the files a start needs and reports every problem
//! in one run, naming the key and quoting the operating system;
//! `--offline` checks the values only.

use std::process::Command;

use crate::common::tls_upstream::{write_pem, TestCa};

fn check(config: &std::path::Path, offline: bool) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_failway"));
    cmd.arg("check");
    if offline {
        cmd.arg("--offline");
    }
    let out = cmd.arg("--config").arg(config).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config with `primary` as the primary's URL and `extra` appended.
fn config(dir: &std::path::Path, primary: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("failway.toml");
    let text = format!(
        r#"
[upstreams.primary]
url = "{primary}"
[upstreams.replica]
url = "http://127.0.0.1:2"
{extra}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_reports_every_missing_empty_or_unparsable_file_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = TestCa::new("check-ca").server("localhost", &["localhost"]);
    write_pem(dir.path(), "tls.crt", &leaf.cert_pem);
    write_pem(
        dir.path(),
        "tls.key",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );
    std::fs::write(dir.path().join("probe-token"), "\n").unwrap();
    std::fs::create_dir(dir.path().join("ca-folder")).unwrap();
    let path = config(
        dir.path(),
        "https://127.0.0.1:1",
        r#"
[proxy]
listen = "127.0.0.1:8443"
tls = { cert = "tls.crt", key = "tls.key" }
[admin]
token_file = "missing-token"
[health]
authorization_file = "probe-token"
[state]
path = "no-such-folder/state.json"
[upstreams.primary.tls]
ca = "ca-folder"
[key_check]
authorization_file = "missing-kp-token"
"#,
    );
    let (code, stdout, stderr) = check(&path, false);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stdout.is_empty(), "no effective config on errors: {stdout}");
    assert!(stderr.contains("6 error(s)"), "{stderr}");
    for expected in [
        "key_check.authorization_file: cannot read",
        "admin.token_file: cannot read",
        "missing-token: No such file or directory (os error 2)",
        "health.authorization_file:",
        "probe-token is empty",
        "proxy.tls.key:",
        "state.path: folder",
        "no-such-folder: No such file or directory (os error 2)",
        "upstreams.primary.tls.ca:",
        "ca-folder is a folder",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing in:\n{stderr}"
        );
    }

    let (code, stdout, stderr) = check(&path, true);
    assert_eq!(code, Some(0), "--offline checks values only: {stderr}");
    assert!(stdout.contains("[proxy]"));
}

#[test]
fn check_passes_loadable_files_and_prints_the_certificate_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = TestCa::new("check-ca").server("localhost", &["localhost"]);
    write_pem(dir.path(), "tls.crt", &leaf.cert_pem);
    write_pem(dir.path(), "tls.key", &leaf.key_pem);
    std::fs::write(dir.path().join("admin-token"), "s3cr3t-admin-token\n").unwrap();
    std::fs::write(dir.path().join("kp-token"), "s3cr3t-kp-token\n").unwrap();
    let path = config(
        dir.path(),
        "http://127.0.0.1:1",
        r#"
[proxy]
listen = "127.0.0.1:8443"
tls = { cert = "tls.crt", key = "tls.key" }
[admin]
token_file = "admin-token"
[state]
path = "state.json"
[key_check]
authorization_file = "kp-token"
"#,
    );
    let (code, stdout, stderr) = check(&path, false);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("ok: key_check.authorization_file:"),
        "{stderr}"
    );
    assert!(stdout.contains("[proxy]"));
    assert!(
        stderr.contains("ok: proxy.tls.cert:") && stderr.contains("certificate expires"),
        "{stderr}"
    );
    assert!(stderr.contains("ok: admin.token_file:"), "{stderr}");
    assert!(!stderr.contains("s3cr3t") && !stdout.contains("s3cr3t"));
    assert!(
        !dir.path().join("state.json").exists(),
        "check creates nothing"
    );
}

#[test]
fn check_names_every_unknown_key_not_just_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "http://127.0.0.1:1",
        r#"
[proxy]
lisen = "127.0.0.1:8080"
[retry]
max_attempt = 3
"#,
    );
    let (code, _, stderr) = check(&path, true);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("proxy.lisen: unknown key"), "{stderr}");
    assert!(
        stderr.contains("retry.max_attempt: unknown key"),
        "{stderr}"
    );
}
