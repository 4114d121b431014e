//! The one rustls crypto provider (ring) of the process, for HTTPS sources and PostgreSQL
//! connections alike; PostgreSQL's own TLS rules are in [`crate::sink::connect::tls`].

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// Installs ring as rustls's process-wide crypto provider; later calls do nothing.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The process's provider, installing it first if need be.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}
