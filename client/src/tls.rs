//! TLS to the broker (rustls, ring provider): what to trust and who to be
//! ([`TlsOptions`]), the handshake, and a blocking TLS stream split into a
//! [`TlsReader`] and a [`TlsWriter`] that two threads use at once.
//!
//! A rustls connection cannot be cloned, so both halves share it behind a
//! mutex that is held only to move bytes through rustls (decrypting what the
//! reader read, encrypting what the writer writes), never across a socket
//! call: the reader blocks in `read` while the writer encrypts and sends. A
//! second lock orders the socket writes, so TLS records reach the socket in
//! the order rustls sealed them, whichever half sealed them. The reader
//! seals only alerts and key-update answers, a few bytes, and writes them
//! itself only when the writer is not writing (else the writer takes them
//! along after its own write). The plaintext path has none of this: the
//! client's threads use the `TcpStream` directly.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::conn::lock;
use crate::error::Error;

/// Ciphertext read from the socket per `read` call.
const CIPHER_BUF: usize = 64 << 10;

/// How to secure the connection with TLS (1.2 or 1.3). The broker's
/// certificate must chain to `ca_file` (or `config`'s roots) and carry
/// `server_name`; with `cert_file` and `key_file` the client presents a
/// certificate (for a broker with `[tls] ca_file`, mutual TLS).
///
/// ```no_run
/// use blipmq_client::{Client, Options, TlsOptions};
///
/// let options = Options {
///     tls: Some(TlsOptions {
///         ca_file: Some("ca.pem".into()),
///         server_name: Some("broker.example.com".into()),
///         ..TlsOptions::default()
///     }),
///     ..Options::default()
/// };
/// let client = Client::connect_with("broker.example.com:9999", options)?;
/// # Ok::<(), blipmq_client::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificates (PEM) the broker's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// The client's certificate chain (PEM), for a broker that asks for one.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate must be valid for. Default: the IP
    /// address connected to (so a certificate for a DNS name needs this).
    pub server_name: Option<String>,
    /// A ready rustls configuration (other roots, settings of your own);
    /// when set, `ca_file`, `cert_file` and `key_file` are not read.
    pub config: Option<Arc<ClientConfig>>,
}

impl TlsOptions {
    /// The rustls configuration these options describe, with the ring
    /// provider. Reads the PEM files; an unreadable or empty one is
    /// [`Error::Tls`] naming it.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        let ca_file = self.ca_file.as_deref().ok_or_else(|| {
            Error::Tls("no CA to verify the broker with: set TlsOptions::ca_file or config".into())
        })?;
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca_file, "ca_file")? {
            roots
                .add(cert)
                .map_err(|err| Error::Tls(format!("ca_file {}: {err}", ca_file.display())))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::Tls(err.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert_file), Some(key_file)) => {
                let certs = read_certs(cert_file, "cert_file")?;
                let key = PrivateKeyDer::from_pem_file(key_file).map_err(|err| {
                    Error::Tls(format!(
                        "key_file {}: no private key read: {err}",
                        key_file.display()
                    ))
                })?;
                builder.with_client_auth_cert(certs, key).map_err(|err| {
                    Error::Tls(format!(
                        "cert_file {} and key_file {}: {err}",
                        cert_file.display(),
                        key_file.display()
                    ))
                })?
            }
            _ => {
                return Err(Error::Tls(
                    "a client certificate needs both cert_file and key_file".into(),
                ))
            }
        };
        Ok(Arc::new(config))
    }

    /// The name to verify the broker's certificate against: `server_name`,
    /// else the IP address of `peer`.
    pub fn server_name_for(&self, peer: SocketAddr) -> Result<ServerName<'static>, Error> {
        match &self.server_name {
            Some(name) => ServerName::try_from(name.clone())
                .map_err(|err| Error::Tls(format!("server_name {name:?}: {err}"))),
            None => Ok(ServerName::IpAddress(peer.ip().into())),
        }
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| Error::Tls(format!("{what} {}: {err}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{what} {}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// Runs the TLS handshake on a connected socket, each step bounded by
/// `deadline` (socket timeouts, left set for the caller to change), and
/// splits the secured stream. A refused certificate or a peer that does not
/// speak TLS is [`Error::Tls`]; running out of time is [`Error::Timeout`].
pub fn handshake(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    deadline: Instant,
) -> Result<(TlsReader, TlsWriter), Error> {
    let mut conn = ClientConnection::new(config, server_name)
        .map_err(|err| Error::Tls(format!("TLS setup: {err}")))?;
    let mut socket = &tcp;
    while conn.is_handshaking() || conn.wants_write() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Timeout);
        }
        tcp.set_read_timeout(Some(remaining))?;
        tcp.set_write_timeout(Some(remaining))?;
        while conn.wants_write() {
            conn.write_tls(&mut socket).map_err(handshake_error)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if conn.read_tls(&mut socket).map_err(handshake_error)? == 0 {
            return Err(Error::Tls(
                "the broker closed the connection during the TLS handshake".into(),
            ));
        }
        if let Err(err) = conn.process_new_packets() {
            // Tell the broker why (the alert rustls queued), best effort.
            let _ = conn.write_tls(&mut socket);
            return Err(handshake_failed(&err));
        }
    }
    split(conn, tcp).map_err(Error::from)
}

fn handshake_failed(err: &rustls::Error) -> Error {
    let hint = match err {
        rustls::Error::InvalidMessage(_) => {
            " (does the broker's listener speak TLS? It answered something else)"
        }
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => " (set TlsOptions::server_name to a name in the broker's certificate)",
        _ => "",
    };
    Error::Tls(format!("TLS handshake with the broker failed: {err}{hint}"))
}

fn handshake_error(err: io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        _ => Error::from(err),
    }
}

/// The halves of a secured connection.
fn split(conn: ClientConnection, tcp: TcpStream) -> io::Result<(TlsReader, TlsWriter)> {
    let shared = Arc::new(Shared {
        conn: Mutex::new(conn),
        staged: Mutex::new(Vec::new()),
        tcp: tcp.try_clone()?,
    });
    let reader = TlsReader {
        shared: shared.clone(),
        tcp,
        cipher: vec![0; CIPHER_BUF].into_boxed_slice(),
        start: 0,
        end: 0,
    };
    Ok((reader, TlsWriter { shared }))
}

/// The rustls connection both halves share.
struct Shared {
    conn: Mutex<ClientConnection>,
    /// Sealed records on their way to the socket. Held across the socket
    /// write, so records leave in the order they were sealed; taken before
    /// `conn`, never while `conn` is held.
    staged: Mutex<Vec<u8>>,
    /// The writer's handle on the socket.
    tcp: TcpStream,
}

impl Shared {
    /// Moves the records rustls has sealed into `staged` and writes them.
    fn send_staged(&self, staged: &mut Vec<u8>) -> io::Result<()> {
        {
            let mut conn = lock(&self.conn);
            while conn.wants_write() {
                conn.write_tls(staged)?;
            }
        }
        if !staged.is_empty() {
            let result = (&self.tcp).write_all(staged);
            staged.clear();
            result?;
        }
        Ok(())
    }

    /// Writes whatever rustls sealed and nobody sent yet: called by the
    /// writer after it let go of `staged`, so a record the reader sealed
    /// while the writer held it (the reader only tries the lock) goes out.
    fn send_leftovers(&self) -> io::Result<()> {
        while lock(&self.conn).wants_write() {
            self.send_staged(&mut lock(&self.staged))?;
        }
        Ok(())
    }
}

/// The reading half of a TLS connection: plaintext out, ciphertext read
/// from the socket without holding the shared lock.
pub struct TlsReader {
    shared: Arc<Shared>,
    tcp: TcpStream,
    /// Ciphertext read from the socket and not yet given to rustls:
    /// `cipher[start..end]`.
    cipher: Box<[u8]>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for TlsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReader").finish_non_exhaustive()
    }
}

impl TlsReader {
    /// Plaintext rustls holds, or ciphertext fed to it until it yields
    /// some; `None` when it needs more from the socket.
    fn read_buffered(&mut self, out: &mut [u8]) -> Option<io::Result<usize>> {
        let mut conn = lock(&self.shared.conn);
        loop {
            match conn.reader().read(out) {
                // 0: the broker's close_notify, a clean end of stream.
                Ok(n) => return Some(Ok(n)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // UnexpectedEof: TCP ended without close_notify.
                Err(err) => return Some(Err(err)),
            }
            if self.start == self.end {
                return None;
            }
            let mut pending = &self.cipher[self.start..self.end];
            let before = pending.len();
            if let Err(err) = conn.read_tls(&mut pending) {
                return Some(Err(err));
            }
            self.start += before - pending.len();
            if let Err(err) = conn.process_new_packets() {
                drop(conn);
                // The alert rustls queued tells the broker why, if the
                // socket takes it now.
                if let Ok(mut staged) = self.shared.staged.try_lock() {
                    let _ = self.shared.send_staged(&mut staged);
                }
                return Some(Err(io::Error::new(io::ErrorKind::InvalidData, err)));
            }
        }
    }
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(result) = self.read_buffered(out) {
                return result;
            }
            // Answers rustls sealed while reading (key updates): sent now
            // if the writer is not sending, else the writer sends them.
            if lock(&self.shared.conn).wants_write() {
                if let Ok(mut staged) = self.shared.staged.try_lock() {
                    self.shared.send_staged(&mut staged)?;
                }
            }
            let n = loop {
                match self.tcp.read(&mut self.cipher) {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            self.start = 0;
            self.end = n;
            if n == 0 {
                // Tell rustls the stream ended; its reader then says
                // whether that was after close_notify.
                lock(&self.shared.conn).read_tls(&mut &[][..])?;
            }
        }
    }
}

/// The writing half of a TLS connection: plaintext in, sealed and written
/// to the socket before `write` returns.
pub struct TlsWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TlsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsWriter").finish_non_exhaustive()
    }
}

impl TlsWriter {
    /// Sends close_notify after everything written so far.
    pub fn close_notify(&mut self) -> io::Result<()> {
        lock(&self.shared.conn).send_close_notify();
        self.shared.send_leftovers()
    }
}

impl Write for TlsWriter {
    /// Seals at most one buffer's worth of `buf` (64 KiB) and writes it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let taken = {
            let mut staged = lock(&self.shared.staged);
            let taken = lock(&self.shared.conn).writer().write(buf)?;
            self.shared.send_staged(&mut staged)?;
            taken
        };
        self.shared.send_leftovers()?;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.shared.send_leftovers()
    }
}
