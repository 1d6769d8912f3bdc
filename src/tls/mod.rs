//! Downstream TLS for gateway mode (`proxy.tls = { cert, key }`): TLS 1.3
//! and 1.2 only (rustls with the ring provider), ALPN `h2` then `http/1.1`,
//! and a certificate and key that are reloaded when their files change.
//!
//! Rotation without dropping connections: every handshake asks a resolver
//! for the pair in use, held in an `ArcSwap`. A reload builds the new pair
//! completely (chain parsed, key loaded, key checked against the leaf) and
//! only then swaps it in; established connections keep the session they
//! negotiated. A new pair that fails any step leaves the old one in use, is
//! logged at `error` with file paths only (never key bytes), and is counted
//! in `failway_tls_reloads_total{result="error"}`.
//!
//! Change detection polls the files' stamps (`watched_file`: canonical path,
//! inode, size, times) instead of using inotify: a Kubernetes secret mount swaps its
//! `..data` symlink, which moves the canonical path, and a plain
//! write-and-rename changes the inode; polling sees both on any filesystem
//! for a few `stat` calls a second, with no extra dependency.
//!
//! The leaf's notAfter, for `failway_tls_cert_expiry_timestamp_seconds`, is
//! read with `x509-cert` (RustCrypto's X.509 types, fewer crates than
//! `x509-parser`); rustls itself exposes no validity dates.
//!
//! Deliberately not here: client certificates (mTLS), choosing among several
//! certificates by SNI, OCSP stapling, and a handshake timeout (the accept
//! loop bounds [`TlsAcceptor::accept`] with its own deadline).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use x509_cert::der::Decode;

use crate::config::ServerTls;
use crate::watched_file::{self, Stamp};

/// The protocol versions offered, newest first; nothing below TLS 1.2.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// ALPN protocol ID for HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol ID for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The shortest polling period the reloader accepts.
const MIN_POLL: Duration = Duration::from_millis(10);

const CERT_KEY: &str = "proxy.tls.cert";
const KEY_KEY: &str = "proxy.tls.key";

/// Why a certificate and key could not be (re)loaded. Each variant names the
/// configuration key and the file; none carries private-key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{CERT_KEY}: {} is not valid PEM: {source}", path.display())]
    CertPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{CERT_KEY}: {} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{CERT_KEY}: {} holds an unusable leaf certificate: {source}", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    // The PEM error is dropped on purpose: its text can quote the file.
    #[error("{KEY_KEY}: {} holds no readable PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    KeyPem { path: PathBuf },
    #[error("{KEY_KEY}: {} holds a private key that is malformed or not RSA, ECDSA or Ed25519", path.display())]
    KeyUnsupported { path: PathBuf },
    #[error("{KEY_KEY}: the key in {} does not match the certificate in {} ({CERT_KEY})", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("proxy.tls: cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// `failway_tls_reloads_total{result}` and
/// `failway_tls_cert_expiry_timestamp_seconds`.
#[derive(Clone)]
pub struct TlsMetrics {
    reload_success: IntCounter,
    reload_error: IntCounter,
    /// No labels; a vector only so that the series can be absent when the
    /// certificate's notAfter cannot be read.
    expiry: IntGaugeVec,
}

impl TlsMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<TlsMetrics> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "failway_tls_reloads_total",
                "Reloads of the proxy.tls certificate and key, by result (error: the previous pair stays in use).",
            ),
            &["result"],
        )?;
        let expiry = IntGaugeVec::new(
            Opts::new(
                "failway_tls_cert_expiry_timestamp_seconds",
                "notAfter of the proxy.tls leaf certificate in use, in unix seconds.",
            ),
            &[],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(expiry.clone()))?;
        Ok(TlsMetrics {
            reload_success: reloads.with_label_values(&["success"]),
            reload_error: reloads.with_label_values(&["error"]),
            expiry,
        })
    }

    fn set_expiry(&self, not_after: Option<i64>) {
        match not_after {
            Some(t) => self.expiry.with_label_values::<&str>(&[]).set(t),
            None => self.expiry.reset(),
        }
    }
}

/// A loaded pair and the leaf's notAfter.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    not_after: Option<i64>,
}

/// Hands every handshake the pair in use at that moment.
#[derive(Debug)]
struct Resolver {
    current: ArcSwap<Loaded>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

/// What the watcher compares between polls (`None`: a file is missing).
type Fingerprint = [Option<Stamp>; 2];

struct Inner {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    acceptor: tokio_rustls::TlsAcceptor,
    metrics: TlsMetrics,
    /// The files as of the last load attempt; the lock also serializes
    /// reloads (watcher and SIGHUP).
    seen: Mutex<Fingerprint>,
}

/// The downstream TLS acceptor; cheap to clone.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: Arc<Inner>,
}

impl TlsAcceptor {
    /// Loads the certificate chain and key now; an error names the file and
    /// its key (`proxy.tls.cert` / `proxy.tls.key`).
    pub fn new(cfg: &ServerTls, metrics: TlsMetrics) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = fingerprint(&cfg.cert, &cfg.key);
        let loaded = load(&cfg.cert, &cfg.key, &provider)?;
        metrics.set_expiry(loaded.not_after);
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(loaded),
        });
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Ok(TlsAcceptor {
            inner: Arc::new(Inner {
                cert_path: cfg.cert.clone(),
                key_path: cfg.key.clone(),
                provider,
                resolver,
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                metrics,
                seen: Mutex::new(seen),
            }),
        })
    }

    /// Polls the files every `every` (at least 10 ms) and reloads when they
    /// change, until `stop` turns true or its sender is dropped. The
    /// filesystem work runs on the blocking pool.
    pub fn spawn_reloader(
        &self,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(MIN_POLL));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if *stop.borrow_and_update() {
                    return;
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = stop.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                }
                let this = this.clone();
                let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            }
        })
    }

    /// Re-reads both files now (the watcher and SIGHUP call this). `Ok`: the
    /// new pair is in use. On error the previous pair stays in use. The
    /// outcome is logged and counted here; callers need not log it again.
    pub fn reload(&self) -> Result<(), TlsError> {
        let inner = &*self.inner;
        let mut seen = lock(&inner.seen);
        // Taken before reading, so a write that lands after the read is a
        // change at the next poll rather than lost.
        *seen = fingerprint(&inner.cert_path, &inner.key_path);
        match load(&inner.cert_path, &inner.key_path, &inner.provider) {
            Ok(loaded) => {
                let not_after = loaded.not_after;
                inner.resolver.current.store(Arc::new(loaded));
                inner.metrics.set_expiry(not_after);
                inner.metrics.reload_success.inc();
                tracing::info!(
                    cert = %inner.cert_path.display(),
                    key = %inner.key_path.display(),
                    not_after = ?not_after,
                    "TLS certificate reloaded"
                );
                Ok(())
            }
            Err(e) => {
                inner.metrics.reload_error.inc();
                tracing::error!(
                    error = %e,
                    "TLS certificate reload failed; the previous certificate stays in use"
                );
                Err(e)
            }
        }
    }

    /// Performs the server handshake. The stream's
    /// `get_ref().1.alpn_protocol()` is `Some(b"h2")` for HTTP/2; anything
    /// else (`http/1.1` or no ALPN) is HTTP/1.1, see [`negotiated_h2`].
    pub async fn accept<IO>(&self, io: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.inner.acceptor.accept(io).await
    }

    /// The in-use leaf certificate's notAfter, unix seconds; `None` if it
    /// could not be read from the certificate.
    pub fn expiry_unix(&self) -> Option<i64> {
        self.inner.resolver.current.load().not_after
    }

    fn reload_if_changed(&self) {
        let now = fingerprint(&self.inner.cert_path, &self.inner.key_path);
        if *lock(&self.inner.seen) == now {
            return;
        }
        // Logged and counted inside.
        let _ = self.reload();
    }
}

/// Whether the client and failway agreed on HTTP/2 over this connection.
pub fn negotiated_h2<IO>(stream: &TlsStream<IO>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(ALPN_H2)
}

/// A poisoned lock only means a reload panicked; the fingerprint is still
/// usable (at worst it triggers one more reload).
fn lock(m: &Mutex<Fingerprint>) -> MutexGuard<'_, Fingerprint> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn fingerprint(cert: &Path, key: &Path) -> Fingerprint {
    [watched_file::stamp(cert), watched_file::stamp(key)]
}

fn load(cert_path: &Path, key_path: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let cert_pem = fs::read(cert_path).map_err(|source| TlsError::Read {
        key: CERT_KEY,
        path: cert_path.to_owned(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::CertPem {
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }

    let key_pem = fs::read(key_path).map_err(|source| TlsError::Read {
        key: KEY_KEY,
        path: key_path.to_owned(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::KeyPem {
        path: key_path.to_owned(),
    })?;
    drop(key_pem);
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|_| TlsError::KeyUnsupported {
                path: key_path.to_owned(),
            })?;

    // Read before `chain` moves into the key; logged once the pair is good.
    let expiry = not_after(&chain[0]);
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot expose its public half; the handshake
        // is then the only check, as in rustls' own `CertifiedKey::from_der`.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(source) => {
            return Err(TlsError::BadCertificate {
                path: cert_path.to_owned(),
                source,
            })
        }
    }
    let not_after = expiry
        .inspect_err(|e| {
            tracing::warn!(
                cert = %cert_path.display(),
                error = %e,
                "cannot read notAfter from the leaf certificate; failway_tls_cert_expiry_timestamp_seconds is absent"
            );
        })
        .ok();
    Ok(Loaded {
        key: Arc::new(certified),
        not_after,
    })
}

/// Loads the pair as a start would, for `failway check`: the leaf's
/// notAfter (unix seconds) when it can be read.
pub fn check_pair(cfg: &ServerTls) -> Result<Option<i64>, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    load(&cfg.cert, &cfg.key, &provider).map(|l| l.not_after)
}

/// The notAfter (unix seconds) of a DER certificate, if it can be read.
pub fn cert_not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    not_after(cert).ok()
}

/// The notAfter of a DER-encoded X.509 certificate, in unix seconds. Only
/// the gauge depends on it: rustls has parsed the certificate for real, so a
/// certificate this cannot decode (x509-cert is strict DER, and its times
/// span 1970-9999 only) is still served.
fn not_after(cert: &CertificateDer<'_>) -> Result<i64, x509_cert::der::Error> {
    let cert = x509_cert::Certificate::from_der(cert.as_ref())?;
    let since_epoch = cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration();
    // The DER time types end at year 9999, well inside i64.
    Ok(i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_expiring(year: i32, month: u8, day: u8) -> (CertificateDer<'static>, i64) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("certificate");
        (cert.der().clone(), params.not_after.unix_timestamp())
    }

    #[test]
    fn not_after_of_real_certificates_in_both_time_forms() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 on,
        // as RFC 5280 requires.
        let (utc, expected) = cert_expiring(2031, 3, 4);
        assert_eq!(expected, 1_930_348_800); // 2031-03-04T00:00:00Z
        assert_eq!(not_after(&utc).unwrap(), expected);
        let (utc_leap, expected) = cert_expiring(2024, 2, 29);
        assert_eq!(expected, 1_709_164_800);
        assert_eq!(not_after(&utc_leap).unwrap(), expected);
        let (generalized, expected) = cert_expiring(2050, 1, 1);
        assert_eq!(expected, 2_524_608_000);
        assert_eq!(not_after(&generalized).unwrap(), expected);
    }

    #[test]
    fn malformed_certificates_are_errors_not_panics() {
        let (good, _) = cert_expiring(2031, 3, 4);
        for cut in 0..good.len() {
            let truncated = CertificateDer::from(&good[..cut]);
            assert!(not_after(&truncated).is_err(), "truncated at {cut}");
        }
        let mut set = good.to_vec();
        set[0] = 0x31; // SET instead of SEQUENCE
        let mut trailing = good.to_vec();
        trailing.push(0);
        for (bad, what) in [
            (vec![], "empty"),
            (vec![0x30, 0x80, 0x00, 0x00], "indefinite length"),
            (vec![0x30, 0x85, 1, 0, 0, 0, 0], "5 length bytes"),
            (vec![0x1f, 0x01, 0x00], "high tag number"),
            (set, "SET"),
            (trailing, "trailing byte"),
            (b"-----BEGIN CERTIFICATE-----".to_vec(), "PEM, not DER"),
        ] {
            assert!(not_after(&CertificateDer::from(bad)).is_err(), "{what}");
        }
        // Flipped bytes anywhere: an error or some time, never a panic.
        for i in 0..good.len() {
            let mut flipped = good.to_vec();
            flipped[i] ^= 0xff;
            let _ = not_after(&CertificateDer::from(flipped));
        }
    }
}
