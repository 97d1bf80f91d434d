//! The broker as a TLS client, on its own connection to a leaf-node hub:
//! the CAs the hub's certificate must chain to.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, RootCertStore};

use super::server::read_certs;

/// A client configuration that trusts the CAs in `ca_file` (PEM) and, with
/// `identity` (certificate chain and key files, PEM), presents that
/// certificate; `key` names the settings in errors.
pub fn client_config(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
    key: &str,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca_file, key)? {
        roots
            .add(cert)
            .map_err(|error| format!("{key} {}: {error}", ca_file.display()))?;
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let certs = read_certs(cert_file, &format!("{key}.cert_file"))?;
            let private = PrivateKeyDer::from_pem_file(key_file).map_err(|error| {
                format!(
                    "{key}.key_file {}: no private key read: {error}",
                    key_file.display()
                )
            })?;
            builder
                .with_client_auth_cert(certs, private)
                .map_err(|error| format!("{key}.cert_file and key_file: {error}"))?
        }
    };
    Ok(Arc::new(config))
}
