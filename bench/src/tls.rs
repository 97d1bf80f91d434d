//! `--tls`: one certificate for every broker and one client configuration
//! for every client, so that the brokers differ in nothing but themselves.
//!
//! The certificate is self-signed for 127.0.0.1 (ECDSA P-256, made with
//! rcgen at start) and is the clients' only trust anchor. The clients offer
//! TLS 1.3 with TLS_AES_128_GCM_SHA256 alone: servers pick their cipher
//! suite by their own preference (rustls: AES-256-GCM first, Go: AES-128-GCM
//! first), and the comparison must not hinge on that.

use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use blipmq_client::rustls::{self, ClientConfig, RootCertStore};
use blipmq_client::tls::{TlsReader, TlsWriter};

/// The one protocol version and cipher suite the clients offer.
pub const SUITE: &str = "TLS 1.3, TLS_AES_128_GCM_SHA256, ECDSA P-256 certificate";

/// The certificate files the brokers serve and the clients' configuration.
#[derive(Debug)]
pub struct BenchTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    config: Arc<ClientConfig>,
}

impl BenchTls {
    /// Makes the certificate and writes it (and its key) into `dir`.
    pub fn create(dir: &Path) -> Result<BenchTls> {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .context("cannot make the TLS certificate")?;
        let cert_file = dir.join("bench-tls-cert.pem");
        let key_file = dir.join("bench-tls-key.pem");
        std::fs::write(&cert_file, certified.cert.pem())
            .with_context(|| format!("cannot write {}", cert_file.display()))?;
        std::fs::write(&key_file, certified.key_pair.serialize_pem())
            .with_context(|| format!("cannot write {}", key_file.display()))?;
        let mut roots = RootCertStore::empty();
        roots.add(certified.cert.der().clone())?;
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
            ..rustls::crypto::ring::default_provider()
        };
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(BenchTls {
            cert_file,
            key_file,
            config: Arc::new(config),
        })
    }

    /// The TLS handshake on a connected socket, through the Rust client's
    /// TLS stream (the same code for every broker).
    pub fn handshake(&self, tcp: TcpStream, deadline: Instant) -> Result<(TlsReader, TlsWriter)> {
        let peer: IpAddr = tcp.peer_addr()?.ip();
        blipmq_client::tls::handshake(tcp, self.config.clone(), peer.into(), deadline)
            .map_err(|error| anyhow::anyhow!("{error}"))
    }
}
