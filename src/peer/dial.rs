//! How this member dials its peers: plain h2c for http peer URLs, TLS with the
//! `--peer-*` certificates for https ones. The client settings are fixed at start-up and
//! read by every place that opens a peer channel, hence one process-wide value.

use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

static PEER_TLS: OnceLock<ClientTlsConfig> = OnceLock::new();

/// Reads the peer certificate, key and CA once, at start-up.
pub fn configure(settings: &crate::tls::TlsSettings) -> std::io::Result<()> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
        })
    };
    let identity = Identity::from_pem(read(&settings.cert_file)?, read(&settings.key_file)?);
    let mut config = ClientTlsConfig::new().identity(identity);
    if let Some(ca) = &settings.trusted_ca_file {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    let _ = PEER_TLS.set(config);
    Ok(())
}

/// An endpoint for a peer URL, with TLS when the URL is https.
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    let endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|e| format!("bad peer URL {url}: {e}"))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let tls = PEER_TLS
        .get()
        .ok_or_else(|| format!("peer URL {url} is https but no --peer-cert-file is set"))?;
    endpoint.tls_config(tls.clone()).map_err(|e| format!("TLS for {url}: {e}"))
}
