//! The files a configuration names, as one list of (key path, kind), and
//! what `failway check` verifies for each kind: what a start (or the first
//! use) would do with the file, without creating or changing anything.
//!
//! A new `*_file` key joins [`named_files`] with its kind; nothing else
//! needs to change.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Config, ConfigError, ServerTls, UpstreamTls};

/// What failway does with a file, and so what checking it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// Read whole as a secret (a token, a password): readable, not empty,
    /// not a folder. Its contents are never printed.
    Secret,
    /// A list of etcd endpoints: readable, every entry an http(s) origin.
    Endpoints,
    /// PEM certificates (a CA bundle, a client chain): at least one, each
    /// parsed; the first one's expiry is printed.
    Certificates,
    /// One PEM private key.
    PrivateKey,
    /// The server certificate, checked with its key (`key`) as the
    /// listener loads them.
    ServerPair { key: PathBuf },
    /// A file failway writes (atomically, beside itself): its folder exists
    /// and is writable; the file, if present, is a readable file.
    Written,
}

/// One file of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile {
    /// The key that names it (`admin.token_file`, `service[1].health.authorization_file`).
    pub key: String,
    pub path: PathBuf,
    pub kind: FileKind,
}

/// Every file `cfg` names, in the order of its sections.
pub fn named_files(cfg: &Config) -> Vec<NamedFile> {
    let mut out = Vec::new();
    let mut add = |key: String, path: &Option<PathBuf>, kind: FileKind| {
        if let Some(path) = path {
            out.push(NamedFile {
                key,
                path: path.clone(),
                kind,
            });
        }
    };
    if let Some(ServerTls { cert, key }) = &cfg.proxy.tls {
        add(
            "proxy.tls.cert".into(),
            &Some(cert.clone()),
            FileKind::ServerPair { key: key.clone() },
        );
    }
    add(
        "admin.token_file".into(),
        &cfg.admin.token_file,
        FileKind::Secret,
    );
    add("state.path".into(), &cfg.state.path, FileKind::Written);
    add(
        "key_check.authorization_file".into(),
        &cfg.key_check.authorization_file,
        FileKind::Secret,
    );
    if let Some(fleet) = &cfg.fleet {
        add(
            "fleet.endpoints_file".into(),
            &fleet.endpoints_file,
            FileKind::Endpoints,
        );
        add(
            "fleet.password_file".into(),
            &fleet.password_file,
            FileKind::Secret,
        );
        tls_files(&mut add, "fleet.tls", fleet.tls.as_ref());
    }
    let blocks = cfg.has_service_blocks();
    for (i, svc) in cfg.services().iter().enumerate() {
        let at = if blocks {
            format!("service[{i}].")
        } else {
            String::new()
        };
        add(
            format!("{at}health.authorization_file"),
            &svc.health.authorization_file,
            FileKind::Secret,
        );
        for (region, up) in [
            ("primary", &svc.upstreams.primary),
            ("replica", &svc.upstreams.replica),
        ] {
            let section = format!("{at}upstreams.{region}.tls");
            tls_files(&mut add, &section, up.tls.as_ref());
        }
    }
    out
}

fn tls_files(
    add: &mut impl FnMut(String, &Option<PathBuf>, FileKind),
    section: &str,
    tls: Option<&UpstreamTls>,
) {
    let Some(tls) = tls else { return };
    add(format!("{section}.ca"), &tls.ca, FileKind::Certificates);
    add(
        format!("{section}.client_cert"),
        &tls.client_cert,
        FileKind::Certificates,
    );
    add(
        format!("{section}.client_key"),
        &tls.client_key,
        FileKind::PrivateKey,
    );
}

/// What checking one file found: `Ok` with a note to print (an expiry), or
/// the problem.
type Finding = Result<Option<String>, String>;

/// Checks one file as its kind says: a note to print (an expiry), or the
/// problem, naming the key.
pub fn check(file: &NamedFile) -> Result<Option<String>, ConfigError> {
    if let FileKind::ServerPair { key } = &file.kind {
        let pair = ServerTls {
            cert: file.path.clone(),
            key: key.clone(),
        };
        // The error names proxy.tls.cert or proxy.tls.key itself.
        return crate::tls::check_pair(&pair)
            .map(|not_after| not_after.map(expires))
            .map_err(|e| ConfigError::new("", e.to_string()));
    }
    check_kind(&file.path, &file.kind).map_err(|m| ConfigError::new(file.key.clone(), m))
}

fn check_kind(path: &Path, kind: &FileKind) -> Finding {
    match kind {
        FileKind::Secret => read_nonempty(path).map(|_| None),
        FileKind::Endpoints => {
            let text = read_nonempty(path)?;
            let text = String::from_utf8(text)
                .map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
            crate::failover::fleet::parse_endpoints(&text)
                .map(|list| Some(format!("{} endpoint(s)", list.len())))
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        FileKind::Certificates => certificates(path),
        FileKind::PrivateKey => {
            let pem = read_nonempty(path)?;
            // The parser's error is left out: it can quote the file.
            PrivateKeyDer::from_pem_slice(&pem)
                .map(|_| None)
                .map_err(|_| {
                    format!(
                        "{}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                        path.display()
                    )
                })
        }
        FileKind::ServerPair { .. } => Ok(None),
        FileKind::Written => writable_place(path).map(|_| None),
    }
}

/// The file's bytes; an error for a folder, an unreadable or an empty file,
/// with the operating system's own words.
fn read_nonempty(path: &Path) -> Result<Vec<u8>, String> {
    if path.is_dir() {
        return Err(format!("{} is a folder, not a file", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(bytes)
}

fn certificates(path: &Path) -> Finding {
    let pem = read_nonempty(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not valid PEM: {e}", path.display()))?;
    let Some(first) = certs.first() else {
        return Err(format!("{} holds no PEM certificate", path.display()));
    };
    let note = crate::tls::cert_not_after(first).map(expires);
    Ok(Some(match note {
        Some(n) if certs.len() > 1 => format!("{} certificates; the first {n}", certs.len()),
        Some(n) => n,
        None => format!("{} certificate(s)", certs.len()),
    }))
}

fn expires(unix: i64) -> String {
    let when = u64::try_from(unix)
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|_| format!("unix time {unix}"));
    #[allow(clippy::disallowed_methods)] // a one-off comparison with the wall clock
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|now| i64::try_from(now.as_secs()).is_ok_and(|n| n > unix));
    if past {
        format!("certificate EXPIRED {when}")
    } else {
        format!("certificate expires {when}")
    }
}

/// Where failway will write `path`: its folder exists and is writable by
/// this process (the atomic write puts a temporary file beside it); an
/// existing file is a readable file.
fn writable_place(path: &Path) -> Result<(), String> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let meta =
        std::fs::metadata(folder).map_err(|e| format!("folder {}: {e}", folder.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a folder", folder.display()));
    }
    rustix::fs::accessat(
        rustix::fs::CWD,
        folder,
        rustix::fs::Access::WRITE_OK,
        rustix::fs::AtFlags::EACCESS,
    )
    .map_err(|e| {
        format!(
            "folder {}: not writable by this user: {}",
            folder.display(),
            std::io::Error::from(e)
        )
    })?;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(format!("{} is a folder, not a file", path.display())),
        Ok(_) => std::fs::File::open(path)
            .map(|_| ())
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Err(_) => Ok(()),
    }
}
