//! A TLS fake upstream and the test PKI behind it, for end-to-end tests of
//! failway's upstream TLS (private CAs, client certificates, SNI) and its
//! downstream TLS listener.
//!
//! [`TlsUpstream`] listens on `127.0.0.1:0`, reads each ClientHello before
//! choosing to go on (so the SNI is recorded even when the handshake later
//! fails), finishes the handshake with a given chain and key (rustls with the
//! `ring` provider), optionally requiring a client certificate issued by a
//! given CA, and answers every HTTP/1.1 request `200 tls ok` through hyper.
//! It records what a test asserts on: the SNI of every ClientHello, the
//! client chain of every completed handshake, why failed handshakes failed,
//! every byte of application data it decrypted (so "zero bytes sent" is
//! exact), and every parsed request.
//!
//! [`TestCa`] and [`Leaf`] make certificates with rcgen; [`write_pem`] puts
//! them on disk for failway's file-based configuration.
//!
//! It deliberately speaks HTTP/1.1 only (ALPN `http/1.1`), never sends a
//! client certificate request without a CA, and has no scripted failures:
//! what it refuses is decided by TLS alone.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::upstream::Recorded;

/// The body of every answer.
pub const TLS_OK: &str = "tls ok";

/// A private certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        TestCa { issuer }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, common_name: &str, names: &[&str]) -> Leaf {
        self.leaf(common_name, names, &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A certificate good for both ends, as a server that also dials itself
    /// with its own certificate needs (etcd's JSON gateway does).
    pub fn server_and_client(&self, common_name: &str, names: &[&str]) -> Leaf {
        self.leaf(
            common_name,
            names,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate.
    pub fn client(&self, common_name: &str) -> Leaf {
        self.leaf(common_name, &[], &[ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn leaf(&self, common_name: &str, names: &[&str], usage: &[ExtendedKeyUsagePurpose]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = usage.to_vec();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

/// A leaf certificate and its private key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    /// PKCS#8.
    key_der: Vec<u8>,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_pem(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

#[derive(Default)]
struct Shared {
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// The SNI of every ClientHello read, `None` when the client sent none.
    snis: Mutex<Vec<Option<String>>>,
    /// The client chain of every completed handshake (empty: none sent).
    client_chains: Mutex<Vec<Vec<CertificateDer<'static>>>>,
    /// Why each failed handshake failed.
    handshake_errors: Mutex<Vec<String>>,
    /// Decrypted application data, in arrival order, across connections.
    app_data: Mutex<Vec<u8>>,
    requests: Mutex<Vec<Recorded>>,
}

struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.tasks).abort_all();
    }
}

/// The running fake; clones share it, and the last one dropped stops it.
#[derive(Clone)]
pub struct TlsUpstream {
    handle: Arc<Handle>,
}

/// What a [`TlsUpstream`] presents and requires.
pub struct TlsUpstreamConfig {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Require a client certificate issued by this CA.
    pub client_ca: Option<CertificateDer<'static>>,
}

impl TlsUpstream {
    /// Serves `leaf` (its chain is the leaf alone; clients trust the CA).
    pub async fn start(leaf: &Leaf) -> TlsUpstream {
        Self::start_with(TlsUpstreamConfig {
            chain: vec![leaf.der.clone()],
            key: leaf.key(),
            client_ca: None,
        })
        .await
    }

    /// Serves `leaf` and requires a client certificate issued by `client_ca`.
    pub async fn start_mtls(leaf: &Leaf, client_ca: &TestCa) -> TlsUpstream {
        Self::start_with(TlsUpstreamConfig {
            chain: vec![leaf.der.clone()],
            key: leaf.key(),
            client_ca: Some(client_ca.der()),
        })
        .await
    }

    pub async fn start_with(cfg: TlsUpstreamConfig) -> TlsUpstream {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match cfg.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca).expect("trust the client CA");
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("client certificate verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(cfg.chain, cfg.key)
            .expect("server certificate and key match");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS fake upstream on 127.0.0.1:0");
        let addr = listener.local_addr().expect("TLS fake upstream local addr");
        let shared = Arc::new(Shared::default());
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let accept = accept_loop(listener, config, Arc::clone(&shared), Arc::clone(&tasks));
        lock(&tasks).spawn(accept);
        TlsUpstream {
            handle: Arc::new(Handle {
                addr,
                shared,
                tasks,
            }),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    pub fn port(&self) -> u16 {
        self.handle.addr.port()
    }

    /// TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.handle.shared.connections.load(Ordering::SeqCst)
    }

    /// The SNI of every ClientHello so far.
    pub fn snis(&self) -> Vec<Option<String>> {
        lock(&self.handle.shared.snis).clone()
    }

    /// The client chain of every completed handshake (an empty chain: the
    /// client sent no certificate).
    pub fn client_chains(&self) -> Vec<Vec<CertificateDer<'static>>> {
        lock(&self.handle.shared.client_chains).clone()
    }

    /// Completed handshakes so far.
    pub fn handshake_count(&self) -> usize {
        lock(&self.handle.shared.client_chains).len()
    }

    /// Why each failed handshake failed, as rustls put it.
    pub fn handshake_errors(&self) -> Vec<String> {
        lock(&self.handle.shared.handshake_errors).clone()
    }

    /// Application data received after handshakes, all connections together.
    pub fn app_data(&self) -> Vec<u8> {
        lock(&self.handle.shared.app_data).clone()
    }

    pub fn app_byte_count(&self) -> usize {
        lock(&self.handle.shared.app_data).len()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.handle.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.handle.shared.requests).len()
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<JoinSet<()>>>,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            // Out of descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let conn = serve(tcp, Arc::clone(&config), Arc::clone(&shared));
        let mut tasks = lock(&tasks);
        // Reap finished connections so a long test does not accumulate them.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(conn);
    }
}

async fn serve(tcp: TcpStream, config: Arc<ServerConfig>, shared: Arc<Shared>) {
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = match acceptor.await {
        Ok(start) => start,
        Err(e) => {
            lock(&shared.handshake_errors).push(format!("reading ClientHello: {e}"));
            return;
        }
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    lock(&shared.snis).push(sni);
    let tls = match start.into_stream(config).await {
        Ok(tls) => tls,
        Err(e) => {
            lock(&shared.handshake_errors).push(e.to_string());
            return;
        }
    };
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    lock(&shared.client_chains).push(chain);

    let io = TokioIo::new(Recording {
        inner: tls,
        shared: Arc::clone(&shared),
    });
    let svc = service_fn(move |req| handle(Arc::clone(&shared), req));
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(io, svc)
        .await;
}

async fn handle(
    shared: Arc<Shared>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let recorded = Recorded {
        method: parts.method.as_str().to_owned(),
        uri: parts.uri.to_string(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body_len: body.len(),
        body: body.to_vec(),
    };
    lock(&shared.requests).push(recorded);
    Ok(http::Response::new(Full::new(Bytes::from_static(
        TLS_OK.as_bytes(),
    ))))
}

/// The TLS stream as hyper sees it: every decrypted byte read is also
/// appended to the application-data log.
struct Recording<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            lock(&this.shared.app_data).extend_from_slice(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A poisoned lock only means another test task panicked; the data is still
/// what the fake recorded.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
