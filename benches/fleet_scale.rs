//! Fleet mode at scale: N fleet members (failway's own fleet code, no
//! proxies) in this one process against one etcd, for each N given.
//!
//! For every N it measures the time for every member to follow one
//! transition (p50, p99, max), what etcd spends while N members are idle
//! (CPU, RSS, lease keep-alives and watch events per second, read from
//! `/proc` and etcd's `/metrics`), and a compare-and-swap storm: all N
//! propose the same transition at once, and exactly one must win.
//!
//! Run by `bench/fleet-scale.sh`, which starts the etcd; CI only compiles
//! it (`harness = false`, it never runs under `cargo test`).
//!
//!   fleet_scale ENDPOINT ETCD_PID N...

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use failway::config::{FleetBackend, FleetConfig};
use failway::failover::fleet::{CasOutcome, Fleet, FleetMetrics};
use failway::failover::machine::{Mode, State};
use tokio::sync::{watch, Barrier};
use tokio::time::Instant;

const LEASE_TTL: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(120);
const IDLE_WINDOW: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; only the positional arguments count.
    let args: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if args.len() < 3 {
        eprintln!("usage: fleet_scale ENDPOINT ETCD_PID N...");
        std::process::exit(2);
    }
    let endpoint = args[0].clone();
    let etcd_pid: u32 = args[1].parse().expect("ETCD_PID: a process id");
    let sizes: Vec<usize> = args[2..]
        .iter()
        .map(|n| n.parse().expect("N: a member count"))
        .collect();
    // Each member holds a few connections to etcd.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("| N | follow p50 | p99 | max | etcd CPU idle | etcd RSS | keep-alives/s | watch events/s | storm: winners | storm: all answered | storm: all followed |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        rt.block_on(run(&endpoint, etcd_pid, n));
    }
}

fn config(endpoint: &str, n: usize) -> FleetConfig {
    FleetConfig {
        backend: FleetBackend::Etcd,
        endpoints: vec![endpoint.parse().expect("ENDPOINT: an http URI")],
        endpoints_file: None,
        key: format!("/failway-bench/fleet-{n}-{}", std::process::id()),
        lease_ttl: LEASE_TTL,
        failover_quorum: 1,
        instance_id: None,
        tls: None,
        username: None,
        password_file: None,
    }
}

fn state(mode: Mode) -> State {
    let mut s = State::initial(SystemTime::now());
    s.mode = mode;
    s
}

async fn run(endpoint: &str, etcd_pid: u32, n: usize) {
    let cfg = config(endpoint, n);
    let (stop_tx, stop) = watch::channel(false);
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let metrics = FleetMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let fleet = Fleet::start(&cfg, format!("member-{i}"), metrics, stop.clone())
            .await
            .expect("fleet member");
        members.push(fleet);
    }
    wait_until("every member connected", || {
        members.iter().all(Fleet::connected)
    })
    .await;

    // The first record, then one transition timed member by member.
    won(&members[0], None, Mode::Primary).await;
    wait_epoch(&members, 1).await;
    let follow = follow_times(&members, 2, || {
        won(&members[0], Some(1), Mode::FailoverReadOnly)
    })
    .await;

    let idle = idle_cost(endpoint, etcd_pid).await;

    // The storm: every member saw the primary down at once.
    let storm = storm(&members, 2).await;

    let _ = stop_tx.send(true);
    drop(members);
    let q = |p: f64| fmt_ms(percentile(&follow, p));
    println!(
        "| {n} | {} | {} | {} | {:.1}% | {:.0} MiB | {:.0} | {:.1} | {} | {} | {} |",
        q(0.50),
        q(0.99),
        q(1.0),
        idle.cpu_percent,
        idle.rss_mib,
        idle.keep_alives_per_s,
        idle.watch_events_per_s,
        storm.winners,
        fmt_ms(storm.answered),
        fmt_ms(storm.followed),
    );
    // Lets the lease revocations go out before the next size starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn won(fleet: &Fleet, expected: Option<u64>, mode: Mode) {
    match fleet
        .compare_and_swap(expected, &state(mode), fleet.instance_id(), "bench")
        .await
    {
        Ok(CasOutcome::Won(_)) => {}
        other => panic!("CAS expecting {expected:?} did not win: {other:?}"),
    }
}

/// Starts `change`, and returns how long after its start each member saw
/// `epoch`.
async fn follow_times<F, Fut>(members: &[Fleet], epoch: u64, change: F) -> Vec<Duration>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let waiters: Vec<_> = members
        .iter()
        .map(|m| {
            let mut rx = m.record();
            tokio::spawn(async move {
                let seen = rx.wait_for(|r| r.as_ref().is_some_and(|r| r.epoch >= epoch));
                tokio::time::timeout(SETTLE, seen)
                    .await
                    .expect("member follows the transition in time")
                    .expect("record channel open");
                start.elapsed()
            })
        })
        .collect();
    change().await;
    let mut times = Vec::with_capacity(waiters.len());
    for w in waiters {
        times.push(w.await.expect("waiter"));
    }
    times.sort();
    times
}

struct Storm {
    winners: usize,
    answered: Duration,
    followed: Duration,
}

/// Every member proposes `expected + 1` at the same moment.
async fn storm(members: &[Fleet], expected: u64) -> Storm {
    let barrier = Arc::new(Barrier::new(members.len()));
    let start = Instant::now();
    let tasks: Vec<_> = members
        .iter()
        .map(|m| {
            let (m, barrier) = (m.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let st = state(Mode::FailoverReadWrite);
                let got = m
                    .compare_and_swap(Some(expected), &st, m.instance_id(), "bench storm")
                    .await;
                matches!(got, Ok(CasOutcome::Won(_)))
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.expect("storm task"));
    }
    let answered = start.elapsed();
    wait_epoch(members, expected + 1).await;
    assert_eq!(winners, 1, "exactly one member wins the storm");
    Storm {
        winners,
        answered,
        followed: start.elapsed(),
    }
}

async fn wait_epoch(members: &[Fleet], epoch: u64) {
    wait_until("every member follows the record", || {
        members.iter().all(|m| {
            m.record()
                .borrow()
                .as_ref()
                .is_some_and(|r| r.epoch >= epoch)
        })
    })
    .await;
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Idle {
    cpu_percent: f64,
    rss_mib: f64,
    keep_alives_per_s: f64,
    watch_events_per_s: f64,
}

/// etcd's cost over [`IDLE_WINDOW`] with every member connected and idle.
async fn idle_cost(endpoint: &str, etcd_pid: u32) -> Idle {
    let before = (cpu_ticks(etcd_pid), etcd_counters(endpoint).await);
    let start = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let secs = start.elapsed().as_secs_f64();
    let after = (cpu_ticks(etcd_pid), etcd_counters(endpoint).await);
    // Clock ticks are 100 per second on Linux.
    let cpu = (after.0 - before.0) as f64 / 100.0 / secs * 100.0;
    Idle {
        cpu_percent: cpu,
        rss_mib: rss_kib(etcd_pid) as f64 / 1024.0,
        keep_alives_per_s: (after.1 .0 - before.1 .0) / secs,
        watch_events_per_s: (after.1 .1 - before.1 .1) / secs,
    }
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("etcd's /proc stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("etcd's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Lease keep-alives received and watch events sent, as etcd counts them.
async fn etcd_counters(endpoint: &str) -> (f64, f64) {
    let text = fetch_metrics(endpoint).await;
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (
        sum("grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\""),
        sum("etcd_debugging_mvcc_events_total"),
    )
}

/// etcd's Prometheus text, over a plain HTTP/1.0 request (no client needed).
async fn fetch_metrics(endpoint: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: http::Uri = endpoint.parse().expect("endpoint");
    let addr = format!(
        "{}:{}",
        uri.host().unwrap_or("127.0.0.1"),
        uri.port_u16().unwrap_or(2379)
    );
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("etcd reachable");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .expect("metrics request");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("metrics answer");
    body
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
