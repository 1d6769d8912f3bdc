//! The official Key Protect Python client (`keyprotect` 3.x from PyPI)
//! through failway: `tests/python/kp_client_e2e.py` drives two simulated
//! regions and failway started here on loopback, through normal traffic, a
//! primary outage and a refused write (see the script's docstring).
//!
//! The interpreter is `$FAILWAY_PY`, else `.venv/bin/python` in the
//! repository (`bash .ci/run` makes it). Without either the test is skipped
//! with a message saying how to make the venv, except in CI (`CI=true`),
//! where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script polls for at most 15 s twice; anything longer is a hang.
const DEADLINE: Duration = Duration::from_secs(60);

fn python() -> Option<PathBuf> {
    if let Some(py) = std::env::var_os("FAILWAY_PY").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(py));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    let how = "no Python with the keyprotect client: set FAILWAY_PY to one, or create the venv from the \
         repository root:\n  python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt";
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{how}");
    }
    crate::common::skipped(how);
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_reads_through_a_failover_and_sees_writes_refused() {
    let Some(py) = python() else {
        return;
    };
    let stack = failway::tools::demo::start_stack()
        .await
        .expect("the stack starts");
    let out = tempfile::tempdir().expect("temp dir");
    let (stdout_path, stderr_path) = (out.path().join("stdout"), out.path().join("stderr"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kp_client_e2e.py");
    let mut child = Command::new(&py)
        .arg(&script)
        .args(["--url", &stack.proxy_url()])
        .args(["--instance", &stack.instance])
        .args(["--control", &stack.primary_control_url()])
        .args(["--replica-control", &stack.replica_control_url()])
        .args(["--admin", &stack.admin_url()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));

    let started = Instant::now();
    let status = loop {
        match child.try_wait().expect("child status") {
            Some(status) => break Some(status),
            None if started.elapsed() > DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mode = stack.failway.failover.snapshot().mode;
    stack.stop().await;
    let output = format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    println!("{output}");
    let status = status.unwrap_or_else(|| panic!("the script ran past {DEADLINE:?}\n{output}"));
    assert!(status.success(), "the script failed ({status})\n{output}");
    assert!(output.contains("all checks passed"), "{output}");
    assert_eq!(mode.as_str(), "failover_read_only", "{output}");
}
