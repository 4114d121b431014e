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

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
    verify_tls13_signature_with_raw_key,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, OtherError, RootCertStore,
    SignatureScheme,
};
use x509_cert::der::{Decode as _, Encode as _};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
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
pub struct TlsSettings {
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
pub enum TlsSetupError {
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
pub struct Tls {
    pub ssl_mode: tokio_postgres::config::SslMode,
    pub connector: tokio_postgres_rustls::MakeRustlsConnect,
    /// Why the last handshake refused the server's certificate, in words a user can act on.
    pub refusal: Arc<Mutex<Option<String>>>,
}

/// Reads the files the settings name and builds the connector.
///
/// # Errors
/// A mode and root that cannot go together, or a file that cannot be used.
pub fn setup(settings: &TlsSettings) -> Result<Tls, TlsSetupError> {
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
    let provider = crate::tls::provider();
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
        ssl_mode: match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        },
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

#[derive(Debug)]
struct LibpqVerifier {
    verify: Verify,
    /// webpki's chain check against the roots; `None` without roots.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// The root file's certificates, trusted as they are when the server shows one of them.
    pinned: Vec<CertificateDer<'static>>,
    root_source: String,
    provider: Arc<CryptoProvider>,
    refusal: Arc<Mutex<Option<String>>>,
}

/// A refusal in words, carried through rustls to the handshake error.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl LibpqVerifier {
    fn refuse(&self, reason: String) -> TlsError {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(reason.clone());
        }
        TlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
            reason,
        )))))
    }

    /// The chain (or the pinned certificate's dates), as `verify-ca` checks it.
    fn check_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        certificate: &x509_cert::Certificate,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), String> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            let validity = certificate.tbs_certificate.validity;
            let (from, until) = (
                validity.not_before.to_unix_duration().as_secs(),
                validity.not_after.to_unix_duration().as_secs(),
            );
            return match now.as_secs() {
                t if t < from => Err(format!(
                    "the server's certificate is not valid until {}",
                    validity.not_before
                )),
                t if t > until => Err(format!(
                    "the server's certificate expired at {}",
                    validity.not_after
                )),
                _ => Ok(()),
            };
        }
        let Some(chain) = &self.chain else {
            return Err(format!(
                "the server's certificate is not signed by a CA in {}",
                self.root_source
            ));
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, &[], now) {
            Ok(_)
            | Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(()),
            Err(TlsError::InvalidCertificate(error)) => Err(match error {
                CertificateError::UnknownIssuer => format!(
                    "the server's certificate is not signed by a CA in {}",
                    self.root_source
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                    "the server's certificate expired at {}",
                    certificate.tbs_certificate.validity.not_after
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    format!(
                        "the server's certificate is not valid until {}",
                        certificate.tbs_certificate.validity.not_before
                    )
                }
                CertificateError::Revoked => "the server's certificate is revoked".into(),
                other => format!(
                    "the server's certificate does not verify against {}: {other:?}",
                    self.root_source
                ),
            }),
            Err(other) => Err(format!("the server's certificate does not verify: {other}")),
        }
    }
}

/// The names a `verify-full` connection matches the host against, as libpq does: the DNS
/// and IP names of the certificate, or its common name when it has neither.
fn certificate_names(certificate: &x509_cert::Certificate) -> (Vec<String>, Vec<Vec<u8>>) {
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some((_, san))) = certificate
        .tbs_certificate
        .get::<x509_cert::ext::pkix::SubjectAltName>()
    {
        for name in san.0 {
            match name {
                x509_cert::ext::pkix::name::GeneralName::DnsName(n) => dns.push(n.to_string()),
                x509_cert::ext::pkix::name::GeneralName::IpAddress(ip) => {
                    ips.push(ip.as_bytes().to_vec());
                }
                _ => {}
            }
        }
    }
    if dns.is_empty() && ips.is_empty() {
        let common_name = x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
        for rdn in &certificate.tbs_certificate.subject.0 {
            for attribute in rdn.0.iter().filter(|a| a.oid == common_name) {
                if let Ok(text) = std::str::from_utf8(attribute.value.value()) {
                    dns.push(text.to_string());
                }
            }
        }
    }
    (dns, ips)
}

/// libpq's match of a certificate name: case-insensitive, a leading `*.` standing for one
/// label (never a dot).
fn name_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

fn check_name(
    certificate: &x509_cert::Certificate,
    server_name: &ServerName<'_>,
) -> Result<(), String> {
    let (dns, ips) = certificate_names(certificate);
    let host = match server_name {
        ServerName::DnsName(name) => name.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    };
    let ip_bytes: Option<Vec<u8>> = match server_name {
        ServerName::IpAddress(ip) => Some(match std::net::IpAddr::from(*ip) {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        }),
        _ => None,
    };
    let matched = dns.iter().any(|name| name_matches(name, &host))
        || ip_bytes.is_some_and(|bytes| ips.contains(&bytes));
    if matched {
        return Ok(());
    }
    let mut names: Vec<String> = dns;
    names.extend(ips.iter().filter_map(|ip| match ip.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(ip.as_slice()).ok()?).to_string()),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(ip.as_slice()).ok()?).to_string()),
        _ => None,
    }));
    Err(match names.as_slice() {
        [] => {
            format!("the server's certificate names no host; it cannot match host name \"{host}\"")
        }
        [one] => format!("server certificate for \"{one}\" does not match host name \"{host}\""),
        [first, rest @ ..] => format!(
            "server certificate for \"{first}\" (and {} other name(s)) does not match host name \"{host}\"",
            rest.len()
        ),
    })
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        if self.verify == Verify::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        let certificate = x509_cert::Certificate::from_der(end_entity.as_ref())
            .map_err(|e| self.refuse(format!("the server's certificate cannot be read: {e}")))?;
        self.check_chain(end_entity, &certificate, intermediates, server_name, now)
            .map_err(|reason| self.refuse(reason))?;
        if self.verify == Verify::Full {
            check_name(&certificate, server_name).map_err(|reason| self.refuse(reason))?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let algorithms = &self.provider.signature_verification_algorithms;
        match verify_tls12_signature(message, cert, dss, algorithms) {
            // webpki reads no X.509 v1 certificate, and TLS 1.2 has no raw-key check: when
            // the certificate is not judged anyway, neither is its key.
            Err(TlsError::InvalidCertificate(_)) if self.verify == Verify::Nothing => {
                Ok(HandshakeSignatureValid::assertion())
            }
            Err(TlsError::InvalidCertificate(_)) => Err(self.refuse(
                "the server's certificate (X.509 version 1?) can be verified only over TLS 1.3; \
                 set ssl_min_protocol_version=TLSv1.3 on the server, or use sslmode=require"
                    .into(),
            )),
            other => other,
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let algorithms = &self.provider.signature_verification_algorithms;
        match verify_tls13_signature(message, cert, dss, algorithms) {
            // A certificate webpki cannot read (X.509 v1): the key inside it still must have
            // signed the handshake.
            Err(TlsError::InvalidCertificate(_)) => {
                let spki = x509_cert::Certificate::from_der(cert.as_ref())
                    .ok()
                    .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
                    .ok_or_else(|| self.refuse("the server's certificate cannot be read".into()))?;
                verify_tls13_signature_with_raw_key(
                    message,
                    &SubjectPublicKeyInfoDer::from(spki),
                    dss,
                    algorithms,
                )
            }
            other => other,
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn names_match_as_in_libpq() {
        assert!(name_matches("db.example.com", "DB.Example.com"));
        assert!(name_matches("*.example.com", "db.example.com"));
        assert!(!name_matches("*.example.com", "a.db.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("db.example.com", "db.example.org"));
    }
}
