//! The state file (`state.path`) end to end: a folder that cannot be
//! written stops the start even when a state file exists, a file deleted
//! while failway runs is written again, and a failed save is counted.
//!
//! Tests run as root, for whom file modes do not stop a write: an
//! unwritable folder is made immutable (`chattr +i`), and a failing save
//! comes from the folder being replaced by a plain file.

use crate::common;

use std::path::{Path, PathBuf};

use common::eventually;
use common::failway::{self as fw, send};
use common::upstream::FakeUpstream;

use super::outage::{admin, start, status, wait_healthy, writes, T};

/// `chattr +i` on a folder for as long as it lives: nobody, root included,
/// can create, rename or remove a file in it.
struct Immutable(PathBuf);

impl Immutable {
    /// `None` (the test skips, saying why) where `chattr` is missing or the
    /// file system has no immutable flag.
    fn set(dir: &Path) -> Option<Immutable> {
        if !common::tool_available("chattr", "apt-get install e2fsprogs") {
            return None;
        }
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: chattr +i is not supported on {}", dir.display());
            return None;
        }
        let guard = Immutable(dir.to_path_buf());
        if std::fs::write(dir.join("probe"), "x").is_ok() {
            eprintln!(
                "skipped: {} is still writable after chattr +i",
                dir.display()
            );
            return None;
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// A temporary folder with a `state/` folder in it, and the state file's
/// path there (not yet written).
fn state_folder() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("state");
    std::fs::create_dir(&folder).unwrap();
    let state = folder.join("state.json");
    (dir, folder, state)
}

#[tokio::test]
async fn an_unwritable_state_folder_stops_the_start_even_with_a_state_file() {
    let (_dir, folder, state) = state_folder();
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    // A first run leaves a state file behind.
    let app = start(&primary, &replica, "", Some(&state)).await;
    app.shutdown().await;
    assert!(state.is_file());

    let Some(_immutable) = Immutable::set(&folder) else {
        return;
    };
    let mut text = fw::fast_health("");
    text.push_str(&format!("\n[state]\npath = \"{}\"\n", state.display()));
    let cfg = fw::config(&primary.url(), &replica.url(), &text);
    match failway::app::start(cfg).await {
        Ok(app) => {
            app.shutdown().await;
            panic!("started with a state folder nothing can be written to");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("state.path"), "{msg}");
            assert!(msg.contains(&state.display().to_string()), "{msg}");
        }
    }
}

#[tokio::test]
async fn a_state_file_deleted_while_running_is_written_again_and_keeps_the_latch() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let extra = "read_only_window = \"1h\"";
    let app = start(&primary, &replica, extra, Some(&state)).await;
    wait_healthy(&app).await;
    assert_eq!(
        admin(&app, "failover", r#"{"reason":"drill"}"#, None)
            .await
            .status,
        200
    );
    assert_eq!(
        admin(&app, "enable-writes", r#"{"reason":"go"}"#, None)
            .await
            .status,
        200
    );
    let w = send(
        &fw::client(),
        "POST",
        &format!("{}/api/v2/keys", fw::url(&app)),
        &[],
        "{}",
    )
    .await;
    assert_eq!(w.header("failway-region"), Some("replica"));
    assert_eq!(writes(&replica), 1);

    std::fs::remove_file(&state).unwrap();
    eventually(T, "the deleted state file is written again", || {
        state.is_file()
    })
    .await;
    app.shutdown().await;

    let app = start(&primary, &replica, extra, Some(&state)).await;
    let st = status(&app).await;
    assert_eq!(st["mode"], "failover_read_write");
    assert_eq!(st["replica_writes_latch"], true, "the latch survived");
    app.shutdown().await;
}

/// An operator action whose state cannot be written is refused and taken
/// back: nothing is in effect that a restart would forget. The failed save
/// is counted.
#[tokio::test]
async fn an_operator_action_that_cannot_be_saved_is_refused_and_taken_back() {
    let (dir, folder, state) = state_folder();
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = start(&primary, &replica, "", Some(&state)).await;
    wait_healthy(&app).await;
    let errors = "failway_state_persist_errors_total";
    assert_eq!(fw::metric(&app, errors).await, 0.0);
    // The folder becomes a plain file: every save fails from now on.
    std::fs::rename(&folder, dir.path().join("moved")).unwrap();
    std::fs::write(&folder, "not a folder").unwrap();
    let ans = admin(&app, "failover", r#"{"reason":"drill"}"#, None).await;
    assert!(
        fw::metric(&app, errors).await >= 1.0,
        "the failed save is counted"
    );
    assert_eq!(ans.status, 503, "{:?}", String::from_utf8_lossy(&ans.body));
    assert!(String::from_utf8_lossy(&ans.body).contains("could not be written to state.path"));
    assert_eq!(
        app.failover.snapshot().mode,
        failway::failover::machine::Mode::Primary
    );
    let write = fw::req("POST", &format!("{}/api/v2/keys", fw::url(&app)))
        .body("{}")
        .send()
        .await;
    assert_eq!(write.header("failway-region"), Some("primary"));
    app.shutdown().await;
}
