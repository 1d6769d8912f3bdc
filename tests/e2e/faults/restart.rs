//! failway itself killed: the built binary runs as a child process with a
//! state file; the primary goes down, the read-only window ends, writes
//! land on the replica, and failway is killed (SIGKILL) with traffic
//! flowing, then started again from its state file. The latch must
//! survive, the primary's return must not fail back over it, no write may
//! reach the replica before the window ended, and none may be lost or sent
//! twice.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::traffic::{
    config_text, is_write, received, status_of, target, Arrivals, Kind, Sent, Tally, Target,
    Traffic, Watched, Watcher, PROBES, WAIT,
};
use crate::common::failway as fw;
use crate::common::upstream::{Behavior, FakeUpstream};

/// A failway child process, killed by PID when dropped.
struct Process {
    child: Child,
    proxy: String,
    admin: String,
    /// Its stderr.
    log: PathBuf,
}

impl Process {
    /// Starts failway on free ports and waits until it answers. A port
    /// found free can be taken before failway binds it; then failway
    /// exits, and it is started again on other ports.
    async fn start(dir: &Path, regions: (&str, &str), state: &Path) -> Process {
        for _ in 0..3 {
            let mut p = Process::spawn(dir, regions, state);
            let client = fw::client();
            let deadline = Instant::now() + WAIT;
            loop {
                if status_of(&client, &p.admin).await.is_some() {
                    return p;
                }
                if let Ok(Some(exit)) = p.child.try_wait() {
                    let text = std::fs::read_to_string(&p.log).unwrap_or_default();
                    eprintln!("failway exited ({exit}) before it was ready:\n{text}");
                    break;
                }
                if Instant::now() >= deadline {
                    let text = std::fs::read_to_string(&p.log).unwrap_or_default();
                    panic!("failway not ready within {WAIT:?}:\n{text}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("failway did not start in 3 tries");
    }

    fn spawn(dir: &Path, regions: (&str, &str), state: &Path) -> Process {
        let (proxy, admin) = (free_addr(), free_addr());
        let mut text = config_text(
            &proxy,
            &admin,
            regions,
            [PROBES, "read_only_window = \"1s\"", ""],
        );
        text.push_str(&format!("\n[state]\npath = \"{}\"\n", state.display()));
        let path = dir.join("failway.toml");
        std::fs::write(&path, text).expect("write config");
        let log = dir.join(format!("failway-{}.log", admin.replace(':', "_")));
        let child = Command::new(env!("CARGO_BIN_EXE_failway"))
            .args(["run", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start failway");
        Process {
            child,
            proxy: format!("http://{proxy}"),
            admin: format!("http://{admin}"),
            log,
        }
    }

    async fn status(&self) -> serde_json::Value {
        status_of(&fw::client(), &self.admin)
            .await
            .expect("/status answers")
    }

    /// SIGKILL by PID, then reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").to_string()
}

async fn wait_status(p: &Process, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        if f(&p.status().await) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not seen within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the primary's last check moved on `n` times.
async fn probes_seen(p: &Process, n: usize) {
    let mut last = p.status().await["regions"]["primary"]["last_check"].clone();
    let mut moved = 0;
    let deadline = Instant::now() + WAIT;
    while moved < n {
        assert!(Instant::now() < deadline, "only {moved} of {n} probes seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = p.status().await["regions"]["primary"]["last_check"].clone();
        if now != last {
            (last, moved) = (now, moved + 1);
        }
    }
}

fn retarget(t: &Target, url: &str) {
    *t.lock().expect("target lock") = url.to_owned();
}

/// When the read-only window ended, by failway's own record.
fn writes_enabled_at(status: &serde_json::Value) -> SystemTime {
    let at = status["transitions"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["to"] == "failover_read_write"))
        .and_then(|t| t["at"].as_str())
        .unwrap_or_else(|| panic!("no transition to failover_read_write in {status}"));
    humantime::parse_rfc3339(at).expect("RFC 3339 time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failway_killed_with_writes_on_the_replica_keeps_the_latch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state: PathBuf = dir.path().join("state.json");
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let arrivals = Arrivals::default();
    replica.set_behavior(arrivals.recording());
    let regions = (primary.url(), replica.url());
    let regions = (regions.0.as_str(), regions.1.as_str());

    let mut first = Process::start(dir.path(), regions, &state).await;
    wait_status(&first, "both regions healthy", |s| {
        s["regions"]["primary"]["health"] == "healthy"
            && s["regions"]["replica"]["health"] == "healthy"
    })
    .await;
    let (proxy, admin) = (target(first.proxy.clone()), target(first.admin.clone()));
    let watcher = Watcher::start(admin.clone());
    let started = Instant::now();
    let traffic = Traffic::start(std::slice::from_ref(&proxy));
    traffic
        .wait_for(5, "written to the primary", |s| {
            s.kind == Kind::Write && s.ok() && s.region.as_deref() == Some("primary")
        })
        .await;

    primary.set_behavior(Behavior::ResetOnAccept);
    watcher.wait_mode("failover_read_only", started).await;
    let writable = watcher.wait_mode("failover_read_write", started).await;
    let on_replica = |after: Instant| {
        move |s: &Sent| {
            s.kind == Kind::Write
                && s.ok()
                && s.sent_at >= after
                && s.region.as_deref() == Some("replica")
        }
    };
    traffic
        .wait_for(5, "written to the replica", on_replica(writable))
        .await;

    // Killed with writes in flight; started again on other ports.
    let killed = Instant::now();
    first.kill();
    let second = Process::start(dir.path(), regions, &state).await;
    retarget(&proxy, &second.proxy);
    retarget(&admin, &second.admin);
    let ready = Instant::now();
    let after_restart = second.status().await;
    traffic
        .wait_for(
            5,
            "written to the replica after the restart",
            on_replica(ready),
        )
        .await;

    // The primary returns: probes over more than failback_after.
    primary.set_behavior(Behavior::default());
    wait_status(&second, "primary healthy again", |s| {
        s["regions"]["primary"]["health"] == "healthy"
    })
    .await;
    probes_seen(&second, 9).await;
    let sent = traffic.stop().await;
    let watched = watcher.stop().await;
    let end = second.status().await;
    let down = (killed, ready);
    let tally = judge(
        &sent,
        (&primary, &replica),
        &arrivals,
        &watched,
        down,
        [&after_restart, &end],
    );
    let failbacks = end["transitions"]
        .as_array()
        .map_or(0, |ts| ts.iter().filter(|t| t["to"] == "primary").count());
    eprintln!(
        "fault scenario failway killed: down for {:?}; latch after the restart {}, at the end {}; mode at the end {}, failbacks {failbacks}",
        ready - killed,
        after_restart["replica_writes_latch"],
        end["replica_writes_latch"],
        end["mode"]
    );
    tally.assert_clean("failway killed");
    assert_eq!(after_restart["mode"], "failover_read_write");
    assert_eq!(failbacks, 0, "no failback over the latch");
    assert_eq!(
        end["mode"], "failover_read_write",
        "no failback over the latch"
    );
}

/// The tally: reads that overlapped failway being down (`down`: killed,
/// ready again) are left out, and those the replica was judged down for;
/// a write arriving at the replica before the window ended counts as one
/// while read-only; each status (after the restart, at the end) that
/// forgets the latch while the replica holds writes counts as lost.
fn judge(
    sent: &[Sent],
    (primary, replica): (&FakeUpstream, &FakeUpstream),
    arrivals: &Arrivals,
    watched: &Watched,
    (killed, ready): (Instant, Instant),
    statuses: [&serde_json::Value; 2],
) -> Tally {
    let (ledger_p, ledger_r) = (received(primary), received(replica));
    let skip =
        |s: &Sent| (s.sent_at <= ready && s.done_at >= killed) || watched.replica_down_during(s);
    let mut tally = Tally::count(sent, &ledger_p, &ledger_r, &[watched.switched()], skip);
    let enabled = writes_enabled_at(statuses[1]);
    tally.replica_writes_while_read_only = arrivals
        .all()
        .iter()
        .filter(|(id, at)| is_write(id) && *at < enabled)
        .count();
    let on_replica = ledger_r.keys().filter(|id| is_write(id)).count();
    for st in statuses {
        let forgot = on_replica > 0 && st["replica_writes_latch"] != true;
        tally.lost += usize::from(forgot);
    }
    tally
}
