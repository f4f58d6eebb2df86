//! TLS on the client port, with etcd's flags: the server certificate and key, a trusted CA
//! (which, as in etcd, makes the server require and verify client certificates), the
//! minimum and maximum protocol versions and the allowed cipher suites. ALPN offers h2 and
//! http/1.1, so gRPC and the HTTP endpoints keep sharing one port.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::{ring, CryptoProvider};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    /// etcd's (Go's) suite names; empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// "TLS1.2" or "TLS1.3".
    pub min_version: String,
    /// "TLS1.2", "TLS1.3" or empty (no maximum).
    pub max_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("unexpected TLS version {0:?} (valid values are TLS1.2 and TLS1.3)")]
    Version(String),
    #[error("unexpected TLS cipher suite {0:?} (rsetcd supports the TLS 1.2 ECDHE suites with AES-GCM or ChaCha20-Poly1305)")]
    CipherSuite(String),
    #[error("--client-cert-auth needs --trusted-ca-file to verify client certificates")]
    NoTrustedCa,
    #[error("cipher suites cannot be configured when --tls-min-version is TLS1.3")]
    SuitesWithTls13,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("verifying client certificates: {0}")]
    Verifier(String),
}

impl TlsSettings {
    /// The checks that need no file, made while the configuration is read.
    pub fn check(&self) -> Result<(), TlsError> {
        let versions = self.versions()?;
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(TlsError::NoTrustedCa);
        }
        if !self.cipher_suites.is_empty() && !versions.contains(&&rustls::version::TLS12) {
            return Err(TlsError::SuitesWithTls13);
        }
        self.suites().map(|_| ())
    }

    fn versions(&self) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
        let rank = |text: &str| match text {
            "TLS1.2" => Ok(2),
            "TLS1.3" => Ok(3),
            other => Err(TlsError::Version(other.to_string())),
        };
        let min = rank(&self.min_version)?;
        let max = if self.max_version.is_empty() { 3 } else { rank(&self.max_version)? };
        let mut versions = Vec::new();
        if min <= 2 && max >= 2 {
            versions.push(&rustls::version::TLS12);
        }
        if max >= 3 {
            versions.push(&rustls::version::TLS13);
        }
        if versions.is_empty() {
            return Err(TlsError::Version(self.max_version.clone()));
        }
        Ok(versions)
    }

    /// The allowed suites; TLS 1.3's own suites are always allowed (as in Go).
    fn suites(&self) -> Result<Vec<SupportedCipherSuite>, TlsError> {
        if self.cipher_suites.is_empty() {
            return Ok(ring::default_provider().cipher_suites);
        }
        use rustls::crypto::ring::cipher_suite as cs;
        let mut suites = vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        for name in &self.cipher_suites {
            suites.push(match name.as_str() {
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
                    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                }
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                }
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
                | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
                    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                }
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
                    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                }
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
                    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                }
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
                | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
                    cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
                }
                other => return Err(TlsError::CipherSuite(other.to_string())),
            });
        }
        Ok(suites)
    }

    /// Reads the files and builds the server side of the handshake.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider =
            Arc::new(CryptoProvider { cipher_suites: self.suites()?, ..ring::default_provider() });
        let certs = read_certs(&self.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| TlsError::Read {
            path: self.key_file.display().to_string(),
            reason: e.to_string(),
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions()?)?;
        let builder = match &self.trusted_ca_file {
            // etcd requires and verifies client certificates whenever a CA is trusted.
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Verifier(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = || path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read { path: shown(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: shown() });
    }
    Ok(certs)
}

/// A client that does not finish its handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections made to `listener`, handshakes done (each in its own task, so a slow
/// client holds up nobody). A failed handshake is logged and dropped, as Go's server does.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY a small reply waits for the peer's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let (acceptor, ready) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(remote = %peer, error = %err, "rejected connection: TLS handshake error")
                    }
                    Err(_) => {
                        tracing::warn!(remote = %peer, "rejected connection: TLS handshake timed out")
                    }
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The Subject CN of a client certificate (etcd's CN auth user), if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}
