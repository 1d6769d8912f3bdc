//! Per-request costs of the data path's pure steps: choosing the service,
//! classification (profile alone and with custom rules), routing on a
//! snapshot, header hygiene, metrics recording and region ID mapping.
//!
//! Only the public API is used, on inputs shaped like real Key Protect
//! traffic; no sockets, so the numbers are the CPU cost failway adds to each
//! request, not network time. Run with
//! `cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 2`.

// Real sockets, real time: these measure the wall clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use failway::classify::{Class, Classifier};
use failway::config::Config;
use failway::failover::machine::{Health, Mode};
use failway::failover::Snapshot;
use failway::metrics::new_registry;
use failway::proxy::headers::{check_request, ip_value, prepare_request, HeadLimits, Provenance};
use failway::proxy::metrics::ProxyMetrics;
use failway::proxy::pick::{choose, Matcher};
use failway::region::Region;
use failway::rewrite::Rewriter;
use failway::routing::route;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

const KEY: &str = "2b3e1f4c-7a9d-4e2b-8c1a-0f9e8d7c6b5a";
const REPLICA_KEY: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

/// A realistic mix: mostly wrap/unwrap (the envelope-encryption data path),
/// some listing and key reads, the occasional write.
fn mix() -> Vec<(Method, String)> {
    let crn =
        "crn%3Av1%3Abluemix%3Apublic%3Acloud-object-storage%3Aglobal%3Aa%2F1234%3A%3Abucket%3Ab1";
    [
        (
            Method::GET,
            "/api/v2/keys?limit=200&offset=0&state=".to_owned(),
        ),
        (Method::GET, format!("/api/v2/keys/{KEY}")),
        (Method::POST, format!("/api/v2/keys/{KEY}/actions/wrap")),
        (Method::POST, format!("/api/v2/keys/{KEY}/actions/unwrap")),
        (Method::POST, format!("/api/v2/keys/{KEY}?action=unwrap")),
        (Method::POST, "/api/v2/keys".to_owned()),
        (Method::POST, format!("/api/v2/keys/{KEY}/actions/rotate")),
        (
            Method::POST,
            format!("/api/v2/keys/{KEY}/registrations/{crn}"),
        ),
        (Method::GET, "/api/v2/import_token".to_owned()),
    ]
    .into_iter()
    .collect()
}

/// The mix as the proxy sees it: method, raw path, raw query.
fn parsed(mix: &[(Method, String)]) -> Vec<(Method, Uri)> {
    mix.iter()
        .map(|(m, t)| (m.clone(), t.parse().expect("valid bench target")))
        .collect()
}

fn config(extra: &str) -> Config {
    let text = format!(
        "[upstreams.primary]\nurl = \"http://127.0.0.1:1\"\n\
         [upstreams.replica]\nurl = \"http://127.0.0.1:2\"\n{extra}"
    );
    Config::from_toml_str(&text, Path::new(".")).expect("valid bench config")
}

fn classify_mix(c: &mut Criterion, group: &str, classifier: &Classifier) {
    let requests = parsed(&mix());
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(requests.len() as u64));
    g.bench_function("key_protect_mix", |b| {
        b.iter(|| {
            for (method, uri) in &requests {
                black_box(classifier.classify(
                    black_box(method),
                    black_box(uri.path()),
                    black_box(uri.query()),
                ));
            }
        })
    });
    g.finish();
}

fn classify(c: &mut Criterion) {
    let cfg = config("");
    let classifier = Classifier::new(cfg.classify.profile, &cfg.classify.rules);
    classify_mix(c, "classify", &classifier);
}

fn classify_rules(c: &mut Criterion) {
    // None of these match the mix, so every request walks all five rules
    // before the profile decides: the worst case.
    let cfg = config(
        r#"
[[classify.rules]]
methods = ["POST"]
path = "/api/v2/reports/**"
class = "read"
[[classify.rules]]
methods = ["GET"]
path = "/api/v2/keys/*/secret"
class = "write"
[[classify.rules]]
methods = ["POST"]
path = "/api/v2/keys/*"
action = "sync"
class = "write"
[[classify.rules]]
path = "/api/v1/cryptounits/**"
class = "write"
[[classify.rules]]
methods = ["PUT", "PATCH"]
path = "/internal/*/cache"
class = "read"
"#,
    );
    assert_eq!(cfg.classify.rules.len(), 5);
    let classifier = Classifier::new(cfg.classify.profile, &cfg.classify.rules);
    classify_mix(c, "classify_rules", &classifier);
}

fn routing(c: &mut Criterion) {
    let mut snap = Snapshot::initial(SystemTime::now());
    snap.mode = Mode::FailoverReadOnly;
    snap.regions[0].health = Health::Unhealthy;
    snap.regions[1].health = Health::Healthy;
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(2));
    g.bench_function("read_and_write_in_read_only_failover", |b| {
        b.iter(|| {
            black_box(route(black_box(Class::Read), black_box(&snap)));
            black_box(route(black_box(Class::Write), black_box(&snap)));
        })
    });
    g.finish();
}

/// The headers the Python SDK and the Go client send on an unwrap.
fn kp_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "127.0.0.1:8080"),
        (
            "authorization",
            "Bearer eyJraWQiOiIyMDI0MDEwMS0wMDAwIiwiYWxnIjoiUlMyNTYifQ.payload.signature",
        ),
        ("bluemix-instance", "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"),
        (
            "content-type",
            "application/vnd.ibm.kms.key_action_unwrap+json",
        ),
        ("accept", "application/json"),
        ("correlation-id", "6f1e2d3c-4b5a-4978-8877-665544332211"),
        ("x-correlation-id", "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"),
        ("x-request-id", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
        ("user-agent", "ibm-key-protect-sdk/3.0.1 python/3.12"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("content-length", "372"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn headers(c: &mut Criterion) {
    let template = kp_headers();
    let uri: Uri = format!("/api/v2/keys/{KEY}/actions/unwrap")
        .parse()
        .expect("uri");
    let limits = HeadLimits {
        max_headers: 100,
        max_header_bytes: 16 * 1024,
    };
    let upstream_host = HeaderValue::from_static("us-south.kms.cloud.ibm.com");
    let cid = HeaderValue::from_static("6f1e2d3c-4b5a-4978-8877-665544332211");
    let peer_value = ip_value(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let provenance = Provenance {
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        peer_value: &peer_value,
        peer_trusted: false,
        downstream_tls: false,
        original_host: Some(HeaderValue::from_static("127.0.0.1:8080")),
        upstream_host: &upstream_host,
        correlation_id: &cid,
    };
    let mut g = c.benchmark_group("headers");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check_and_prepare_kp_unwrap", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| {
                check_request(&Method::POST, &uri, h, limits).expect("accepted");
                prepare_request(h, &provenance);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let registry = new_registry();
    let m = ProxyMetrics::register(&registry).expect("metrics register");
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1));
    g.bench_function("record", |b| {
        b.iter(|| {
            m.record(
                black_box(Some(Region::Replica)),
                black_box(Class::Read),
                black_box(200),
                black_box(0.0042),
            )
        })
    });
    g.finish();
}

fn rewrite(c: &mut Criterion) {
    let cfg = config(&format!(
        r#"
[[rewrite]]
header = "bluemix-instance"
primary = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
replica = "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b"
[[rewrite]]
path_segment = true
primary = "{KEY}"
replica = "{REPLICA_KEY}"
"#
    ));
    let rewriter = Rewriter::new(&cfg.rewrite);
    let template = kp_headers();
    let hit = format!("/api/v2/keys/{KEY}/actions/unwrap");
    let miss = "/api/v2/keys/abcdefab-cdef-4abc-8def-abcdefabcdef/actions/unwrap";
    let mut g = c.benchmark_group("rewrite");
    g.throughput(Throughput::Elements(1));
    for (name, target) in [("to_replica_hit", hit.as_str()), ("to_replica_miss", miss)] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || template.clone(),
                |h| black_box(rewriter.to_replica(black_box(target), h)),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Choosing the service: the single-pair form, and ten `[[service]]`
/// blocks with the request for the last of them (the worst case: every
/// block is looked at).
fn services(c: &mut Criterion) {
    let one = config("");
    let mut ten = String::new();
    for i in 0..10 {
        ten.push_str(&format!(
            "[[service]]\nname = \"kp-{i}\"\nhosts = [\"kp-{i}.internal\", \"*.kms-{i}.example\"]\npath_prefix = \"/api\"\n[service.upstreams.primary]\nurl = \"http://127.0.0.1:{}\"\n[service.upstreams.replica]\nurl = \"http://127.0.0.1:{}\"\n",
            2000 + 2 * i,
            2001 + 2 * i
        ));
    }
    let ten = Config::from_toml_str(&ten, Path::new(".")).expect("valid bench config");
    let matchers = |c: &Config| -> Vec<Matcher> { c.services().iter().map(Matcher::new).collect() };
    let (one, ten) = (matchers(&one), matchers(&ten));
    let (parts, _) = http::Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v2/keys/{KEY}/actions/unwrap"))
        .header("host", "eu.kms-9.example:8443")
        .body(())
        .expect("request")
        .into_parts();
    let mut g = c.benchmark_group("services");
    g.throughput(Throughput::Elements(1));
    g.bench_function("choose_single_pair", |b| {
        b.iter(|| choose(black_box(&one), black_box(&parts), None))
    });
    g.bench_function("choose_last_of_ten", |b| {
        b.iter(|| choose(black_box(&ten), black_box(&parts), None))
    });
    assert_eq!(choose(&ten, &parts, None), Ok(9));
    g.finish();
}

criterion_group!(
    benches,
    classify,
    classify_rules,
    routing,
    headers,
    metrics,
    rewrite,
    services
);
criterion_main!(benches);
