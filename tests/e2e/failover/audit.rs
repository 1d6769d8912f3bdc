//! The audit file and the hooks end to end: every transition, operator
//! action (accepted or refused), latch change and drill event is one line,
//! in order, with its fields, and the same record is POSTed to a hook; an
//! audit file that cannot be written refuses operator actions while
//! automatic failover goes on; rotation; a hook that hangs delays nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use super::outage::{admin, start, status, wait_healthy, wait_mode, T};
use crate::common::failway::{self as fw, send};
use crate::common::upstream::{Behavior, FakeUpstream};
use crate::common::{eventually, eventually_async};
use failway::failover::machine::Mode;
use serde_json::Value;

fn sections(audit: &Path, extra_audit: &str, hook: Option<&str>) -> String {
    let mut text = format!(
        "read_only_window = \"1h\"\n\n[audit]\npath = \"{}\"\n{extra_audit}\n",
        audit.display()
    );
    if let Some(url) = hook {
        text.push_str(&format!(
            "\n[[hooks]]\nurl = \"{url}\"\ntimeout = \"30s\"\n"
        ));
    }
    text
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// kind, then the action or the transition, then the outcome.
fn summary(r: &Value) -> String {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
    match s("kind").as_str() {
        "transition" => format!("transition {} -> {} [{}]", s("from"), s("to"), s("trigger")),
        "operator" => format!("operator {} {}", s("action"), s("outcome")),
        kind => format!("{kind} {}", s("action")),
    }
}

async fn act(app: &failway::app::Running, action: &str, body: &str, status: u16) {
    let ans = admin(app, action, body, None).await;
    assert_eq!(ans.status, status, "{action}: {:?}", ans.json());
}

#[tokio::test]
async fn every_event_is_one_line_in_order_and_the_hook_gets_the_same_records() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let receiver = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let hook = format!("{}/hooks/s3cret-path", receiver.url().trim_end_matches('/'));
    let app = start(&primary, &replica, &sections(&audit, "", Some(&hook)), None).await;
    wait_healthy(&app).await;
    let url = fw::url(&app);

    let ans = send(
        &fw::client(),
        "POST",
        &format!("http://{}/admin/failover", app.admin_addr),
        &[
            ("content-type", "application/json"),
            ("correlation-id", "incident-42"),
        ],
        r#"{"reason": "region outage reported"}"#,
    )
    .await;
    assert_eq!(ans.status, 200, "{:?}", ans.json());
    act(&app, "failover", r#"{"reason": "again"}"#, 200).await;
    act(&app, "enable-writes", r#"{"reason": "confirmed"}"#, 200).await;
    let w = send(
        &fw::client(),
        "POST",
        &format!("{url}/api/v2/keys"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(w.header("failway-region"), Some("replica"));
    act(&app, "failback", r#"{"reason": "back"}"#, 409).await;
    act(
        &app,
        "failback",
        r#"{"reason": "reconciled", "force": true}"#,
        200,
    )
    .await;
    wait_healthy(&app).await;
    act(
        &app,
        "drill",
        r#"{"reason": "rehearsal", "duration": "1s"}"#,
        200,
    )
    .await;
    wait_mode(&app, Mode::FailoverReadOnly).await;
    wait_mode(&app, Mode::Primary).await;

    let want = [
        "operator failover accepted",
        "transition primary -> failover_read_only [operator]",
        "operator failover no_op",
        "operator enable-writes accepted",
        "transition failover_read_only -> failover_read_write [operator]",
        "latch set",
        "operator failback replica_writes",
        "operator failback accepted",
        "transition failover_read_write -> primary [operator]",
        "latch cleared",
        "operator drill accepted",
        "transition primary -> failover_read_only [drill]",
        "drill started",
        "transition failover_read_only -> primary [drill]",
        "drill ended",
    ];
    let mut got = Vec::new();
    eventually(T, "every record in the audit file", || {
        got = lines(&audit);
        got.len() >= want.len()
    })
    .await;
    let summaries: Vec<String> = got.iter().map(summary).collect();
    assert_eq!(summaries, want, "{got:#?}");

    let first = &got[0];
    assert_eq!(first["service"], "default");
    assert_eq!(first["reason"], "region outage reported");
    assert_eq!(first["correlation_id"], "incident-42");
    assert!(first["source"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(got[6]["outcome"], "replica_writes");
    let report = &got[14]["report"];
    assert_eq!(report["result"], "completed", "{report}");

    // The hook received the same records, in the same order.
    eventually(T, "every record at the hook", || {
        receiver.requests().len() >= want.len()
    })
    .await;
    let posted: Vec<Value> = receiver
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(r.uri, "/hooks/s3cret-path");
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/json")
            );
            serde_json::from_slice(&r.body).unwrap()
        })
        .collect();
    assert_eq!(posted, got);
    let delivered = r#"failway_hook_deliveries_total{result="delivered"}"#;
    assert_eq!(fw::metric(&app, delivered).await, want.len() as f64);

    // GET /history (what `failway ctl history` prints) reads the file.
    let h = send(
        &fw::client(),
        "GET",
        &format!("http://{}/history?service=default&since=1h", app.admin_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["source"], "audit_file");
    assert_eq!(h.json()["records"].as_array().unwrap().len(), want.len());
    let code = failway::tools::ctl::run(failway::tools::ctl::CtlArgs {
        admin: format!("http://{}", app.admin_addr),
        token_file: None,
        json: false,
        timeout: Duration::from_secs(10),
        service: None,
        command: failway::tools::ctl::CtlCommand::History { since: None },
    })
    .await
    .expect("ctl reaches the admin API");
    assert_eq!(code, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn an_audit_file_that_cannot_be_written_refuses_operator_actions_not_failover() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    // A folder where the file should be: not writable as a file, even as root.
    let audit = dir.path().join("audit.jsonl");
    std::fs::create_dir(&audit).unwrap();
    let app = start(&primary, &replica, &sections(&audit, "", None), None).await;
    wait_healthy(&app).await;

    let ans = admin(&app, "failover", r#"{"reason": "try"}"#, None).await;
    assert_eq!(ans.status, 503, "{:?}", ans.json());
    assert_eq!(ans.json()["code"], "FAILWAY_AUDIT_WRITE_ERR");
    let error = ans.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("audit.jsonl"), "{error}");
    assert_eq!(
        status(&app).await["mode"],
        "primary",
        "the action was not applied"
    );

    primary.set_behavior(Behavior::ResetOnAccept);
    wait_mode(&app, Mode::FailoverReadOnly).await;
    let errors = "failway_audit_write_errors_total";
    eventually_async(
        T,
        "the automatic transition's record counted as lost",
        || async { fw::metric(&app, errors).await >= 1.0 },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_file_rotates_at_max_size_keeping_keep_files() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let extra = sections(&audit, "max_size = \"1KiB\"\nkeep = 2", None);
    let app = start(&primary, &replica, &extra, None).await;
    wait_healthy(&app).await;
    let reason = "x".repeat(200);
    for i in 0..6 {
        let action = if i % 2 == 0 { "failover" } else { "failback" };
        let body = format!(r#"{{"reason": "{reason} {i}"}}"#);
        act(&app, action, &body, 200).await;
    }
    let rotated = |n: u32| dir.path().join(format!("audit.jsonl.{n}"));
    eventually(T, "two rotated files", || rotated(2).is_file()).await;
    assert!(!rotated(3).exists(), "only keep = 2 rotated files are kept");
    for path in [audit.clone(), rotated(1), rotated(2)] {
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= 1024, "{} is {len} bytes", path.display());
    }
    let h = send(
        &fw::client(),
        "GET",
        &format!("http://{}/history", app.admin_addr),
        &[],
        "",
    )
    .await;
    let records = h.json()["records"].as_array().unwrap().clone();
    assert!(
        records.len() > lines(&audit).len(),
        "history reads the rotated files too"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_hook_that_hangs_delays_neither_requests_nor_failover() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let receiver = FakeUpstream::start().await;
    receiver.set_behavior(Behavior::Hang);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let app = start(
        &primary,
        &replica,
        &sections(&audit, "", Some(&receiver.url())),
        None,
    )
    .await;
    wait_healthy(&app).await;
    let url = fw::url(&app);
    // The hook now holds a delivery it will wait 30 s for.
    act(&app, "failover", r#"{"reason": "a"}"#, 200).await;
    act(&app, "failback", r#"{"reason": "b"}"#, 200).await;
    eventually(T, "the hook's first POST", || {
        !receiver.requests().is_empty()
    })
    .await;

    let started = Instant::now();
    let read = send(&fw::client(), "GET", &format!("{url}/api/v2/keys"), &[], "").await;
    assert_eq!(read.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    primary.set_behavior(Behavior::ResetOnAccept);
    let killed = Instant::now();
    wait_mode(&app, Mode::FailoverReadOnly).await;
    // As without hooks: unhealthy_threshold * interval + timeout + slack.
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(2 * 110 + 80 + 110 + 300),
        "{took:?}"
    );
    assert_eq!(receiver.requests().len(), 1, "one delivery at a time");
    app.shutdown().await;
}

#[tokio::test]
async fn each_operator_token_names_who_acted_and_never_appears_itself() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# on-call\nalice tok-alice-1234\nci-deploy tok-ci-5678\n",
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let mut cfg = fw::config(
        &primary.url(),
        &replica.url(),
        &fw::fast_health(&sections(&audit, "", None)),
    );
    cfg.admin.tokens_file = Some(tokens.clone());
    let app = fw::start_probing(cfg).await;
    wait_healthy(&app).await;

    let body = r#"{"reason": "outage drill by hand"}"#;
    assert_eq!(admin(&app, "failover", body, None).await.status, 401);
    assert_eq!(
        admin(&app, "failover", body, Some("tok-guess"))
            .await
            .status,
        401
    );
    assert_eq!(status(&app).await["mode"], "primary");
    let ans = admin(&app, "failover", body, Some("tok-alice-1234")).await;
    assert_eq!(ans.status, 200, "{:?}", ans.json());
    let ans = admin(
        &app,
        "failback",
        r#"{"reason": "done"}"#,
        Some("tok-ci-5678"),
    )
    .await;
    assert_eq!(ans.status, 200, "{:?}", ans.json());

    let st = status(&app).await;
    let by: Vec<&str> = st["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["by"].as_str())
        .collect();
    assert_eq!(by, ["alice", "ci-deploy"], "{st}");
    let mut records = Vec::new();
    eventually(T, "four records", || {
        records = lines(&audit);
        records.len() >= 4
    })
    .await;
    let named: Vec<(String, String)> = records
        .iter()
        .map(|r| (summary(r), r["by"].as_str().unwrap_or("-").to_owned()))
        .collect();
    assert_eq!(
        named,
        [
            ("operator failover accepted".to_owned(), "alice".to_owned()),
            (
                "transition primary -> failover_read_only [operator]".to_owned(),
                "alice".to_owned()
            ),
            (
                "operator failback accepted".to_owned(),
                "ci-deploy".to_owned()
            ),
            (
                "transition failover_read_only -> primary [operator]".to_owned(),
                "ci-deploy".to_owned()
            ),
        ]
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("tok-"), "no token in the audit file");

    // The file is read again when it changes: alice's token is revoked.
    std::fs::write(&tokens, "ci-deploy tok-ci-5678\n").unwrap();
    eventually_async(T, "alice's token refused", || async {
        admin(&app, "failover", body, Some("tok-alice-1234"))
            .await
            .status
            == 401
    })
    .await;
    app.shutdown().await;
}
