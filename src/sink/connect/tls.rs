//! TLS for PostgreSQL connections with libpq's meanings, on rustls.
//!
//! - `sslmode`: `disable`; `allow` and `prefer` (TLS when the server offers it); `require`
//!   (TLS always). In these modes the certificate is not judged — any certificate the server
//!   shows is accepted, X.509 v1 and expired self-signed ones included — unless a root file
//!   exists (`sslrootcert`, else `~/.postgresql/root.crt`), which makes them check the chain
//!   as `verify-ca` does. `verify-ca` checks the chain against the root file only (no public
//!   CA, no host name); `verify-full` also the host name, against the certificate's DNS and IP
//!   names, or its common name when it has none. `sslrootcert=system` trusts the operating
//!   system's store and requires `verify-full`.
//! - A certificate listed in the root file itself is trusted as it is (PostgreSQL's docs make
//!   self-signed server certificates that are their own root), within its validity dates.
//! - `sslcert`/`sslkey` (else `~/.postgresql/postgresql.crt` and `.key`, when they exist):
//!   a client certificate, its key refused when others may read it, as libpq does.
//!
//! Why a handshake failed is kept and reported in libpq's words, not rustls's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

mod verify;
use verify::LibpqVerifier;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = TlsSetupError;

    fn from_str(text: &str) -> Result<SslMode, TlsSetupError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(TlsSetupError::Mode(other.to_string())),
        })
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// What the connection's TLS settings say, before any file is read.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    /// `None`: not given (libpq's default, `prefer`, or `verify-full` with `sslrootcert=system`).
    pub mode: Option<SslMode>,
    /// A file of root certificates, or `system`.
    pub root_cert: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `TLSv1.2` or `TLSv1.3` (rustls speaks no older TLS).
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    /// Send the host name in the handshake (`sslsni`).
    pub sni: bool,
    /// Where `~/.postgresql` is.
    pub home: Option<PathBuf>,
}

/// TLS settings that cannot work, in libpq's words where libpq has them.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    #[error(
        "invalid sslmode value: {0:?} (use disable, allow, prefer, require, verify-ca or verify-full)"
    )]
    Mode(String),
    #[error("weak sslmode \"{0}\" may not be used with sslrootcert=system (use \"verify-full\")")]
    WeakWithSystem(SslMode),
    #[error(
        "root certificate file \"{0}\" does not exist; either provide the file, use the system's \
         trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification"
    )]
    NoRootFile(PathBuf),
    #[error("could not read {what} \"{path}\": {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("certificate present, but not private key file \"{0}\"")]
    NoKey(PathBuf),
    #[error(
        "private key file \"{0}\" has group or world access; file must have permissions u=rw (0600) \
         or less if owned by the current user, or permissions u=rw,g=r (0640) or less if owned by root"
    )]
    KeyAccess(PathBuf),
    #[error("invalid {setting} value: {value:?} (use TLSv1.2 or TLSv1.3)")]
    Version {
        setting: &'static str,
        value: String,
    },
    #[error("could not set up TLS: {0}")]
    Setup(String),
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    Full,
}

/// A connector for tokio-postgres, and what tokio-postgres is to be told.
pub(crate) struct Tls {
    /// The mode in force (`prefer` when none was given, `verify-full` with `sslrootcert=system`).
    pub mode: SslMode,
    pub connector: tokio_postgres_rustls::MakeRustlsConnect,
    /// Why the last handshake refused the server's certificate, in words a user can act on.
    pub refusal: Arc<Mutex<Option<String>>>,
}

/// Reads the files the settings name and builds the connector.
///
/// # Errors
/// A mode and root that cannot go together, or a file that cannot be used.
pub(crate) fn setup(settings: &TlsSettings) -> Result<Tls, TlsSetupError> {
    let postgresql = settings.home.as_ref().map(|h| h.join(".postgresql"));
    let system = settings.root_cert.as_deref() == Some("system");
    let mode = match (settings.mode, system) {
        (None, true) => SslMode::VerifyFull,
        (Some(mode), true) if mode != SslMode::VerifyFull => {
            return Err(TlsSetupError::WeakWithSystem(mode));
        }
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    let mut root_source = "the operating system's trusted roots".to_string();
    let verify = if system {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        Verify::Full
    } else {
        let path = settings
            .root_cert
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| postgresql.as_ref().map(|p| p.join("root.crt")));
        match path.filter(|p| p.exists()) {
            Some(path) if mode != SslMode::Disable => {
                for cert in read_certs(&path, "root certificate file")? {
                    pinned.push(cert.clone());
                    // A certificate webpki cannot take as an anchor (X.509 v1) still counts
                    // when the server shows that very certificate.
                    let _ = roots.add(cert);
                }
                root_source = path.display().to_string();
                if mode == SslMode::VerifyFull {
                    Verify::Full
                } else {
                    Verify::Chain
                }
            }
            _ => match mode {
                SslMode::VerifyCa | SslMode::VerifyFull => {
                    let path = settings
                        .root_cert
                        .as_ref()
                        .map(PathBuf::from)
                        .or_else(|| postgresql.as_ref().map(|p| p.join("root.crt")))
                        .unwrap_or_else(|| PathBuf::from("~/.postgresql/root.crt"));
                    return Err(TlsSetupError::NoRootFile(path));
                }
                _ => Verify::Nothing,
            },
        }
    };
    let provider = crate::base::tls::provider();
    let refusal = Arc::new(Mutex::new(None));
    let chain = if roots.is_empty() {
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsSetupError::Setup(e.to_string()))?,
        )
    };
    let verifier = Arc::new(LibpqVerifier {
        verify,
        chain,
        pinned,
        root_source,
        provider: provider.clone(),
        refusal: refusal.clone(),
    });
    let versions = versions(settings)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsSetupError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_certificate(settings, postgresql.as_deref())? {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| TlsSetupError::Setup(format!("the client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = settings.sni;
    Ok(Tls {
        mode,
        connector: tokio_postgres_rustls::MakeRustlsConnect::new(config),
        refusal,
    })
}

fn versions(
    settings: &TlsSettings,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsSetupError> {
    let level = |value: &Option<String>, setting: &'static str, default: u8| match value.as_deref()
    {
        None | Some("") => Ok(default),
        // rustls has nothing older than 1.2: a lower minimum is met by 1.2.
        Some("TLSv1" | "TLSv1.1" | "TLSv1.2") => Ok(2),
        Some("TLSv1.3") => Ok(3),
        Some(other) => Err(TlsSetupError::Version {
            setting,
            value: other.to_string(),
        }),
    };
    let min = level(&settings.min_version, "ssl_min_protocol_version", 2)?;
    let max = level(&settings.max_version, "ssl_max_protocol_version", 3)?;
    Ok([(3, &rustls::version::TLS13), (2, &rustls::version::TLS12)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, version)| version)
        .collect())
}

fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let failed = |reason: String| TlsSetupError::Read {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(failed("no certificate in it".into()));
    }
    Ok(certs)
}

/// The client certificate and key, if the settings or `~/.postgresql` have one.
fn client_certificate(
    settings: &TlsSettings,
    postgresql: Option<&Path>,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsSetupError> {
    let Some(cert) = settings
        .cert
        .clone()
        .or_else(|| postgresql.map(|p| p.join("postgresql.crt")))
        .filter(|p| p.exists())
    else {
        return Ok(None);
    };
    let key = settings
        .key
        .clone()
        .or_else(|| postgresql.map(|p| p.join("postgresql.key")))
        .filter(|p| p.exists())
        .ok_or_else(|| {
            TlsSetupError::NoKey(settings.key.clone().unwrap_or_else(|| {
                postgresql.map_or_else(|| "postgresql.key".into(), |p| p.join("postgresql.key"))
            }))
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&key).map_err(|e| TlsSetupError::Read {
            what: "private key file",
            path: key.clone(),
            reason: e.to_string(),
        })?;
        let mode = meta.mode();
        // SAFETY-free: geteuid is not in std; the owner's uid is compared with the process's.
        let own = meta.uid() == current_uid();
        if (own && mode & 0o077 != 0) || (meta.uid() == 0 && mode & 0o037 != 0) {
            return Err(TlsSetupError::KeyAccess(key));
        }
    }
    let certs = read_certs(&cert, "certificate file")?;
    let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsSetupError::Read {
        what: "private key file",
        path: key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some((certs, private)))
}

/// The process's user id, read from /proc (std has no geteuid).
#[cfg(unix)]
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}
