//! Region faults under steady traffic, failway in process with live
//! probes: the primary killed (listener closed), stopped (accepts and reads,
//! never answers), slowed (answers later than the probe timeout) and
//! flapping (down and up every 300 ms); and the replica flapping while the
//! primary serves.
//!
//! Writes are never enabled (`read_only_window = "never"`, no operator), so
//! a write at the replica is one that reached it in `failover_read_only` or
//! in `primary`, where writes belong to the primary: every one counts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::traffic::{
    config, is_write, received, target, Kind, Sent, Tally, Traffic, Watcher, PROBES, WAIT,
};
use crate::common::eventually;
use crate::common::failway as fw;
use crate::common::upstream::{Behavior, FakeUpstream, Response};
use failway::app::Running;
use failway::failover::machine::Health;

/// Probes for the flapping primary: 300 ms down holds three of them.
const FAST_PROBES: &str = "interval = \"100ms\"\ntimeout = \"90ms\"\nunhealthy_threshold = 2";

struct Scene {
    primary: FakeUpstream,
    replica: FakeUpstream,
    app: Running,
    traffic: Traffic,
    watcher: Watcher,
    started: Instant,
}

impl Scene {
    /// Both regions healthy, traffic flowing, writes landing on the primary.
    async fn start(health: &str) -> Scene {
        let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
        let cfg = config(
            (&primary.url(), &replica.url()),
            [health, "read_only_window = \"never\"", ""],
        );
        let app = fw::start_probing(cfg).await;
        eventually(WAIT, "both regions probed healthy", || {
            let s = app.failover.snapshot();
            s.regions.iter().all(|r| r.health == Health::Healthy)
        })
        .await;
        let watcher = Watcher::start(target(format!("http://{}", app.admin_addr)));
        let started = Instant::now();
        let traffic = Traffic::start(&[target(fw::url(&app))]);
        traffic
            .wait_for(5, "written to the primary", |s| {
                s.kind == Kind::Write && s.ok() && s.region.as_deref() == Some("primary")
            })
            .await;
        Scene {
            primary,
            replica,
            app,
            traffic,
            watcher,
            started,
        }
    }

    /// Waits for the failover, then for reads and writes sent after it.
    async fn through_the_switch(&self) -> Instant {
        let at = self
            .watcher
            .wait_mode("failover_read_only", self.started)
            .await;
        self.traffic
            .wait_for(20, "read after the switch", |s| {
                s.kind == Kind::Read && s.sent_at >= at
            })
            .await;
        self.traffic
            .wait_for(10, "written after the switch", |s| {
                s.kind == Kind::Write && s.sent_at >= at
            })
            .await;
        at
    }

    /// Waits for the failback, then for writes landing on the primary again.
    async fn back_to_primary(&self, after: Instant) {
        let at = self.watcher.wait_mode("primary", after).await;
        self.traffic
            .wait_for(5, "written to the primary after the failback", |s| {
                s.kind == Kind::Write
                    && s.ok()
                    && s.sent_at >= at
                    && s.region.as_deref() == Some("primary")
            })
            .await;
    }

    /// Stops the traffic, counts, prints and asserts. Reads count from
    /// the switch on, leaving out those the replica was judged down for
    /// (the primary is the faulty one); or, with `all_reads` (the replica
    /// is the faulty one), every read from the start.
    async fn finish(self, name: &str, all_reads: bool) -> Tally {
        let sent = self.traffic.stop().await;
        let watched = self.watcher.stop().await;
        let switched = if all_reads {
            Some(self.started)
        } else {
            watched.switched()
        };
        let skip = |s: &Sent| !all_reads && watched.replica_down_during(s);
        let (primary, replica) = (received(&self.primary), received(&self.replica));
        let mut tally = Tally::count(&sent, &primary, &replica, &[switched], skip);
        tally.replica_writes_while_read_only = replica.keys().filter(|id| is_write(id)).count();
        eprintln!("fault scenario {name}: modes seen {:?}", watched.modes());
        tally.assert_clean(name);
        self.app.shutdown().await;
        tally
    }
}

/// Toggles `up` between down (connections reset) and up every `every`
/// until dropped; counts the toggles.
struct Flapper {
    stop: Arc<AtomicBool>,
    flips: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Flapper {
    fn start(up: &FakeUpstream, every: Duration) -> Flapper {
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (up, stop, flips) = (up.clone(), stop.clone(), flips.clone());
            async move {
                let mut down = false;
                while !stop.load(Ordering::Relaxed) {
                    down = !down;
                    up.set_behavior(if down {
                        Behavior::ResetOnAccept
                    } else {
                        Behavior::default()
                    });
                    flips.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(every).await;
                }
                up.set_behavior(Behavior::default());
            }
        });
        Flapper { stop, flips, task }
    }

    async fn wait_flips(&self, n: usize) {
        eventually(WAIT, &format!("{n} flaps"), || {
            self.flips.load(Ordering::Relaxed) >= n
        })
        .await;
    }

    /// Stops flapping, leaving the region up.
    async fn stop(self) -> Instant {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("flapper task");
        Instant::now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_under_traffic() {
    let scene = Scene::start(PROBES).await;
    scene.primary.stop().await;
    scene.through_the_switch().await;
    scene.finish("primary killed", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_stopped_under_traffic_then_back() {
    let scene = Scene::start(PROBES).await;
    scene.primary.set_behavior(Behavior::Hang);
    scene.through_the_switch().await;
    let healed = Instant::now();
    scene.primary.set_behavior(Behavior::default());
    scene.back_to_primary(healed).await;
    let tally = scene.finish("primary stopped", false).await;
    // Each writer sent one to the primary before it was judged down; the
    // primary read them and never answered: per_try_timeout ended them
    // with an unknown outcome, and they were not sent again (above).
    assert!(
        tally.writes_unknown > 0,
        "the stopped primary held no write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_slowed_under_traffic_then_back() {
    let scene = Scene::start(PROBES).await;
    // Slower than the probe timeout, well within per_try_timeout.
    scene.primary.set_behavior(Behavior::Delay(
        Duration::from_millis(600),
        Response::ok("ok"),
    ));
    scene.through_the_switch().await;
    let healed = Instant::now();
    scene.primary.set_behavior(Behavior::default());
    scene.back_to_primary(healed).await;
    scene.finish("primary slowed", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_flapping_under_traffic_then_steady() {
    let scene = Scene::start(FAST_PROBES).await;
    let flapper = Flapper::start(&scene.primary, Duration::from_millis(300));
    scene.through_the_switch().await;
    flapper.wait_flips(12).await;
    let steady = flapper.stop().await;
    scene.back_to_primary(steady).await;
    scene.finish("primary flapping", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_flapping_while_the_primary_serves() {
    let scene = Scene::start(PROBES).await;
    let flapping = Instant::now();
    let flapper = Flapper::start(&scene.replica, Duration::from_millis(300));
    flapper.wait_flips(12).await;
    scene
        .traffic
        .wait_for(40, "read while the replica flaps", |s| {
            s.kind == Kind::Read && s.sent_at >= flapping
        })
        .await;
    flapper.stop().await;
    scene.finish("replica flapping", true).await;
}
