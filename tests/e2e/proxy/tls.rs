//! Downstream TLS (`failway::tls`): handshakes with ALPN, the protocol
//! floor, hot reload by rename and by a Kubernetes-style `..data` symlink
//! swap, broken replacements that keep the old certificate, and the metrics.
//! Certificates come from a test CA made with rcgen; sockets are loopback.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use failway::config::ServerTls;
use failway::tls::{TlsAcceptor, TlsError, TlsMetrics, PROTOCOL_VERSIONS};
use prometheus::Registry;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use common::eventually_async;

const WAIT: Duration = Duration::from_secs(10);

type Ca = CertifiedIssuer<'static, KeyPair>;

fn test_ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params
        .distinguished_name
        .push(DnType::CommonName, "failway test CA");
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

/// A leaf certificate for `localhost` and its key, as PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    not_after: i64,
}

fn leaf(ca: &Ca, name: &str, not_after: Option<(i32, u8, u8)>) -> Leaf {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, name);
    if let Some((y, m, d)) = not_after {
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, ca).expect("leaf cert");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
        not_after: params.not_after.unix_timestamp(),
    }
}

/// Writes through a temporary file and a rename, as deploy tools do.
fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

fn files(dir: &Path) -> ServerTls {
    ServerTls {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    }
}

fn acceptor(cfg: &ServerTls) -> (TlsAcceptor, Registry) {
    let registry = Registry::new();
    let metrics = TlsMetrics::register(&registry).expect("register TLS metrics");
    let acceptor = TlsAcceptor::new(cfg, metrics).expect("TLS acceptor starts");
    (acceptor, registry)
}

/// A sample's value from the text exposition; `None` if the series is absent.
fn sample(registry: &Registry, series: &str) -> Option<f64> {
    let text = String::from_utf8(failway::metrics::encode(registry)).expect("utf-8 metrics");
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

fn reloads(registry: &Registry, result: &str) -> f64 {
    sample(
        registry,
        &format!("failway_tls_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or_else(|| panic!("failway_tls_reloads_total{{result={result}}} is exported"))
}

fn expiry_gauge(registry: &Registry) -> Option<f64> {
    sample(registry, "failway_tls_cert_expiry_timestamp_seconds")
}

/// A TLS echo server: every message is answered with the negotiated ALPN
/// (as the server sees it), a space, and the message.
async fn serve(acceptor: TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = match tls.get_ref().1.alpn_protocol() {
                    Some(p) => String::from_utf8_lossy(p).into_owned(),
                    None => "none".to_owned(),
                };
                let h2 = failway::tls::negotiated_h2(&tls);
                assert_eq!(h2, alpn == "h2");
                let mut buf = [0u8; 256];
                loop {
                    let n = match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut reply = format!("{alpn} ").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    if tls.write_all(&reply).await.is_err() || tls.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn client_config(
    ca: &Ca,
    alpn: &[&[u8]],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).expect("trust the test CA");
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("client versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(WAIT, async {
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    })
    .await
    .expect("handshake finishes in time")
}

async fn connect_default(addr: SocketAddr, ca: &Ca) -> TlsStream<TcpStream> {
    let config = client_config(ca, &[b"http/1.1"], rustls::ALL_VERSIONS);
    connect(addr, config).await.expect("handshake succeeds")
}

/// The leaf certificate the server presented.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone()
}

/// Sends `msg` and returns the server's reply.
async fn exchange(stream: &mut TlsStream<TcpStream>, msg: &str) -> String {
    tokio::time::timeout(WAIT, async {
        stream.write_all(msg.as_bytes()).await.expect("write");
        stream.flush().await.expect("flush");
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(msg.as_bytes()) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "server closed the connection; got {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).expect("utf-8 reply")
    })
    .await
    .expect("reply arrives in time")
}

/// Whether a fresh handshake is served `want`.
async fn serves(addr: SocketAddr, ca: &Ca, want: &CertificateDer<'static>) -> bool {
    let config = client_config(ca, &[b"http/1.1"], rustls::ALL_VERSIONS);
    match connect(addr, config).await {
        Ok(stream) => presented(&stream) == *want,
        Err(_) => false,
    }
}

#[tokio::test]
async fn alpn_selects_h2_or_http11() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = files(dir.path());
    let ca = test_ca();
    let a = leaf(&ca, "A", None);
    write_atomic(&cfg.cert, &a.cert_pem);
    write_atomic(&cfg.key, &a.key_pem);
    let (acceptor, _registry) = acceptor(&cfg);
    let addr = serve(acceptor).await;

    for (offered, expected) in [
        (vec![&b"h2"[..], b"http/1.1"], "h2"),
        (vec![&b"h2"[..]], "h2"),
        (vec![&b"http/1.1"[..], b"h2"], "h2"), // the server's preference wins
        (vec![&b"http/1.1"[..]], "http/1.1"),
        (vec![], "none"),
    ] {
        let config = client_config(&ca, &offered, rustls::ALL_VERSIONS);
        let mut stream = connect(addr, config).await.expect("handshake succeeds");
        let client_view = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let expected_bytes = (expected != "none").then(|| expected.as_bytes().to_vec());
        assert_eq!(client_view, expected_bytes, "offered {offered:?}");
        assert_eq!(exchange(&mut stream, "hi").await, format!("{expected} hi"));
        assert_eq!(presented(&stream), a.der);
    }

    // An ALPN protocol failway does not speak is refused.
    let config = client_config(&ca, &[b"spdy/3"], rustls::ALL_VERSIONS);
    assert!(connect(addr, config).await.is_err());
}

#[tokio::test]
async fn only_tls12_and_tls13_are_accepted() {
    let versions: Vec<ProtocolVersion> = PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
    assert_eq!(
        versions,
        [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2]
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = files(dir.path());
    let ca = test_ca();
    let a = leaf(&ca, "A", None);
    write_atomic(&cfg.cert, &a.cert_pem);
    write_atomic(&cfg.key, &a.key_pem);
    let (acceptor, _registry) = acceptor(&cfg);
    let addr = serve(acceptor).await;

    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&ca, &[b"h2"], &[version]);
        let mut stream = connect(addr, config).await.expect("handshake succeeds");
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
        assert_eq!(exchange(&mut stream, "v").await, "h2 v");
    }

    // A ClientHello that offers TLS 1.1 at most (no supported_versions
    // extension) is answered with a fatal protocol_version alert, while the
    // same hello offering TLS 1.2 gets a ServerHello.
    let refused = first_bytes(addr, &legacy_client_hello([0x03, 0x02]), 7).await;
    assert_eq!(refused[0], 0x15, "an alert record, not a ServerHello");
    assert_eq!(&refused[5..7], &[0x02, 70], "fatal protocol_version");
    let control = first_bytes(addr, &legacy_client_hello([0x03, 0x03]), 11).await;
    assert_eq!(control[0], 0x16, "a handshake record");
    assert_eq!(control[5], 0x02, "ServerHello");
    assert_eq!(&control[9..11], &[0x03, 0x03], "TLS 1.2 chosen");
}

/// Sends `request` on a fresh connection and returns the first `n` bytes
/// of the answer.
async fn first_bytes(addr: SocketAddr, request: &[u8], n: usize) -> Vec<u8> {
    tokio::time::timeout(WAIT, async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request).await.expect("write");
        let mut got = vec![0u8; n];
        tcp.read_exact(&mut got).await.expect("an answer");
        got
    })
    .await
    .expect("answer in time")
}

/// A TLS 1.2-style ClientHello record with `client_version` and no
/// supported_versions extension, otherwise acceptable to failway.
fn legacy_client_hello(client_version: [u8; 2]) -> Vec<u8> {
    fn with_len16(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }
    fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(with_len16(body));
        out
    }
    let mut hello = client_version.to_vec();
    hello.extend([0x42; 32]); // random
    hello.push(0); // no session ID
                   // ECDHE-ECDSA/RSA AES-128-GCM, ECDHE-RSA AES-128-CBC, RSA AES-128-CBC.
    hello.extend(with_len16(&[
        0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13, 0x00, 0x2f,
    ]));
    hello.extend([0x01, 0x00]); // null compression
    let mut extensions = Vec::new();
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256.
    extensions.extend(extension(0x000d, &with_len16(&[4, 3, 8, 4, 4, 1])));
    // supported_groups: x25519, secp256r1.
    extensions.extend(extension(0x000a, &with_len16(&[0x00, 0x1d, 0x00, 0x17])));
    // ec_point_formats: uncompressed.
    extensions.extend(extension(0x000b, &[0x01, 0x00]));
    hello.extend(with_len16(&extensions));

    let mut handshake = vec![0x01];
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(with_len16(&handshake));
    record
}

#[tokio::test]
async fn rotation_by_rename_serves_the_new_certificate_and_keeps_old_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = files(dir.path());
    let ca = test_ca();
    let a = leaf(&ca, "A", Some((2031, 3, 4)));
    let b = leaf(&ca, "B", Some((2032, 5, 6)));
    write_atomic(&cfg.cert, &a.cert_pem);
    write_atomic(&cfg.key, &a.key_pem);
    let (acceptor, registry) = acceptor(&cfg);
    let addr = serve(acceptor.clone()).await;

    let mut old = connect_default(addr, &ca).await;
    assert_eq!(presented(&old), a.der);
    assert_eq!(exchange(&mut old, "before").await, "http/1.1 before");

    write_atomic(&cfg.key, &b.key_pem);
    write_atomic(&cfg.cert, &b.cert_pem);
    acceptor.reload().expect("the new pair loads");

    let new = connect_default(addr, &ca).await;
    assert_eq!(presented(&new), b.der, "new handshakes get certificate B");
    assert_eq!(exchange(&mut old, "after").await, "http/1.1 after");
    assert_eq!(reloads(&registry, "success"), 1.0);
    assert_eq!(reloads(&registry, "error"), 0.0);
    assert_eq!(acceptor.expiry_unix(), Some(b.not_after));
    assert_eq!(expiry_gauge(&registry), Some(b.not_after as f64));
}

/// The layout kubelet gives a mounted secret: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<timestamp>/`, where an update writes a new timestamped
/// directory and renames a fresh `..data` symlink over the old one.
struct SecretMount {
    dir: PathBuf,
    versions: u32,
}

impl SecretMount {
    fn new(dir: &Path, leaf: &Leaf) -> SecretMount {
        let mut mount = SecretMount {
            dir: dir.to_owned(),
            versions: 0,
        };
        mount.publish(&leaf.cert_pem, &leaf.key_pem);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name))
                .expect("file symlink");
        }
        mount
    }

    fn publish(&mut self, cert_pem: &str, key_pem: &str) {
        self.versions += 1;
        let version = format!("..2024_01_01_00_00_{:02}.{}", self.versions, self.versions);
        let version_dir = self.dir.join(&version);
        std::fs::create_dir(&version_dir).expect("version dir");
        std::fs::write(version_dir.join("tls.crt"), cert_pem).expect("write cert");
        std::fs::write(version_dir.join("tls.key"), key_pem).expect("write key");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).expect("data symlink");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
    }
}

#[tokio::test]
async fn kubernetes_secret_swap_is_picked_up_by_the_watcher() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = files(dir.path());
    let ca = test_ca();
    let a = leaf(&ca, "A", None);
    let b = leaf(&ca, "B", Some((2030, 1, 2)));
    let mut mount = SecretMount::new(dir.path(), &a);
    let (acceptor, registry) = acceptor(&cfg);
    let addr = serve(acceptor.clone()).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = acceptor.spawn_reloader(Duration::from_millis(20), stop_rx);

    let mut old = connect_default(addr, &ca).await;
    assert_eq!(presented(&old), a.der);

    // A broken update (B's certificate with A's key) is refused.
    mount.publish(&b.cert_pem, &a.key_pem);
    common::eventually(WAIT, "the watcher counts the failed reload", || {
        reloads(&registry, "error") == 1.0
    })
    .await;
    assert!(serves(addr, &ca, &a.der).await, "A stays in use");

    mount.publish(&b.cert_pem, &b.key_pem);
    eventually_async(WAIT, "new handshakes get certificate B", || {
        serves(addr, &ca, &b.der)
    })
    .await;
    assert_eq!(reloads(&registry, "success"), 1.0);
    assert_eq!(
        reloads(&registry, "error"),
        1.0,
        "the broken update counted once"
    );
    assert_eq!(expiry_gauge(&registry), Some(b.not_after as f64));
    assert_eq!(
        exchange(&mut old, "still here").await,
        "http/1.1 still here"
    );
    assert_eq!(presented(&old), a.der);

    stop_tx.send(true).expect("watcher listens");
    tokio::time::timeout(WAIT, watcher)
        .await
        .expect("the watcher stops")
        .expect("the watcher did not panic");
}

#[tokio::test]
async fn broken_replacements_keep_the_old_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = files(dir.path());
    let ca = test_ca();
    let a = leaf(&ca, "A", Some((2031, 3, 4)));
    let b = leaf(&ca, "B", None);
    write_atomic(&cfg.cert, &a.cert_pem);
    write_atomic(&cfg.key, &a.key_pem);
    let (acceptor, registry) = acceptor(&cfg);
    let addr = serve(acceptor.clone()).await;
    let garbage_key =
        "-----BEGIN PRIVATE KEY-----\nU0VDUkVUS0VZTUFURVJJQUw=\n-----END PRIVATE KEY-----\n";

    let cases: [(&str, &str, &str); 5] = [
        ("garbage certificate", "not a certificate\n", &a.key_pem),
        (
            "certificate with bad base64",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            &a.key_pem,
        ),
        ("mismatched key", &b.cert_pem, &a.key_pem),
        ("garbage key", &a.cert_pem, "SECRETKEYMATERIAL\n"),
        ("undecodable key", &a.cert_pem, garbage_key),
    ];
    for (n, (what, cert, key)) in cases.into_iter().enumerate() {
        write_atomic(&cfg.cert, cert);
        write_atomic(&cfg.key, key);
        let err = acceptor.reload().expect_err(what);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SECRETKEYMATERIAL"), "{what}: {shown}");
        assert!(
            !shown.contains("U0VDUkVUS0VZTUFURVJJQUw"),
            "{what}: {shown}"
        );
        assert_eq!(reloads(&registry, "error"), (n + 1) as f64, "{what}");
        assert!(serves(addr, &ca, &a.der).await, "{what}: A stays in use");
        assert_eq!(acceptor.expiry_unix(), Some(a.not_after), "{what}");
        assert_eq!(expiry_gauge(&registry), Some(a.not_after as f64), "{what}");
    }
    assert_eq!(reloads(&registry, "success"), 0.0);

    // The error says which key and file to fix.
    write_atomic(&cfg.cert, &b.cert_pem);
    write_atomic(&cfg.key, &a.key_pem);
    let err = acceptor.reload().expect_err("mismatch");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("proxy.tls.key"), "{shown}");
    assert!(shown.contains(&cfg.key.display().to_string()), "{shown}");
    assert!(shown.contains(&cfg.cert.display().to_string()), "{shown}");

    // Fixed files load again.
    write_atomic(&cfg.key, &b.key_pem);
    acceptor.reload().expect("B loads");
    assert!(serves(addr, &ca, &b.der).await);
    assert_eq!(reloads(&registry, "success"), 1.0);
}

#[test]
fn start_up_errors_name_the_key_and_the_file_but_not_key_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = files(dir.path());
    let ca = test_ca();
    let a = leaf(&ca, "A", None);
    let start = |cfg: &ServerTls| {
        let metrics = TlsMetrics::register(&Registry::new()).expect("register");
        match TlsAcceptor::new(cfg, metrics) {
            Ok(_) => panic!("start-up should fail"),
            Err(e) => e.to_string(),
        }
    };

    // Missing certificate.
    let shown = start(&cfg);
    assert!(shown.contains("proxy.tls.cert"), "{shown}");
    assert!(shown.contains(&cfg.cert.display().to_string()), "{shown}");

    // Missing key.
    write_atomic(&cfg.cert, &a.cert_pem);
    let shown = start(&cfg);
    assert!(shown.contains("proxy.tls.key"), "{shown}");
    assert!(shown.contains(&cfg.key.display().to_string()), "{shown}");

    // A certificate where the key should be: not a key, and not echoed.
    write_atomic(&cfg.key, &a.cert_pem);
    let shown = start(&cfg);
    assert!(shown.contains("proxy.tls.key"), "{shown}");
    assert!(shown.contains(&cfg.key.display().to_string()), "{shown}");
    assert!(!shown.contains("BEGIN"), "{shown}");

    // The key where the certificate should be.
    write_atomic(&cfg.cert, &a.key_pem);
    write_atomic(&cfg.key, &a.key_pem);
    let shown = start(&cfg);
    assert!(shown.contains("proxy.tls.cert"), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

#[test]
fn expiry_gauge_is_the_leaf_not_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = files(dir.path());
    let ca = test_ca();
    // UTCTime (before 2050) and GeneralizedTime (rcgen's default, 4096).
    let utc = leaf(&ca, "A", Some((2031, 3, 4)));
    let generalized = leaf(&ca, "B", None);
    assert_eq!(utc.not_after, 1_930_348_800); // 2031-03-04T00:00:00Z
    assert!(generalized.not_after > 2_524_608_000);

    write_atomic(&cfg.cert, &utc.cert_pem);
    write_atomic(&cfg.key, &utc.key_pem);
    let (acceptor, registry) = acceptor(&cfg);
    assert_eq!(acceptor.expiry_unix(), Some(utc.not_after));
    assert_eq!(expiry_gauge(&registry), Some(utc.not_after as f64));

    write_atomic(&cfg.cert, &generalized.cert_pem);
    write_atomic(&cfg.key, &generalized.key_pem);
    acceptor.reload().expect("reload");
    assert_eq!(acceptor.expiry_unix(), Some(generalized.not_after));
    assert_eq!(expiry_gauge(&registry), Some(generalized.not_after as f64));
}
