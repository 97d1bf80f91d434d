//! The server side's certificates and policy, loaded from PEM files and
//! swapped whole on reload: connections accepted after a reload use the new
//! certificates, live ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::link::{TlsFailure, TlsLink};

/// What `[tls]` configures, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Client certificates are required and verified against these CAs.
    pub ca_file: Option<PathBuf>,
    /// Plaintext NATS clients are refused (the binary protocol always
    /// starts with TLS when it is configured).
    pub required: bool,
    /// NATS clients start with the TLS handshake, before INFO (nats-server
    /// 2.10's `handshake_first`).
    pub handshake_first: bool,
}

/// The certificates and policy every worker accepts with; a reload swaps
/// them whole.
pub struct TlsServer {
    current: ArcSwap<Loaded>,
}

struct Loaded {
    config: Arc<ServerConfig>,
    settings: TlsSettings,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("settings", &self.current.load().settings)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads the certificate, key and CA files; says which one is wrong.
    pub fn load(settings: TlsSettings) -> Result<TlsServer, String> {
        Ok(TlsServer {
            current: ArcSwap::from_pointee(Loaded::read(settings)?),
        })
    }

    pub fn settings(&self) -> TlsSettings {
        self.current.load().settings.clone()
    }

    /// Reads the files of `settings` (the same paths or new ones); on error
    /// the running certificates stay. Connections accepted from now on use
    /// the new ones; live connections keep theirs.
    pub fn reload(&self, settings: TlsSettings) -> Result<(), String> {
        self.current.store(Arc::new(Loaded::read(settings)?));
        Ok(())
    }

    /// A new connection's TLS, sending `clear_prefix` before it.
    pub fn link(&self, clear_prefix: &[u8], allow_plaintext: bool) -> Result<TlsLink, TlsFailure> {
        let current = self.current.load();
        TlsLink::new(current.config.clone(), clear_prefix, allow_plaintext)
    }
}

impl Loaded {
    fn read(settings: TlsSettings) -> Result<Loaded, String> {
        Ok(Loaded {
            config: Arc::new(server_config(&settings)?),
            settings,
        })
    }
}

fn server_config(settings: &TlsSettings) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&settings.cert_file, "tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|error| {
        format!(
            "tls.key_file {}: no private key read: {error}",
            settings.key_file.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?;
    let builder = match &settings.ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_file, "tls.ca_file")? {
                roots
                    .add(cert)
                    .map_err(|error| format!("tls.ca_file {}: {error}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("tls.ca_file {}: {error}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(certs, key).map_err(|error| {
        format!(
            "tls.cert_file {} and tls.key_file {}: {error}",
            settings.cert_file.display(),
            settings.key_file.display()
        )
    })
}

pub(super) fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("{key} {}: {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}
