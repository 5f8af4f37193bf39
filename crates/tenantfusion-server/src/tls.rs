//! TLS for connections that ask for it.
//!
//! A PostgreSQL client asks with `SSLRequest` before its startup packet; a
//! server with a certificate answers `S` and the TLS handshake follows on
//! the same socket, then the whole protocol (logins included) runs inside
//! it. Without a certificate the answer is `N` and the client goes on in
//! the clear or gives up, as its `sslmode` says. The keys are rustls over
//! ring, the crypto already used for SCRAM.
//!
//! Bytes a client sends after `SSLRequest` but before the handshake are
//! refused, not carried into the encrypted session: they came in the clear
//! and anyone on the path could have put them there (PostgreSQL's
//! CVE-2021-23214).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// The application protocol PostgreSQL clients name in TLS (ALPN); libpq 17
/// requires it for direct TLS and offers it always.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Where the server's certificate and key are: PEM files, the certificate
/// file holding the chain (the server's own first).
///
/// ```no_run
/// use tenantfusion_server::{ServerConfig, TlsFiles};
///
/// let config = ServerConfig {
///     tls: Some(TlsFiles::new("server.crt", "server.key")),
///     ..ServerConfig::default()
/// };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files at `cert` and `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Reads both files and makes the acceptor of every connection's
    /// handshake; unreadable files, a file without a certificate or key,
    /// and a key that does not fit the certificate are errors here, at
    /// start, not at a client's first handshake.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(&self.cert, e))?;
        if certs.is_empty() {
            return Err(invalid(&self.cert, "no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| invalid(&self.key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| invalid(&self.key, e))?;
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {} for TLS: {message}", path.display())]
pub struct TlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}
