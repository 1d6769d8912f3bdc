//! `failway ctl` as a script sees it: an exit code for each kind of
//! failure (66 token file, 69 unreachable with its cause, 77 token refused,
//! 1 refused as impossible, naming ctl's own `--force`), and the shell
//! completions and man page generated from the same definitions.

use std::process::{Command, Output};
use std::time::Duration;

use failway::region::Region;

use crate::common;
use crate::common::failway as fw;
use crate::common::upstream::FakeUpstream;

fn failway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_failway"))
        .args(args)
        .output()
        .unwrap()
}

async fn ctl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        failway(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_exit_codes_tell_a_script_what_went_wrong() {
    let primary = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "right-token\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "wrong-token\n").unwrap();
    // The replica's port refuses connections: probes judge it down.
    let replica = format!("http://127.0.0.1:{}", common::free_port());
    let mut cfg = fw::config(&primary.url(), &replica, &fw::fast_health(""));
    cfg.admin.token_file = Some(token.clone());
    let app = fw::start_probing(cfg).await;
    common::eventually(Duration::from_secs(10), "replica judged down", || {
        app.failover.snapshot().region(Region::Replica).is_down()
    })
    .await;
    let admin = format!("http://{}", app.admin_addr);
    let with = |file: &std::path::Path, rest: &[&str]| {
        let mut v = vec!["ctl".to_owned(), "--admin".into(), admin.clone()];
        v.extend(["--token-file".to_owned(), file.display().to_string()]);
        v.extend(rest.iter().map(|s| (*s).to_owned()));
        v
    };

    let out = ctl(with(&dir.path().join("absent"), &["status"])).await;
    assert_eq!(out.status.code(), Some(66), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file or directory"));

    let out = ctl(with(&wrong, &["failover", "--reason", "x"])).await;
    assert_eq!(out.status.code(), Some(77), "{out:?}");

    let out = ctl(with(&token, &["failover", "--reason", "x"])).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("add --force"), "names ctl's flag: {said}");
    assert!(!said.contains("force=true"), "{said}");

    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let out = ctl(vec![
        "ctl".into(),
        "--admin".into(),
        closed,
        "status".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(69));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Connection refused"), "the cause: {said}");
    app.shutdown().await;
}

#[test]
fn ctl_help_documents_exit_codes_and_every_flag() {
    let out = failway(&["ctl", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for code in [
        "64 usage",
        "66 --token-file",
        "69 admin API",
        "77 the token",
        "1 refused",
    ] {
        assert!(help.contains(code), "{code:?} in:\n{help}");
    }
    for sub in ["failover", "failback"] {
        let out = failway(&["ctl", sub, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        let option = |flag: &str| {
            help.lines()
                .find(|l| l.trim_start().starts_with(flag))
                .unwrap_or("")
                .to_owned()
        };
        let (reason, force) = (option("--reason"), option("--force"));
        assert!(reason.contains("Why"), "{sub} --reason: {help}");
        assert!(force.contains("even"), "{sub} --force: {help}");
    }
    let out = failway(&["run", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.lines()
            .any(|l| l.contains("--config") && l.contains("config file")),
        "{help}"
    );
}

#[test]
fn completions_and_man_page_are_generated_for_every_subcommand() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef failway"),
        ("fish", "complete -c failway"),
    ] {
        let out = failway(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {marker:?} missing");
        assert!(
            text.contains("enable-writes"),
            "{shell} completes ctl's actions"
        );
    }
    let out = failway(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    let out = failway(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH failway 1"), "{page}");
    assert!(page.contains("ctl"), "{page}");
}
