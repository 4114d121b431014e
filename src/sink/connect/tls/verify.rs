//! The server-certificate check behind libpq's sslmodes: the chain against the root file,
//! the host name against the certificate's names, certificates pinned by the root file, and
//! old X.509 v1 certificates in the modes that do not judge them — each refusal in words.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
    verify_tls13_signature_with_raw_key,
};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, OtherError, SignatureScheme,
};
use x509_cert::der::{Decode as _, Encode as _};

use super::Verify;

/// Judges the server's certificate as the sslmode says (see the parent module), and keeps
/// why it refused one.
#[derive(Debug)]
pub(super) struct LibpqVerifier {
    pub(super) verify: Verify,
    /// webpki's chain check against the roots; `None` without roots.
    pub(super) chain: Option<Arc<WebPkiServerVerifier>>,
    /// The root file's certificates, trusted as they are when the server shows one of them.
    pub(super) pinned: Vec<CertificateDer<'static>>,
    pub(super) root_source: String,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) refusal: Arc<Mutex<Option<String>>>,
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
    ) -> Result<(), Refused> {
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
                t if t < from => Err(Refused(format!(
                    "the server's certificate is not valid until {}",
                    validity.not_before
                ))),
                t if t > until => Err(Refused(format!(
                    "the server's certificate expired at {}",
                    validity.not_after
                ))),
                _ => Ok(()),
            };
        }
        let Some(chain) = &self.chain else {
            return Err(Refused(format!(
                "the server's certificate is not signed by a CA in {}",
                self.root_source
            )));
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, &[], now) {
            Ok(_)
            | Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(()),
            Err(TlsError::InvalidCertificate(error)) => Err(Refused(match error {
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
            })),
            Err(other) => Err(Refused(format!(
                "the server's certificate does not verify: {other}"
            ))),
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
) -> Result<(), Refused> {
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
    Err(Refused(match names.as_slice() {
        [] => {
            format!("the server's certificate names no host; it cannot match host name \"{host}\"")
        }
        [one] => format!("server certificate for \"{one}\" does not match host name \"{host}\""),
        [first, rest @ ..] => format!(
            "server certificate for \"{first}\" (and {} other name(s)) does not match host name \"{host}\"",
            rest.len()
        ),
    }))
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
            .map_err(|Refused(reason)| self.refuse(reason))?;
        if self.verify == Verify::Full {
            check_name(&certificate, server_name).map_err(|Refused(reason)| self.refuse(reason))?;
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
