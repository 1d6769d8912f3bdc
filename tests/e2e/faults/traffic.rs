//! What every fault scenario shares: steady reads and writes through
//! failway, each carrying a unique id; a watcher of failway's mode; the
//! ids each fake region received; and the tally the scenarios assert on.
//!
//! Every write is `POST /api/v2/keys` (a write under the `key-protect`
//! profile), every read `GET /api/v2/keys` or a wrap (a POST that is a
//! read), each with its id in `x-fault-id`. The fakes record every request
//! they read, so a region's ledger is the ids in its records. Failures that
//! must be 0 are counted, never timed: a slow machine makes a scenario
//! slower, not different.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::common::failway as fw;
use crate::common::upstream::{FakeUpstream, Recorded};
use failway::config::Config;

pub const ID_HEADER: &str = "x-fault-id";

/// How long a scenario waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(30);

/// A base URL that may change (failway restarted on other ports).
pub type Target = Arc<Mutex<String>>;

pub fn target(url: String) -> Target {
    Arc::new(Mutex::new(url))
}

fn url_of(t: &Target) -> String {
    t.lock().expect("target lock").clone()
}

/// A config for the fault scenarios: the listeners, the two regions,
/// probes of `/health`; `health`, `failover` and `retry` are added to
/// those sections (each scenario sets its own `read_only_window`).
pub fn config_text(proxy: &str, admin: &str, regions: (&str, &str), sections: [&str; 3]) -> String {
    let [health, failover, retry] = sections;
    format!(
        r#"
[proxy]
listen = "{proxy}"
max_connections = 1000
request_timeout = "5s"

[admin]
listen = "{admin}"

[upstreams.primary]
url = "{}"

[upstreams.replica]
url = "{}"

[health]
path = "/health"
healthy_threshold = 2
{health}

[failover]
failback_after = "600ms"
{failover}

[retry]
per_try_timeout = "2s"
{retry}
"#,
        regions.0, regions.1
    )
}

/// [`config_text`] parsed, for failway in process.
pub fn config(regions: (&str, &str), sections: [&str; 3]) -> Config {
    parse(&config_text(
        "127.0.0.1:0",
        "127.0.0.1:0",
        regions,
        sections,
    ))
}

pub fn parse(text: &str) -> Config {
    Config::from_toml_str(text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("fault config is invalid:\n{e}\n{text}"))
}

/// Probes generous enough for a loaded machine: a region is judged down
/// after 2 probes 200 ms apart that got no answer within 150 ms.
pub const PROBES: &str = "interval = \"200ms\"\ntimeout = \"150ms\"\nunhealthy_threshold = 2";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// One request the traffic sent, and how failway answered.
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: String,
    pub kind: Kind,
    /// Which failway it went through (fleet scenarios run several).
    pub via: usize,
    pub sent_at: Instant,
    pub done_at: Instant,
    /// 0: no HTTP answer (failway unreachable or killed).
    pub status: u16,
    /// `failway-region`.
    pub region: Option<String>,
    /// `failway-outcome: unknown`.
    pub unknown: bool,
    /// The error code of an answer failway made itself.
    pub code: Option<String>,
}

impl Sent {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Readers and writers running until [`Traffic::stop`].
pub struct Traffic {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Sent>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Two readers and two writers per target, each sending a request
    /// every 20 ms or so.
    pub fn start(targets: &[Target]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let seq = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (via, t) in targets.iter().enumerate() {
            for kind in [Kind::Read, Kind::Read, Kind::Write, Kind::Write] {
                let (stop, log, seq, t) = (stop.clone(), log.clone(), seq.clone(), t.clone());
                tasks.push(tokio::spawn(async move {
                    let client = fw::client();
                    while !stop.load(Ordering::Relaxed) {
                        let n = seq.fetch_add(1, Ordering::Relaxed);
                        // Taken before the target is read: a request sent
                        // after a retarget goes to the new address.
                        let sent_at = Instant::now();
                        let sent = one(&client, &url_of(&t), (kind, via, n), sent_at).await;
                        log.lock().expect("log lock").push(sent);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }));
            }
        }
        Traffic { stop, log, tasks }
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until `n` answered requests match `f`.
    pub async fn wait_for(&self, n: usize, what: &str, f: impl Fn(&Sent) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let have = self.sent().iter().filter(|s| f(s)).count();
            if have >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {have} of {n} requests {what} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops sending and waits for the requests in flight.
    pub async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("traffic task");
        }
        let log = self.log.lock().expect("log lock");
        log.clone()
    }
}

async fn one(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    base: &str,
    (kind, via, n): (Kind, usize, u64),
    sent_at: Instant,
) -> Sent {
    let (id, method, path, body) = match kind {
        Kind::Write => (
            format!("w-{via}-{n}"),
            "POST",
            "/api/v2/keys",
            format!(
                r#"{{"metadata":{{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1}},"resources":[{{"type":"application/vnd.ibm.kms.key+json","name":"w-{via}-{n}"}}]}}"#
            ),
        ),
        Kind::Read if n % 2 == 0 => (format!("r-{via}-{n}"), "GET", "/api/v2/keys", String::new()),
        Kind::Read => (
            format!("r-{via}-{n}"),
            "POST",
            "/api/v2/keys/k1/actions/wrap",
            r#"{"plaintext":"aGVsbG8="}"#.to_owned(),
        ),
    };
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header(ID_HEADER, &id)
        .header("bluemix-instance", "fault-instance")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid request");
    let answer = async {
        let resp = client.request(req).await.ok()?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some((parts, body))
    };
    // failway bounds every request (request_timeout); this bounds a
    // failway that stopped answering altogether.
    let (parts, body) = match tokio::time::timeout(Duration::from_secs(20), answer).await {
        Ok(Some((parts, body))) => (Some(parts), body),
        _ => (None, Bytes::new()),
    };
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["resources"][0]["reasons"][0]["code"]
                .as_str()
                .map(str::to_owned)
        });
    let header = |name: &str| {
        parts
            .as_ref()
            .and_then(|p| p.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Sent {
        kind,
        via,
        sent_at,
        done_at: Instant::now(),
        status: parts.as_ref().map_or(0, |p| p.status.as_u16()),
        region: header("failway-region"),
        unknown: header("failway-outcome").as_deref() == Some("unknown"),
        code,
        id,
    }
}

/// The ids of the requests `up` read (probes carry none), with how often
/// each arrived.
pub fn received(up: &FakeUpstream) -> HashMap<String, usize> {
    ids(&up.requests())
}

pub fn ids(records: &[Recorded]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for id in records.iter().filter_map(|r| r.header(ID_HEADER)) {
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

pub fn is_write(id: &str) -> bool {
    id.starts_with("w-")
}

/// One change the watcher saw: it happened after `after` (when the last
/// poll that still saw the old view was sent) and before `seen` (when the
/// first poll that saw the new one was answered).
#[derive(Clone, Debug)]
pub struct Change {
    pub after: Instant,
    pub seen: Instant,
    pub mode: String,
    /// The replica judged down (probes or live traffic).
    pub replica_down: bool,
}

/// Watches failway's mode and the replica's health through `/status`.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Change>>>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Polls `admin` (the admin listener's base URL) every 10 ms.
    pub fn start(admin: Target) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<Change>>> = Arc::default();
        let task = tokio::spawn({
            let (stop, seen) = (stop.clone(), seen.clone());
            async move {
                let client = fw::client();
                let mut last_poll = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    if let Some(st) = status_of(&client, &url_of(&admin)).await {
                        let now = Instant::now();
                        let mode = st["mode"].as_str().unwrap_or("").to_owned();
                        let replica_down = st["regions"]["replica"]["down"] == true;
                        let mut seen = seen.lock().expect("watcher lock");
                        let changed = seen
                            .last()
                            .is_none_or(|c| c.mode != mode || c.replica_down != replica_down);
                        if changed {
                            seen.push(Change {
                                after: last_poll,
                                seen: now,
                                mode,
                                replica_down,
                            });
                        }
                        last_poll = asked;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Watcher { stop, seen, task }
    }

    fn changes(&self) -> Vec<Change> {
        self.seen.lock().expect("watcher lock").clone()
    }

    /// Waits until the mode `want` is seen after `after`; returns when.
    pub async fn wait_mode(&self, want: &str, after: Instant) -> Instant {
        let deadline = Instant::now() + WAIT;
        loop {
            let hit = self
                .changes()
                .into_iter()
                .find(|c| c.seen >= after && c.mode == want);
            if let Some(c) = hit {
                return c.seen;
            }
            assert!(
                Instant::now() < deadline,
                "mode {want} not seen within {WAIT:?}; seen {:?}",
                Watched(self.changes()).modes()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) -> Watched {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("watcher task");
        let seen = self.seen.lock().expect("watcher lock");
        Watched(seen.clone())
    }
}

/// What a [`Watcher`] saw.
pub struct Watched(Vec<Change>);

impl Watched {
    /// The modes in the order seen.
    pub fn modes(&self) -> Vec<&str> {
        let mut modes: Vec<&str> = Vec::new();
        for c in &self.0 {
            if modes.last() != Some(&c.mode.as_str()) {
                modes.push(&c.mode);
            }
        }
        modes
    }

    /// When a failover mode was first seen.
    pub fn switched(&self) -> Option<Instant> {
        self.0.iter().find(|c| c.mode != "primary").map(|c| c.seen)
    }

    /// Whether the replica may have been judged down while `s` was in
    /// flight. Then a read may be refused by design (both regions down);
    /// no fault a scenario injects does that, only probes timing out on
    /// an overloaded machine.
    pub fn replica_down_during(&self, s: &Sent) -> bool {
        let mut from = None;
        for c in &self.0 {
            match (c.replica_down, from) {
                (true, None) => from = Some(c.after),
                (false, Some(start)) => {
                    if s.done_at >= start && s.sent_at <= c.seen {
                        return true;
                    }
                    from = None;
                }
                _ => {}
            }
        }
        from.is_some_and(|start| s.done_at >= start)
    }
}

/// `/status` of the failway whose admin base URL is `admin`, if it answers.
pub async fn status_of(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    admin: &str,
) -> Option<serde_json::Value> {
    let req = http::Request::get(format!("{admin}/status"))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let fetch = async {
        let resp = client.request(req).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// The tally of a scenario. The last four must be 0.
#[derive(Debug, Default)]
pub struct Tally {
    pub writes_sent: usize,
    pub writes_ok: usize,
    pub writes_refused: usize,
    pub writes_unknown: usize,
    pub reads_after_switch: usize,
    /// Writes that reached the replica while failway said
    /// `failover_read_only` (how that is decided is the scenario's).
    pub replica_writes_while_read_only: usize,
    /// Write ids that arrived more than once, across both regions.
    pub applied_twice: usize,
    /// Writes answered 2xx that the region named in `failway-region` never
    /// received, and writes on the replica that the latch forgot.
    pub lost: usize,
    /// Reads sent after failway reported the failover, answered non-2xx.
    pub reads_failed_after_switch: usize,
    /// A few of those, to show in the failure.
    pub failed_reads: Vec<Sent>,
    /// Reads after the switch that `skip` left out.
    pub reads_left_out: usize,
    /// How many of those failed.
    pub left_out_failed: usize,
}

impl Tally {
    /// Counts what `sent` and the two ledgers show. `switched[via]`: when
    /// that failway was first seen failed over; reads sent after it count.
    /// `skip` leaves requests out of the read count (failway itself down).
    pub fn count(
        sent: &[Sent],
        primary: &HashMap<String, usize>,
        replica: &HashMap<String, usize>,
        switched: &[Option<Instant>],
        skip: impl Fn(&Sent) -> bool,
    ) -> Tally {
        let mut t = Tally::default();
        for s in sent.iter().filter(|s| s.kind == Kind::Write) {
            t.writes_sent += 1;
            t.writes_ok += usize::from(s.ok());
            t.writes_refused += usize::from(s.status == 409);
            t.writes_unknown += usize::from(s.unknown);
            let ledger = match s.region.as_deref() {
                Some("primary") => Some(primary),
                Some("replica") => Some(replica),
                _ => None,
            };
            let landed = ledger.is_some_and(|l| l.contains_key(&s.id));
            t.lost += usize::from(s.ok() && !landed);
        }
        let mut both: HashMap<&str, usize> = HashMap::new();
        for (id, n) in primary.iter().chain(replica.iter()) {
            *both.entry(id.as_str()).or_insert(0) += n;
        }
        t.applied_twice = both
            .iter()
            .filter(|(id, n)| is_write(id) && **n > 1)
            .count();
        for s in sent.iter().filter(|s| s.kind == Kind::Read) {
            let after = switched
                .get(s.via)
                .copied()
                .flatten()
                .is_some_and(|at| s.sent_at >= at);
            if after && skip(s) {
                t.reads_left_out += 1;
                t.left_out_failed += usize::from(!s.ok());
            } else if after {
                t.reads_after_switch += 1;
                if !s.ok() {
                    t.reads_failed_after_switch += 1;
                    if t.failed_reads.len() < 5 {
                        t.failed_reads.push(s.clone());
                    }
                }
            }
        }
        t
    }

    /// Prints the tally (CI logs show it) and asserts the failure counts
    /// are 0, and that the scenario did what it claims (writes answered,
    /// reads after the switch).
    pub fn assert_clean(&self, scenario: &str) {
        let Tally { failed_reads, .. } = self;
        eprintln!(
            "fault scenario {scenario}: writes sent {}, answered 2xx {}, refused 409 {}, outcome unknown {}; reads after the switch {} \
             ({} more left out, {} of them failed); replica writes while read-only {}, applied twice {}, lost {}, reads failed after the switch {}",
            self.writes_sent,
            self.writes_ok,
            self.writes_refused,
            self.writes_unknown,
            self.reads_after_switch,
            self.reads_left_out,
            self.left_out_failed,
            self.replica_writes_while_read_only,
            self.applied_twice,
            self.lost,
            self.reads_failed_after_switch,
        );
        assert!(self.writes_ok > 0, "{scenario}: no write was answered 2xx");
        assert!(
            self.reads_after_switch > 0,
            "{scenario}: no read after the switch"
        );
        assert_eq!(
            self.replica_writes_while_read_only, 0,
            "{scenario}: writes reached the replica while read-only"
        );
        assert_eq!(self.applied_twice, 0, "{scenario}: writes applied twice");
        assert_eq!(self.lost, 0, "{scenario}: writes lost");
        assert_eq!(
            self.reads_failed_after_switch,
            0,
            "{scenario}: reads failed after the switch, e.g. (id, status, code) {:?}",
            failed_reads
                .iter()
                .map(|s| (&s.id, s.status, s.code.as_deref()))
                .collect::<Vec<_>>()
        );
    }
}

/// When each arrival at a fake was read, for scenarios that need to know
/// whether a write came before or after a transition.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<Vec<(String, SystemTime)>>>);

impl Arrivals {
    /// A behaviour answering 200 that notes each id's arrival time.
    pub fn recording(&self) -> crate::common::upstream::Behavior {
        let log = self.0.clone();
        crate::common::upstream::Behavior::script(move |r| {
            if let Some(id) = r.header(ID_HEADER) {
                log.lock()
                    .expect("arrivals lock")
                    .push((id, SystemTime::now()));
            }
            crate::common::upstream::Response::ok("{}")
        })
    }

    pub fn all(&self) -> Vec<(String, SystemTime)> {
        self.0.lock().expect("arrivals lock").clone()
    }
}
