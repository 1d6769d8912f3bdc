//! The Prometheus exposition end to end (docs/design.md §7): exact request counts
//! after scripted traffic through both regions and failway itself, a series
//! count that does not grow with key IDs, paths or client addresses, the
//! families and conventions a scraper relies on, and `promtool check metrics`.
//!
//! It reads the text the admin listener serves, as Prometheus would, and
//! cross-checks it against the registry the library exposes. It does not run
//! a Prometheus server; `tests/prometheus_e2e.rs` does.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::failway::{self as fw, send};
use common::upstream::{Behavior, FakeUpstream, Response};
use failway::app::Running;

const REGIONS: [&str; 3] = ["primary", "replica", "none"];
const CLASSES: [&str; 2] = ["read", "write"];
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The contract's latency buckets, 0.5 ms to 30 s.
const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Pinned so the blocked-write status (409) does not follow a changed default.
const KEY_PROTECT: &str = "[classify]\nprofile = \"key-protect\"\n";

/// One sample line of the text exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    /// Name and labels, the identity of a series.
    fn series(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// Parses `name{k="v",...} value [timestamp]`; panics on anything else, so
/// a malformed exposition fails the test that reads it.
fn parse_sample(line: &str) -> Sample {
    let bad = || -> ! { panic!("malformed sample line: {line:?}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad());
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    end = Some(i);
                    break;
                }
                ',' | ' ' => continue,
                _ => {
                    let key_start = i;
                    let mut key_end = i;
                    for (j, c) in chars.by_ref() {
                        if c == '=' {
                            key_end = j;
                            break;
                        }
                    }
                    let key = after[key_start..key_end].to_owned();
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        bad();
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, c)) => value.push(c),
                                None => bad(),
                            },
                            Some((_, '"')) => break,
                            Some((_, c)) => value.push(c),
                            None => bad(),
                        }
                    }
                    labels.insert(key, value);
                }
            }
        }
        let end = end.unwrap_or_else(|| bad());
        rest = &after[end + 1..];
    }
    let value_text = rest.split_whitespace().next().unwrap_or_else(|| bad());
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| bad()),
    };
    Sample {
        name,
        labels,
        value,
    }
}

/// A scraped exposition.
struct Exposition {
    text: String,
    samples: Vec<Sample>,
}

impl Exposition {
    fn parse(text: String) -> Exposition {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(parse_sample)
            .collect();
        Exposition { text, samples }
    }

    /// The value of the sample named `name` whose labels are exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && want.iter().all(|(k, v)| s.labels.get(k) == Some(v))
                    && s.labels.len() <= want.len() + 1
            })
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// Lines carrying a `failway_` sample (comments excluded).
    fn failway_sample_lines(&self) -> usize {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with("failway_"))
            .count()
    }

    fn failway_series(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name.starts_with("failway_"))
            .map(Sample::series)
            .collect()
    }

    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// `# HELP` (or `# TYPE`) lines: family name -> rest of the line.
    fn comments(&self, kind: &str) -> BTreeMap<String, String> {
        let prefix = format!("# {kind} ");
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|l| match l.split_once(' ') {
                Some((name, rest)) => (name.to_owned(), rest.to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect()
    }
}

async fn scrape(app: &Running) -> Exposition {
    let ans = send(
        &fw::client(),
        "GET",
        &format!("http://{}/metrics", app.admin_addr),
        &[],
        "",
    )
    .await;
    assert_eq!(ans.status, 200, "GET /metrics");
    assert_eq!(
        ans.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(ans.body.to_vec()).expect("the exposition is UTF-8");
    Exposition::parse(text)
}

/// `failway_requests_total` read from the registry itself, keyed by
/// (region, class, code_class).
fn requests_from_registry(app: &Running) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for family in app.gather() {
        if family.name() != "failway_requests_total" {
            continue;
        }
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_else(|| panic!("a requests series without label {name}"))
            };
            let key = (label("region"), label("class"), label("code_class"));
            out.insert(key, metric.get_counter().get_value() as u64);
        }
    }
    out
}

async fn operator_failover(app: &Running) {
    let ans = send(
        &fw::client(),
        "POST",
        &format!("http://{}/admin/failover", app.admin_addr),
        &[("content-type", "application/json")],
        r#"{"reason":"metrics drill"}"#,
    )
    .await;
    assert_eq!(
        ans.status,
        200,
        "operator failover: {}",
        String::from_utf8_lossy(&ans.body)
    );
}

async fn get(url: &str) -> fw::Answer {
    send(&fw::client(), "GET", url, &[], "").await
}

async fn post(url: &str) -> fw::Answer {
    send(
        &fw::client(),
        "POST",
        url,
        &[("content-type", "application/json")],
        r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1}}"#,
    )
    .await
}

#[tokio::test]
async fn requests_are_counted_by_region_class_and_status_class() {
    let primary = FakeUpstream::start().await;
    primary.set_behavior(Behavior::script(|r| {
        if r.method == "POST" {
            Response::status(201)
        } else if r.uri.contains("/missing") {
            Response::status(404)
        } else {
            Response::ok("{}")
        }
    }));
    let replica = FakeUpstream::start().await;
    let app = fw::start(fw::config(&primary.url(), &replica.url(), KEY_PROTECT)).await;
    let url = fw::url(&app);

    for i in 0..7 {
        let ans = get(&format!("{url}/api/v2/keys/key-{i}")).await;
        assert_eq!(ans.status, 200);
        assert_eq!(ans.header("failway-region"), Some("primary"));
    }
    for _ in 0..3 {
        let ans = post(&format!("{url}/api/v2/keys")).await;
        assert_eq!(ans.status, 201);
        assert_eq!(ans.header("failway-region"), Some("primary"));
    }
    for _ in 0..2 {
        let ans = get(&format!("{url}/api/v2/keys/missing")).await;
        assert_eq!(ans.status, 404);
        assert_eq!(ans.header("failway-region"), Some("primary"));
    }
    operator_failover(&app).await;
    for i in 0..4 {
        let ans = get(&format!("{url}/api/v2/keys/key-{i}")).await;
        assert_eq!(ans.status, 200);
        assert_eq!(ans.header("failway-region"), Some("replica"));
    }
    for _ in 0..2 {
        let ans = post(&format!("{url}/api/v2/keys")).await;
        assert_eq!(ans.status, 409, "a blocked write");
        assert_eq!(ans.header("failway-region"), None, "answered by failway");
    }
    assert_eq!(primary.request_count(), 12);
    assert_eq!(replica.request_count(), 4);

    let expected: BTreeMap<(&str, &str, &str), u64> = [
        (("primary", "read", "2xx"), 7),
        (("primary", "write", "2xx"), 3),
        (("primary", "read", "4xx"), 2),
        (("replica", "read", "2xx"), 4),
        (("none", "write", "4xx"), 2),
    ]
    .into_iter()
    .collect();
    let m = scrape(&app).await;
    let from_registry = requests_from_registry(&app);
    for region in REGIONS {
        for class in CLASSES {
            for code in CODE_CLASSES {
                let want = expected.get(&(region, class, code)).copied().unwrap_or(0);
                let labels = [("region", region), ("class", class), ("code_class", code)];
                assert_eq!(
                    m.value("failway_requests_total", &labels),
                    want as f64,
                    "failway_requests_total{labels:?}"
                );
                let key = (region.to_owned(), class.to_owned(), code.to_owned());
                assert_eq!(
                    from_registry.get(&key).copied(),
                    Some(want),
                    "registry: requests {labels:?}"
                );
            }
            let want: u64 = expected
                .iter()
                .filter(|((r, c, _), _)| *r == region && *c == class)
                .map(|(_, n)| n)
                .sum();
            let labels = [("region", region), ("class", class)];
            assert_eq!(
                m.value("failway_request_duration_seconds_count", &labels),
                want as f64,
                "failway_request_duration_seconds_count{labels:?}"
            );
            let inf = [("region", region), ("class", class), ("le", "+Inf")];
            assert_eq!(
                m.value("failway_request_duration_seconds_bucket", &inf),
                want as f64,
                "the +Inf bucket holds every observation {labels:?}"
            );
            let sum = m.value("failway_request_duration_seconds_sum", &labels);
            assert!(sum >= 0.0 && (want > 0 || sum == 0.0), "{labels:?}: {sum}");
        }
    }
    assert_eq!(from_registry.len(), 30, "every combination is exported");
    assert_eq!(m.sum("failway_requests_total"), 18.0);
    assert_eq!(
        m.value("failway_writes_blocked_total", &[("reason", "read_only")]),
        2.0
    );
    assert_eq!(
        m.value("failway_writes_accepted_on_replica_total", &[]),
        0.0
    );
    assert_eq!(
        m.value(
            "failway_mode_transitions_total",
            &[
                ("from", "primary"),
                ("to", "failover_read_only"),
                ("trigger", "operator")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.value("failway_mode", &[("mode", "failover_read_only")]),
        1.0
    );
    assert_eq!(m.value("failway_mode", &[("mode", "primary")]), 0.0);
    app.shutdown().await;
}

/// A key-ID-shaped path segment, distinct for each `i`.
fn uuid(i: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i,
        i & 0xffff,
        i & 0xfff,
        (i >> 12) & 0xfff,
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_count_does_not_grow_with_key_ids_paths_or_client_addresses() {
    const TOTAL: u64 = 10_000;
    const TASKS: u64 = 16;
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = fw::start(fw::config(&primary.url(), &replica.url(), KEY_PROTECT)).await;
    let url = fw::url(&app);
    // One request of each kind first, so the baseline already holds every
    // series this traffic may legitimately touch.
    assert_eq!(get(&format!("{url}/api/v2/keys/warm-up")).await.status, 200);
    assert_eq!(
        post(&format!("{url}/api/v2/keys/warm-up/actions/wrap"))
            .await
            .status,
        200
    );
    let before = scrape(&app).await;
    let requests_before = before.sum("failway_requests_total");

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let url = url.clone();
        tasks.spawn(async move {
            // A client (and so a connection, a client port) per task,
            // kept alive across the task's requests.
            let client = fw::client();
            let mut ok = 0u64;
            let mut i = t;
            while i < TOTAL {
                let id = uuid(i);
                let forwarded = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff);
                let headers = [
                    ("x-forwarded-for", forwarded.as_str()),
                    ("content-type", "application/json"),
                ];
                let ans = if i % 2 == 0 {
                    let u = format!("{url}/api/v2/keys/{id}?q={i}&cache-buster={id}");
                    send(&client, "GET", &u, &headers, "").await
                } else {
                    let u = format!("{url}/api/v2/keys/{id}/actions/wrap?n={i}");
                    send(&client, "POST", &u, &headers, r#"{"plaintext":"YQ=="}"#).await
                };
                if ans.status == 200 {
                    ok += 1;
                }
                i += TASKS;
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(n) = tasks.join_next().await {
        ok += n.expect("a traffic task panicked");
    }
    let took = started.elapsed();
    eprintln!("{TOTAL} requests in {took:?}");
    assert_eq!(ok, TOTAL, "every request answered 200");

    let after = scrape(&app).await;
    assert_eq!(
        after.sum("failway_requests_total") - requests_before,
        TOTAL as f64,
        "every request counted once"
    );
    let grown: Vec<_> = after
        .failway_series()
        .difference(&before.failway_series())
        .cloned()
        .collect();
    assert!(grown.is_empty(), "new series after the traffic: {grown:?}");
    assert_eq!(
        after.failway_sample_lines(),
        before.failway_sample_lines(),
        "failway_ sample lines"
    );
    assert!(
        !after.text.contains("warm-up") && !after.text.contains(&uuid(1)),
        "no key ID in the exposition"
    );
    app.shutdown().await;
}

/// Pipes `text` through `promtool check metrics`; `None` when promtool is not
/// installed.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition to promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), report))
}

#[tokio::test]
async fn the_exposition_passes_promtool_check_metrics() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = fw::start(fw::config(&primary.url(), &replica.url(), KEY_PROTECT)).await;
    let url = fw::url(&app);
    // Traffic and a failover, so the dynamic series are there too.
    get(&format!("{url}/api/v2/keys/k")).await;
    operator_failover(&app).await;
    post(&format!("{url}/api/v2/keys")).await;
    let m = scrape(&app).await;
    match promtool_check(&m.text) {
        Some((ok, report)) => assert!(
            ok,
            "promtool check metrics failed:\n{report}\n--- exposition ---\n{}",
            m.text
        ),
        None => {
            // Skips on a developer's machine, fails in CI.
            common::tool_available("promtool", "Debian: apt-get install prometheus");
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn build_info_process_metrics_help_lines_and_buckets() {
    let (primary, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let app = fw::start(fw::config(&primary.url(), &replica.url(), KEY_PROTECT)).await;
    let m = scrape(&app).await;

    assert_eq!(
        m.value(
            "failway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(m.value("process_open_fds", &[]) > 0.0);
    assert!(m.value("process_cpu_seconds_total", &[]) >= 0.0);
    let started = m.value("process_start_time_seconds", &[]);
    assert!(
        started > now - 24.0 * 3600.0 && started <= now + 1.0,
        "process_start_time_seconds {started} vs now {now}"
    );

    // Every failway_ family is described; histogram samples belong to the
    // family without their suffix.
    let help = m.comments("HELP");
    let types = m.comments("TYPE");
    let mut families = BTreeSet::new();
    for s in &m.samples {
        if !s.name.starts_with("failway_") {
            continue;
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = s.name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&s.name);
        families.insert(family.to_owned());
    }
    families.extend(types.keys().filter(|n| n.starts_with("failway_")).cloned());
    for family in &families {
        let text = help
            .get(family)
            .unwrap_or_else(|| panic!("{family} has no # HELP line"));
        assert!(!text.trim().is_empty(), "{family} has an empty # HELP");
        assert!(types.contains_key(family), "{family} has no # TYPE line");
    }
    for family in [
        "failway_build_info",
        "failway_mode",
        "failway_failback_blocked",
        "failway_health_checks_total",
        "failway_requests_total",
        "failway_request_duration_seconds",
        "failway_writes_blocked_total",
        "failway_writes_accepted_on_replica_total",
        "failway_outcome_unknown_total",
        "failway_retries_total",
        "failway_retry_budget_exhausted_total",
        "failway_rewrite_misses_total",
        "failway_config_reloads_total",
    ] {
        assert!(
            families.contains(family),
            "{family} is missing:\n{}",
            m.text
        );
    }
    assert_eq!(
        types
            .get("failway_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert_eq!(m.value("failway_mode", &[("mode", "primary")]), 1.0);
    assert!(
        m.get("failway_read_only_deadline_timestamp_seconds", &[])
            .is_none(),
        "no deadline in primary: the gauge is absent, not 0"
    );

    // Buckets: 0.5 ms to 30 s, then +Inf, for every (region, class).
    for region in REGIONS {
        for class in CLASSES {
            let les: Vec<f64> = m
                .samples
                .iter()
                .filter(|s| {
                    s.name == "failway_request_duration_seconds_bucket"
                        && s.labels.get("region").map(String::as_str) == Some(region)
                        && s.labels.get("class").map(String::as_str) == Some(class)
                })
                .map(|s| match s.labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le
                        .parse()
                        .unwrap_or_else(|_| panic!("bad le {le:?} for {region}/{class}")),
                    None => panic!("a bucket without le"),
                })
                .collect();
            let mut want = BUCKETS.to_vec();
            want.push(f64::INFINITY);
            assert_eq!(les, want, "buckets of {region}/{class}");
        }
    }
    app.shutdown().await;
}

#[test]
fn the_sample_parser_reads_labels_escapes_and_special_values() {
    let s = parse_sample(r#"a_b{x="1",y="q\"uote\\d"} +Inf"#);
    assert_eq!(s.name, "a_b");
    assert_eq!(s.labels["x"], "1");
    assert_eq!(s.labels["y"], "q\"uote\\d");
    assert!(s.value.is_infinite());
    let s = parse_sample("plain 0.25 1700000000000");
    assert!(s.labels.is_empty());
    assert_eq!(s.value, 0.25);
}
