//! Configuration reloads while the failover engine is at work: a reload
//! that would send the next write elsewhere is refused while the
//! replica-writes latch is set, and reloads that change the health
//! thresholds do not restart the count of a dead primary's failures.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::failway::{self as fw, send};
use common::upstream::{Behavior, FakeUpstream};
use failway::app::{Running, StartOptions};
use failway::config::Config;
use failway::failover::machine::Mode;

use super::outage::{admin, mode, wait_healthy, writes};

/// A complete config file for `primary` and `replica`; `extra` is appended.
fn write_config(path: &Path, primary: &str, replica: &str, extra: &str) {
    let text = fw::config_text(primary, replica, extra);
    // Written aside and renamed, so the file watcher never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Starts failway from the file at `path`, probes and live reload on.
async fn start_from(path: &Path) -> Running {
    let cfg = Config::load(path).expect("valid config");
    let options = StartOptions {
        config_path: Some(path.to_path_buf()),
        ..Default::default()
    };
    failway::app::start_with(cfg, options)
        .await
        .expect("failway starts")
}

async fn reloads(app: &Running, result: &str) -> f64 {
    fw::metric(
        app,
        &format!("failway_config_reloads_total{{result=\"{result}\"}}"),
    )
    .await
}

async fn write_key(app: &Running) -> Option<String> {
    let ans = send(
        &fw::client(),
        "POST",
        &format!("{}/api/v2/keys", fw::url(app)),
        &[],
        "{}",
    )
    .await;
    assert_eq!(ans.status, 200);
    ans.header("failway-region").map(str::to_owned)
}

#[tokio::test]
async fn with_the_latch_set_a_reload_that_swaps_the_upstreams_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failway.toml");
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let health = fw::fast_health("read_only_window = \"1h\"");
    write_config(&path, &primary.url(), &replica.url(), &health);
    let app = start_from(&path).await;
    wait_healthy(&app).await;
    for action in ["failover", "enable-writes"] {
        let ans = admin(&app, action, r#"{"reason":"maintenance"}"#, None).await;
        assert_eq!(ans.status, 200, "{action}");
    }
    assert_eq!(write_key(&app).await.as_deref(), Some("replica"));
    assert_eq!(writes(&replica), 1);

    // The regions swapped in the file: applied, the next write would land
    // on the old primary while writes accepted on the replica are not there.
    let refused = reloads(&app, "refused").await;
    write_config(&path, &replica.url(), &primary.url(), &health);
    assert!(!app.reload().await, "the reload is refused");
    assert!(reloads(&app, "refused").await > refused);
    assert_eq!(write_key(&app).await.as_deref(), Some("replica"));
    assert_eq!(writes(&replica), 2, "the write went to the replica");
    assert_eq!(writes(&primary), 0, "no write reached the primary");
    assert_eq!(mode(&app), Mode::FailoverReadWrite);
    app.shutdown().await;
}

/// Probes every 200 ms, judged down after `unhealthy` failures.
fn slow_count(unhealthy: u32) -> String {
    format!(
        r#"
[health]
path = "/health"
interval = "200ms"
timeout = "150ms"
unhealthy_threshold = {unhealthy}
healthy_threshold = 2
"#
    )
}

#[tokio::test]
async fn reloads_that_change_thresholds_do_not_hold_off_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failway.toml");
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    write_config(&path, &primary.url(), &replica.url(), &slow_count(6));
    let app = start_from(&path).await;
    wait_healthy(&app).await;

    primary.set_behavior(Behavior::ResetOnAccept);
    let killed = Instant::now();
    // Detection takes 6 or 7 probes (about 1.4 s); a reload every 0.8 s,
    // each changing unhealthy_threshold (7, 6, 7, ...), must not start the
    // count anew: 0.8 s holds at most 5 probes 180-220 ms apart.
    let limit = Duration::from_secs(20);
    let mut reloads_done = 0u32;
    while mode(&app) != Mode::FailoverReadOnly {
        assert!(
            killed.elapsed() < limit,
            "no failover within {limit:?} of the primary dying, over {reloads_done} reloads"
        );
        reloads_done += 1;
        let unhealthy = 6 + reloads_done % 2;
        write_config(
            &path,
            &primary.url(),
            &replica.url(),
            &slow_count(unhealthy),
        );
        assert!(app.reload().await, "the threshold change is applied");
        let next = Instant::now() + Duration::from_millis(800);
        while Instant::now() < next && mode(&app) != Mode::FailoverReadOnly {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!(
        "failed over {:?} after the primary died, over {reloads_done} reloads",
        killed.elapsed()
    );
    assert!(reloads_done >= 1);
    app.shutdown().await;
}
