//! The broker as a TLS client, on its own connection to a leaf-node hub:
//! the CAs the hub's certificate must chain to.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use super::server::read_certs;

/// A client configuration that trusts the CAs in `ca_file` (PEM); `key`
/// names the setting in errors.
pub fn client_config(ca_file: &Path, key: &str) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca_file, key)? {
        roots
            .add(cert)
            .map_err(|error| format!("{key} {}: {error}", ca_file.display()))?;
    }
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
