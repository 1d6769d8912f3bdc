//! Gateway mode end to end, through the real proxy: downstream TLS (h2 and
//! HTTP/1.1 by ALPN) and certificate rotation under traffic; upstream TLS
//! with a private CA, client certificates and an SNI override; upstreams
//! that fail verification refused before a byte of the request is sent;
//! live configuration reload (file change, invalid file, restart-only key,
//! SIGHUP, ConfigMap symlink swap) under traffic; and a DNS change followed
//! through an injected resolver.
//!
//! Certificates are made here with rcgen; every socket is on loopback
//! (127.0.0.1, and 127.0.0.2 for the moved address). Waiting is polling with
//! a deadline; traffic loops are paced, never timed.

use crate::common;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use failway::app::{Running, StartOptions};
use failway::config::{Config, ServerTls, UpstreamTls};
use failway::upstream::dns::Resolve;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use common::failway::{self as fw, Answer};
use common::tls_upstream::{write_pem, Leaf, TestCa, TlsUpstream, TLS_OK};
use common::upstream::FakeUpstream;
use common::{eventually, eventually_async};

const WAIT: Duration = Duration::from_secs(10);
/// How long a followed change (DNS, reload) may take to show; the watchers
/// poll every second, DNS answers live 200 ms here.
const FOLLOW: Duration = Duration::from_secs(5);
/// Pace of the background traffic loops: steady, without flooding a shared
/// machine.
const PACE: Duration = Duration::from_millis(5);

const PATH: &str = "/api/v2/keys";
const TLS_ERR: &str = "FAILWAY_UPSTREAM_TLS_ERR";

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------- resolver

/// A resolver the test controls: a name resolves to what was last set.
#[derive(Clone, Default)]
struct TestResolver {
    names: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
    lookups: Arc<AtomicUsize>,
}

impl TestResolver {
    fn with(name: &str, ip: &str) -> TestResolver {
        let r = TestResolver::default();
        r.set(name, ip);
        r
    }

    fn set(&self, name: &str, ip: &str) {
        let ip: IpAddr = ip.parse().expect("test IP");
        self.names
            .lock()
            .expect("resolver lock")
            .insert(name.to_owned(), vec![ip]);
    }
}

impl Resolve for TestResolver {
    fn resolve(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = self
            .names
            .lock()
            .expect("resolver lock")
            .get(&host)
            .cloned();
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: unknown")))
        })
    }
}

fn options(resolver: TestResolver, config_path: Option<PathBuf>) -> StartOptions {
    StartOptions {
        active_health_checks: false,
        config_path,
        resolver: Arc::new(resolver),
    }
}

async fn start(cfg: Config, options: StartOptions) -> Running {
    failway::app::start_with(cfg, options)
        .await
        .expect("failway starts")
}

// ------------------------------------------------------- plain HTTP client

type PlainClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One GET; an error or a hang is returned as a failure, not a panic, so
/// traffic loops can count them.
async fn try_get(client: &PlainClient, url: &str) -> Result<Answer, String> {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

async fn get(url: &str) -> Answer {
    try_get(&fw::client(), url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The stable code in a failway error body (Key Protect format).
fn error_code(a: &Answer) -> String {
    a.json()["resources"][0]["reasons"][0]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_owned()
}

/// A paced GET loop through failway until stopped: mostly on one pooled
/// keep-alive client, every fourth request on a new connection. Anything
/// but a 200 is a failure.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Traffic {
    fn start(url: String) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            async move {
                let pooled = fw::client();
                let mut tick = tokio::time::interval(PACE);
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    n += 1;
                    let result = if n % 4 == 0 {
                        try_get(&fw::client(), &url).await
                    } else {
                        try_get(&pooled, &url).await
                    };
                    match result {
                        Ok(a) if a.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(a) => failures.lock().expect("failures lock").push(format!(
                            "request {n}: {} {}",
                            a.status,
                            String::from_utf8_lossy(&a.body)
                        )),
                        Err(e) => failures
                            .lock()
                            .expect("failures lock")
                            .push(format!("request {n}: {e}")),
                    }
                }
            }
        });
        Traffic {
            stop,
            ok,
            failures,
            task,
        }
    }

    /// Stops the loop; panics if any request failed.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("traffic loop stops")
            .expect("traffic loop did not panic");
        let failures = self.failures.lock().expect("failures lock").clone();
        let ok = self.ok.load(Ordering::SeqCst);
        assert!(
            failures.is_empty(),
            "{} of {} requests failed: {failures:#?}",
            failures.len(),
            failures.len() + ok
        );
        ok
    }
}

// ------------------------------------------------------------ TLS clients

fn tls_client(ca: &TestCa, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).expect("trust the test CA");
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(WAIT, async {
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    })
    .await
    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake")))
}

fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server presented a certificate")
        .clone()
}

fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h1_over(stream: TlsStream<TcpStream>) -> Result<H1, String> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

async fn h2_over(stream: TlsStream<TcpStream>) -> Result<H2, String> {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

/// What a request over a hand-made connection returned.
struct Got {
    status: u16,
    version: http::Version,
    body: Bytes,
}

async fn collect(
    resp: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<Got, String> {
    let resp = resp.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Got {
        status: parts.status.as_u16(),
        version: parts.version,
        body,
    })
}

async fn h1_get(send: &mut H1) -> Result<Got, String> {
    let req = http::Request::get(PATH)
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        send.ready().await.map_err(|e| e.to_string())?;
        collect(send.send_request(req).await).await
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

async fn h2_get(send: &mut H2) -> Result<Got, String> {
    let req = http::Request::get(format!("https://localhost{PATH}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        send.ready().await.map_err(|e| e.to_string())?;
        collect(send.send_request(req).await).await
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

/// Writes through a temporary file and a rename, as deploy tools do.
fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// failway with `proxy.tls` serving `leaf` from files in `dir`, in front of
/// plain upstreams.
async fn tls_gateway(
    dir: &Path,
    leaf: &Leaf,
    primary: &FakeUpstream,
    replica: &FakeUpstream,
) -> (Running, ServerTls) {
    let files = ServerTls {
        cert: write_pem(dir, "tls.crt", &leaf.cert_pem),
        key: write_pem(dir, "tls.key", &leaf.key_pem),
    };
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.proxy.tls = Some(files.clone());
    (fw::start(cfg).await, files)
}

// ------------------------------------------------------ 1. downstream TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_tls_serves_h2_and_http1_by_alpn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("gateway CA");
    let leaf = ca.server("failway gateway", &["localhost"]);
    let (upstream, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let (app, _) = tls_gateway(dir.path(), &leaf, &upstream, &replica).await;

    let stream = tls_connect(app.proxy_addr, tls_client(&ca, &[b"h2"]))
        .await
        .expect("h2 handshake");
    assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
    assert_eq!(presented(&stream), leaf.der);
    let mut h2 = h2_over(stream).await.expect("h2 connection");
    let got = h2_get(&mut h2).await.expect("h2 request answered");
    assert_eq!(got.status, 200);
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(&got.body[..], b"ok");

    for offer in [&[&b"http/1.1"[..]][..], &[]] {
        let stream = tls_connect(app.proxy_addr, tls_client(&ca, offer))
            .await
            .expect("HTTP/1.1 handshake");
        let expected = offer.first().map(|p| p.to_vec());
        assert_eq!(alpn(&stream), expected, "ALPN for offer {offer:?}");
        let mut h1 = h1_over(stream).await.expect("HTTP/1.1 connection");
        let got = h1_get(&mut h1).await.expect("HTTP/1.1 request answered");
        assert_eq!(got.status, 200);
        assert_eq!(got.version, http::Version::HTTP_11);
        assert_eq!(&got.body[..], b"ok");
    }

    let requests = upstream.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(
            r.header("x-forwarded-proto").as_deref(),
            Some("https"),
            "{r:?}"
        );
    }
    app.shutdown().await;
}

// ------------------------------------------- 2. rotation under traffic

/// Shared between the rotation test's loops.
#[derive(Default)]
struct Loops {
    stop: AtomicBool,
    h1_ok: AtomicUsize,
    h2_ok: AtomicUsize,
    fresh_ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
    /// The leaf the last new connection was shown.
    last_presented: Mutex<Option<CertificateDer<'static>>>,
}

impl Loops {
    fn fail(&self, what: String) {
        self.failures.lock().expect("failures lock").push(what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_traffic_fails_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("gateway CA");
    let old = ca.server("failway gateway old", &["localhost"]);
    let new = ca.server("failway gateway new", &["localhost"]);
    let (upstream, replica) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let (app, files) = tls_gateway(dir.path(), &old, &upstream, &replica).await;
    let addr = app.proxy_addr;
    let loops = Arc::new(Loops::default());

    // Keep-alive: one HTTP/1.1 and one h2 connection, opened before the
    // rotation and used throughout.
    let h1_task = tokio::spawn({
        let (loops, ca) = (loops.clone(), tls_client(&ca, &[b"http/1.1"]));
        async move {
            let stream = tls_connect(addr, ca).await.expect("handshake");
            let mut send = h1_over(stream).await.expect("HTTP/1.1 connection");
            let mut tick = tokio::time::interval(PACE);
            while !loops.stop.load(Ordering::SeqCst) {
                tick.tick().await;
                match h1_get(&mut send).await {
                    Ok(g) if g.status == 200 => {
                        loops.h1_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(g) => loops.fail(format!("keep-alive HTTP/1.1: {}", g.status)),
                    Err(e) => loops.fail(format!("keep-alive HTTP/1.1: {e}")),
                }
            }
        }
    });
    let h2_task = tokio::spawn({
        let (loops, ca) = (loops.clone(), tls_client(&ca, &[b"h2"]));
        async move {
            let stream = tls_connect(addr, ca).await.expect("handshake");
            let mut send = h2_over(stream).await.expect("h2 connection");
            let mut tick = tokio::time::interval(PACE);
            while !loops.stop.load(Ordering::SeqCst) {
                tick.tick().await;
                match h2_get(&mut send).await {
                    Ok(g) if g.status == 200 => {
                        loops.h2_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(g) => loops.fail(format!("keep-alive h2: {}", g.status)),
                    Err(e) => loops.fail(format!("keep-alive h2: {e}")),
                }
            }
        }
    });
    // A new connection and a full handshake per request: a resumed session
    // would report the certificate of the session it resumes.
    let fresh_task = tokio::spawn({
        let mut config = (*tls_client(&ca, &[b"http/1.1"])).clone();
        config.resumption = rustls::client::Resumption::disabled();
        let (loops, ca) = (loops.clone(), Arc::new(config));
        async move {
            let mut tick = tokio::time::interval(PACE);
            while !loops.stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let stream = match tls_connect(addr, ca.clone()).await {
                    Ok(s) => s,
                    Err(e) => {
                        loops.fail(format!("new connection handshake: {e}"));
                        continue;
                    }
                };
                let leaf = presented(&stream);
                let got = match h1_over(stream).await {
                    Ok(mut send) => h1_get(&mut send).await,
                    Err(e) => Err(e),
                };
                match got {
                    Ok(g) if g.status == 200 => {
                        *loops.last_presented.lock().expect("lock") = Some(leaf);
                        loops.fresh_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(g) => loops.fail(format!("new connection: {}", g.status)),
                    Err(e) => loops.fail(format!("new connection: {e}")),
                }
            }
        }
    });

    let counts = |l: &Loops| {
        [
            l.h1_ok.load(Ordering::SeqCst),
            l.h2_ok.load(Ordering::SeqCst),
            l.fresh_ok.load(Ordering::SeqCst),
        ]
    };
    eventually(WAIT, "every loop is served before the rotation", || {
        counts(&loops).iter().all(|&n| n >= 5)
    })
    .await;
    assert_eq!(
        loops.last_presented.lock().expect("lock").as_ref(),
        Some(&old.der)
    );

    // The key first, then the certificate: a poll between the two renames
    // sees a mismatched pair, which must keep the old pair in use.
    write_atomic(&files.key, &new.key_pem);
    write_atomic(&files.cert, &new.cert_pem);
    eventually(FOLLOW, "new handshakes present the new certificate", || {
        loops.last_presented.lock().expect("lock").as_ref() == Some(&new.der)
    })
    .await;
    // The connections opened before the rotation keep working after it.
    let after = counts(&loops);
    eventually(
        WAIT,
        "every loop keeps being served after the rotation",
        || counts(&loops).iter().zip(after).all(|(&n, a)| n >= a + 5),
    )
    .await;

    loops.stop.store(true, Ordering::SeqCst);
    for task in [h1_task, h2_task, fresh_task] {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("loop stops")
            .expect("loop did not panic");
    }
    let failures = loops.failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "requests failed during rotation ({:?} served): {failures:#?}",
        counts(&loops)
    );
    assert!(fw::metric(&app, "failway_tls_reloads_total{result=\"success\"}").await >= 1.0);
    app.shutdown().await;
}

// ----------------------------------------------------- upstream TLS setup

/// Both regions over TLS with the same `tls` settings; a test points the
/// replica at a twin of the primary, so that retries on the other region
/// meet the same verification.
fn upstream_tls_config(primary: &str, replica: &str, tls: UpstreamTls) -> Config {
    let mut cfg = fw::config(primary, replica, "");
    cfg.upstreams.primary.tls = Some(tls.clone());
    cfg.upstreams.replica.tls = Some(tls);
    cfg
}

// ------------------------------------------------- 3. upstream mTLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mtls_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = TestCa::new("upstream server CA");
    let client_ca = TestCa::new("upstream client CA");
    let server = server_ca.server("kms", &["localhost"]);
    let client = client_ca.client("failway client");
    let ca_pem = write_pem(dir.path(), "upstream-ca.pem", &server_ca.pem());
    let cert = write_pem(dir.path(), "client.crt", &client.cert_pem);
    let key = write_pem(dir.path(), "client.key", &client.key_pem);
    let resolver = TestResolver::with("localhost", "127.0.0.1");

    let up = TlsUpstream::start_mtls(&server, &client_ca).await;
    let twin = TlsUpstream::start_mtls(&server, &client_ca).await;
    let cfg = upstream_tls_config(
        &format!("https://localhost:{}", up.port()),
        &format!("https://localhost:{}", twin.port()),
        UpstreamTls {
            ca: Some(ca_pem.clone()),
            client_cert: Some(cert),
            client_key: Some(key),
            server_name: None,
        },
    );
    let app = start(cfg, options(resolver.clone(), None)).await;
    let ans = get(&format!("{}{PATH}", fw::url(&app))).await;
    assert_eq!(ans.status, 200, "{:?}", String::from_utf8_lossy(&ans.body));
    assert_eq!(&ans.body[..], TLS_OK.as_bytes());
    assert_eq!(up.request_count(), 1);
    assert_eq!(up.client_chains(), vec![vec![client.der.clone()]]);
    assert_eq!(up.snis(), vec![Some("localhost".to_owned())]);
    assert_eq!(twin.connection_count(), 0);
    app.shutdown().await;

    // Without a client certificate the upstream refuses the handshake.
    let ups = [
        TlsUpstream::start_mtls(&server, &client_ca).await,
        TlsUpstream::start_mtls(&server, &client_ca).await,
    ];
    let cfg = upstream_tls_config(
        &format!("https://localhost:{}", ups[0].port()),
        &format!("https://localhost:{}", ups[1].port()),
        UpstreamTls {
            ca: Some(ca_pem),
            ..Default::default()
        },
    );
    let app = start(cfg, options(resolver, None)).await;
    let ans = get(&format!("{}{PATH}", fw::url(&app))).await;
    assert_eq!(ans.status, 502, "{:?}", String::from_utf8_lossy(&ans.body));
    // In TLS 1.3 the client's side of the handshake is over before the
    // server checks the client certificate, so failway has already sent
    // its (encrypted) request when the refusal comes: the alert when it
    // arrives first, a reset when the server's close (with that request
    // unread) overtakes it.
    let code = error_code(&ans);
    assert!(
        code == TLS_ERR || code == "FAILWAY_UPSTREAM_RESET_ERR",
        "{code}"
    );
    assert!(ups[0].connection_count() >= 1, "failway did connect");
    for up in &ups {
        assert_eq!(up.handshake_count(), 0, "no handshake completed");
        assert_eq!(
            up.app_byte_count(),
            0,
            "the upstream decrypted request bytes: {:?}",
            String::from_utf8_lossy(&up.app_data())
        );
        assert_eq!(up.request_count(), 0);
    }
    app.shutdown().await;
}

// ------------------------------------------------- 4. SNI override

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_override_reaches_an_ip_addressed_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("internal CA");
    let server = ca.server("kms.internal", &["kms.internal"]);
    let up = TlsUpstream::start(&server).await;
    let twin = TlsUpstream::start(&server).await;
    let cfg = upstream_tls_config(
        &format!("https://127.0.0.1:{}", up.port()),
        &format!("https://127.0.0.1:{}", twin.port()),
        UpstreamTls {
            ca: Some(write_pem(dir.path(), "ca.pem", &ca.pem())),
            server_name: Some("kms.internal".into()),
            ..Default::default()
        },
    );
    let app = fw::start(cfg).await;
    let ans = get(&format!("{}{PATH}", fw::url(&app))).await;
    assert_eq!(ans.status, 200, "{:?}", String::from_utf8_lossy(&ans.body));
    assert_eq!(&ans.body[..], TLS_OK.as_bytes());
    assert_eq!(up.snis(), vec![Some("kms.internal".to_owned())]);
    assert_eq!(up.request_count(), 1);
    app.shutdown().await;
}

// -------------------------------------- 5. verification failures refused

/// An upstream failway must refuse, and the `tls` that makes it refuse.
struct Refused {
    /// The primary and the replica, alike.
    ups: [TlsUpstream; 2],
    tls: UpstreamTls,
    /// Part of the rustls reason a log line must carry (lower case).
    why: &'static [&'static str],
}

async fn wrong_ca(dir: &Path) -> Refused {
    let trusted = TestCa::new("trusted CA");
    let other = TestCa::new("some other CA");
    let leaf = other.server("kms.internal", &["kms.internal"]);
    Refused {
        ups: [
            TlsUpstream::start(&leaf).await,
            TlsUpstream::start(&leaf).await,
        ],
        tls: UpstreamTls {
            ca: Some(write_pem(dir, "trusted-ca.pem", &trusted.pem())),
            server_name: Some("kms.internal".into()),
            ..Default::default()
        },
        why: &["unknownissuer", "unknown issuer"],
    }
}

async fn wrong_name(dir: &Path) -> Refused {
    let ca = TestCa::new("internal CA");
    let leaf = ca.server("other.example", &["other.example"]);
    Refused {
        ups: [
            TlsUpstream::start(&leaf).await,
            TlsUpstream::start(&leaf).await,
        ],
        tls: UpstreamTls {
            ca: Some(write_pem(dir, "internal-ca.pem", &ca.pem())),
            server_name: Some("kms.internal".into()),
            ..Default::default()
        },
        why: &["not valid for name", "notvalidforname"],
    }
}

impl Refused {
    fn config(&self) -> Config {
        let url = |up: &TlsUpstream| format!("https://127.0.0.1:{}", up.port());
        upstream_tls_config(&url(&self.ups[0]), &url(&self.ups[1]), self.tls.clone())
    }
}

/// Sends a read and a write through failway to `r`'s upstreams; both must
/// be a 502 (and not "outcome unknown") with no application byte reaching
/// either upstream. Returns the error codes answered.
async fn assert_refused(r: &Refused, what: &str) -> Vec<String> {
    let app = fw::start(r.config()).await;
    let read = get(&format!("{}{PATH}", fw::url(&app))).await;
    let write = fw::send(
        &fw::client(),
        "POST",
        &format!("{}{PATH}", fw::url(&app)),
        &[("content-type", "application/json")],
        r#"{"secret":"must not leave"}"#,
    )
    .await;
    let mut codes = Vec::new();
    for (ans, method) in [(read, "GET"), (write, "POST")] {
        assert_eq!(
            ans.status,
            502,
            "{what}, {method}: {:?}",
            String::from_utf8_lossy(&ans.body)
        );
        assert!(
            ans.header("failway-outcome").is_none(),
            "{what}, {method}: nothing was sent, the outcome is known"
        );
        codes.push(error_code(&ans));
    }
    assert!(
        r.ups[0].connection_count() >= 2,
        "{what}: failway did connect"
    );
    for up in &r.ups {
        assert!(
            up.snis()
                .iter()
                .all(|s| s.as_deref() == Some("kms.internal")),
            "{what}: {:?}",
            up.snis()
        );
        assert_eq!(up.handshake_count(), 0, "{what}: no handshake completed");
        assert_eq!(
            up.app_byte_count(),
            0,
            "{what}: the upstream decrypted request bytes: {:?}",
            String::from_utf8_lossy(&up.app_data())
        );
    }
    app.shutdown().await;
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_with_an_untrusted_ca_is_refused_before_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_refused(&wrong_ca(dir.path()).await, "wrong CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_with_the_wrong_name_is_refused_before_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_refused(&wrong_name(dir.path()).await, "wrong name").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_failures_are_answered_with_the_tls_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (wrong_ca(dir.path()).await, "wrong CA"),
        (wrong_name(dir.path()).await, "wrong name"),
    ];
    for (r, what) in &cases {
        let codes = assert_refused(r, what).await;
        assert_eq!(codes, [TLS_ERR, TLS_ERR], "{what}");
    }
}

/// Log output of the current thread, at `info` and above (what an operator
/// sees by default).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Refuses `r` through failway on this thread's runtime and returns the
/// log lines written meanwhile.
async fn refusal_log(r: &Refused) -> Vec<String> {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    // tracing asks only the global dispatcher about a callsite first hit
    // while a single dispatcher is registered, so a lone scoped one would
    // miss callsites other tests hit meanwhile; a global no-op one beside
    // it makes every callsite consult both.
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
    });
    // Scoped to this thread: the test runs on a current-thread runtime, so
    // failway's tasks log here too, and other tests are not captured.
    let _guard = tracing::subscriber::set_default(subscriber);
    // Callsites registered while the dispatcher was being added.
    tracing::callsite::rebuild_interest_cache();
    let app = fw::start(r.config()).await;
    let ans = get(&format!("{}{PATH}", fw::url(&app))).await;
    assert_eq!(ans.status, 502);
    app.shutdown().await;
    let logs = String::from_utf8_lossy(&capture.0.lock().expect("capture lock")).into_owned();
    logs.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn upstream_tls_refusal_is_logged_as_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = refusal_log(&wrong_ca(dir.path()).await).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("FAILWAY_UPSTREAM_")),
        "no warning about the upstream failure: {lines:#?}"
    );
}

#[tokio::test]
async fn upstream_tls_refusal_log_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    for r in [wrong_ca(dir.path()).await, wrong_name(dir.path()).await] {
        let lines = refusal_log(&r).await;
        assert!(
            lines.iter().any(|l| {
                let l = l.to_lowercase();
                l.contains("warn") && r.why.iter().any(|w| l.contains(w))
            }),
            "no warning says why ({:?}): {lines:#?}",
            r.why
        );
    }
}

// --------------------------------------------------------- 6. live reload

/// A complete config file: both listeners on port 0 unless `listen` says
/// otherwise; `extra` is appended.
fn config_text(primary: &str, replica: &str, listen: &str, extra: &str) -> String {
    format!(
        r#"[proxy]
listen = "{listen}"

[admin]
listen = "127.0.0.1:0"

[upstreams.primary]
url = "{primary}"

[upstreams.replica]
url = "{replica}"

{extra}
"#
    )
}

const ANY_PORT: &str = "127.0.0.1:0";
/// Parses as TOML and names real keys, but fails validation.
const INVALID: &str = "[retry]\nmax_attempts = 0\n";

async fn reloads(app: &Running, result: &str) -> f64 {
    fw::metric(
        app,
        &format!("failway_config_reloads_total{{result=\"{result}\"}}"),
    )
    .await
}

/// Waits until `reloads{result}` exceeds `than`.
async fn reloads_above(app: &Running, result: &str, than: f64, what: &str) {
    eventually_async(
        FOLLOW,
        what,
        || async move { reloads(app, result).await > than },
    )
    .await;
}

/// Waits until `to` has received `n` more requests; panics if `not_to`
/// received any meanwhile.
async fn only_to(to: &FakeUpstream, not_to: &FakeUpstream, n: usize, what: &str) {
    let (t0, n0) = (to.request_count(), not_to.request_count());
    eventually(WAIT, what, || to.request_count() >= t0 + n).await;
    assert_eq!(
        not_to.request_count(),
        n0,
        "{what}: traffic reached the other upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_changes_are_followed_under_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("failway.toml");
    let (a, b, replica) = (
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
    );
    std::fs::write(&path, config_text(&a.url(), &replica.url(), ANY_PORT, "")).expect("write");
    let cfg = Config::load(&path).expect("valid config");
    let app = start(cfg, options(TestResolver::default(), Some(path.clone()))).await;
    let traffic = Traffic::start(format!("{}{PATH}", fw::url(&app)));
    eventually(WAIT, "traffic flows to upstream A", || {
        a.request_count() >= 5
    })
    .await;

    // (a) A valid change: the primary moves to B.
    let ok0 = reloads(&app, "success").await;
    write_atomic(&path, &config_text(&b.url(), &replica.url(), ANY_PORT, ""));
    eventually(FOLLOW, "traffic moves to upstream B", || {
        b.request_count() > 0
    })
    .await;
    reloads_above(&app, "success", ok0, "the reload is counted as a success").await;
    only_to(&b, &a, 10, "after the reload").await;

    // (b) An invalid file: refused, B keeps serving (the file names A).
    let err0 = reloads(&app, "error").await;
    write_atomic(
        &path,
        &config_text(&a.url(), &replica.url(), ANY_PORT, INVALID),
    );
    reloads_above(&app, "error", err0, "the invalid file is refused").await;
    only_to(&b, &a, 10, "after the refused reload").await;

    // (c) A new listen address needs a restart: the old listener keeps
    // serving, the new address is not bound, the rest still applies.
    let free = std::net::TcpListener::bind(ANY_PORT)
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let ok1 = reloads(&app, "success").await;
    write_atomic(
        &path,
        &config_text(&a.url(), &replica.url(), &free.to_string(), ""),
    );
    reloads_above(&app, "success", ok1, "the listen change is reloaded").await;
    only_to(&a, &b, 10, "after the listen change").await;
    assert!(
        TcpStream::connect(free).await.is_err(),
        "failway bound the new proxy.listen {free} without a restart"
    );

    let served = traffic.finish().await;
    assert!(served >= 30, "only {served} requests were served");
    assert_eq!(replica.request_count(), 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_applies_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("failway.toml");
    let (a, b, replica) = (
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
    );
    std::fs::write(&path, config_text(&a.url(), &replica.url(), ANY_PORT, "")).expect("write");
    let cfg = Config::load(&path).expect("valid config");
    let app = start(cfg, options(TestResolver::default(), Some(path.clone()))).await;
    let traffic = Traffic::start(format!("{}{PATH}", fw::url(&app)));
    eventually(WAIT, "traffic flows to upstream A", || {
        a.request_count() >= 5
    })
    .await;
    let probe = |tag: &str| format!("{}{PATH}/{tag}", fw::url(&app));
    let reached = |up: &FakeUpstream, tag: &str| {
        up.requests()
            .iter()
            .any(|r| r.uri == format!("{PATH}/{tag}"))
    };

    write_atomic(&path, &config_text(&b.url(), &replica.url(), ANY_PORT, ""));
    assert!(app.reload().await, "a valid file is applied");
    // No waiting: once reload() returns, new requests use the new config.
    assert_eq!(get(&probe("after-sighup")).await.status, 200);
    assert!(reached(&b, "after-sighup"), "the reloaded config is in use");

    write_atomic(
        &path,
        &config_text(&a.url(), &replica.url(), ANY_PORT, INVALID),
    );
    let err0 = reloads(&app, "error").await;
    assert!(!app.reload().await, "an invalid file is refused");
    assert!(reloads(&app, "error").await > err0);
    assert_eq!(get(&probe("after-refusal")).await.status, 200);
    assert!(
        reached(&b, "after-refusal"),
        "the old config keeps serving after a refused reload"
    );

    traffic.finish().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_is_followed() {
    // Kubernetes mounts a ConfigMap as `name -> ..data/name`, `..data ->
    // ..<timestamp>`; an update writes a new directory and swaps `..data`.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let (a, b, replica) = (
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
    );
    let version = |name: &str, primary: &str| {
        let d = root.join(name);
        std::fs::create_dir(&d).expect("create version dir");
        std::fs::write(
            d.join("failway.toml"),
            config_text(primary, &replica.url(), ANY_PORT, ""),
        )
        .expect("write");
    };
    version("..v1", &a.url());
    std::os::unix::fs::symlink("..v1", root.join("..data")).expect("symlink ..data");
    let path = root.join("failway.toml");
    std::os::unix::fs::symlink("..data/failway.toml", &path).expect("symlink file");

    let cfg = Config::load(&path).expect("valid config");
    let app = start(cfg, options(TestResolver::default(), Some(path))).await;
    let traffic = Traffic::start(format!("{}{PATH}", fw::url(&app)));
    eventually(WAIT, "traffic flows to upstream A", || {
        a.request_count() >= 5
    })
    .await;

    let ok0 = reloads(&app, "success").await;
    version("..v2", &b.url());
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).expect("symlink ..data_tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(root.join("..v1")).expect("remove the old version");
    eventually(FOLLOW, "traffic moves to upstream B", || {
        b.request_count() > 0
    })
    .await;
    reloads_above(&app, "success", ok0, "the swap is counted as a reload").await;
    only_to(&b, &a, 10, "after the swap").await;

    traffic.finish().await;
    app.shutdown().await;
}

// ---------------------------------------------------- 7. DNS change

/// Two fakes on the same port, on 127.0.0.1 and 127.0.0.2, so one URL
/// fits both addresses.
async fn same_port_pair() -> (FakeUpstream, FakeUpstream) {
    for _ in 0..50 {
        let a = FakeUpstream::start().await;
        let moved = SocketAddr::new("127.0.0.2".parse().expect("IP"), a.addr().port());
        if let Ok(b) = FakeUpstream::start_at(moved).await {
            return (a, b);
        }
        a.stop().await;
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_change_is_followed_without_failing_requests() {
    let (a, b) = same_port_pair().await;
    let replica = FakeUpstream::start().await;
    let resolver = TestResolver::with("upstream.test", "127.0.0.1");
    let url = format!("http://upstream.test:{}", a.addr().port());
    let mut cfg = fw::config(&url, &replica.url(), "");
    cfg.upstreams.primary.resolve_every = Duration::from_millis(200);
    let app = start(cfg, options(resolver.clone(), None)).await;

    let traffic = Traffic::start(format!("{}{PATH}", fw::url(&app)));
    eventually(WAIT, "traffic flows to 127.0.0.1", || {
        a.request_count() >= 20
    })
    .await;
    assert_eq!(b.request_count(), 0);
    let a_conns = a.connection_count();
    assert!(
        a.request_count() > a_conns,
        "failway reuses pooled upstream connections ({a_conns} for {} requests)",
        a.request_count()
    );

    resolver.set("upstream.test", "127.0.0.2");
    eventually(FOLLOW, "traffic moves to 127.0.0.2", || {
        b.request_count() > 0
    })
    .await;
    // Connections to the old address are retired after their next response:
    // soon a run of requests goes to the new address only.
    let deadline = tokio::time::Instant::now() + FOLLOW;
    loop {
        let (a0, b0) = (a.request_count(), b.request_count());
        eventually(WAIT, "traffic keeps flowing", || {
            b.request_count() >= b0 + 20
        })
        .await;
        if a.request_count() == a0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests still reach the old address {} after the DNS change",
            a.addr()
        );
    }

    let served = traffic.finish().await;
    assert!(served >= 40, "only {served} requests were served");
    assert_eq!(replica.request_count(), 0);
    assert!(resolver.lookups.load(Ordering::SeqCst) >= 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_are_retired_after_pool_max_lifetime() {
    let primary = FakeUpstream::start().await;
    let replica = FakeUpstream::start().await;
    let mut cfg = fw::config(&primary.url(), &replica.url(), "");
    cfg.upstreams.primary.pool_max_lifetime = Duration::from_millis(300);
    let app = fw::start(cfg).await;

    let traffic = Traffic::start(format!("{}{PATH}", fw::url(&app)));
    eventually(WAIT, "traffic flows", || primary.request_count() >= 20).await;
    let (c0, r0) = (primary.connection_count(), primary.request_count());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (c1, r1) = (primary.connection_count(), primary.request_count());
    let served = traffic.finish().await;
    // Sequential requests need one upstream connection; each lives about
    // 300 ms, so 1.5 s of traffic needs several, each used many times.
    assert!(
        c1 >= c0 + 3,
        "{} new upstream connections in 1.5 s with a 300 ms lifetime",
        c1 - c0
    );
    assert!(
        r1 - r0 > 2 * (c1 - c0),
        "connections are still reused: {} requests over {} connections",
        r1 - r0,
        c1 - c0
    );
    assert!(served >= 40, "only {served} requests were served");
    app.shutdown().await;
}
