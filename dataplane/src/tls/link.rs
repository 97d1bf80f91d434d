//! One connection's TLS, sans-IO: ciphertext from the transport in,
//! plaintext to the session out, and the reverse for output. rustls does
//! the protocol; this keeps the bytes the transport has yet to take. The
//! broker is the server on its listeners and the client on its own
//! connection to a leaf-node hub.

use std::io::{BufRead, IoSlice, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

/// Ciphertext queued for the socket past which no more plaintext is
/// sealed: the rest of the output waits in the connection's queue, where
/// slow-consumer accounting sees it.
const SEAL_AHEAD: usize = 256 * 1024;
/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why a connection's TLS failed; its alert, if any, is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The client spoke plaintext where TLS is required.
    Plaintext,
    /// A protocol error (bad record, failed handshake, refused certificate).
    Protocol(String),
}

/// A connection's TLS state and the ciphertext waiting for the transport.
pub struct TlsLink {
    conn: Connection,
    /// Bytes for the transport, from `sent` on: a cleartext prefix (a NATS
    /// INFO) first, then TLS records.
    out: Vec<u8>,
    sent: usize,
    /// Whether any byte came from the client yet (the first one tells TLS
    /// from plaintext).
    heard: bool,
    /// The client spoke plaintext and that is allowed: bytes pass through.
    clear: bool,
    allow_plaintext: bool,
    /// The handshake completion was already reported.
    reported_ready: bool,
    /// close_notify is queued.
    notified: bool,
    /// The client sent close_notify: it sends nothing more.
    peer_closed: bool,
}

impl TlsLink {
    /// A server side of a new connection. `clear_prefix` is sent before
    /// any TLS (NATS's INFO); `allow_plaintext` lets a client that starts
    /// in plaintext go on without TLS.
    pub fn new(
        config: Arc<ServerConfig>,
        clear_prefix: &[u8],
        allow_plaintext: bool,
    ) -> Result<TlsLink, TlsFailure> {
        let conn = ServerConnection::new(config)
            .map_err(|error| TlsFailure::Protocol(error.to_string()))?;
        Ok(TlsLink {
            conn: conn.into(),
            out: clear_prefix.to_vec(),
            sent: 0,
            heard: false,
            clear: false,
            allow_plaintext,
            reported_ready: false,
            notified: false,
            peer_closed: false,
        })
    }

    /// The client side of a connection the broker opened to `server`; its
    /// ClientHello is queued at once.
    pub fn client(
        config: Arc<ClientConfig>,
        server: ServerName<'static>,
    ) -> Result<TlsLink, TlsFailure> {
        let conn = ClientConnection::new(config, server)
            .map_err(|error| TlsFailure::Protocol(error.to_string()))?;
        let mut link = TlsLink {
            conn: conn.into(),
            out: Vec::new(),
            sent: 0,
            // The server speaks TLS: nothing to tell from plaintext.
            heard: true,
            clear: false,
            allow_plaintext: false,
            reported_ready: false,
            notified: false,
            peer_closed: false,
        };
        link.collect_tls();
        Ok(link)
    }

    /// Whether the handshake is still going on (no plaintext flows yet).
    pub fn is_handshaking(&self) -> bool {
        !self.clear && self.conn.is_handshaking()
    }

    /// True once, when the handshake has just completed.
    pub fn take_ready(&mut self) -> bool {
        if self.reported_ready || self.is_handshaking() {
            return false;
        }
        self.reported_ready = true;
        true
    }

    /// The negotiated TLS version ("1.3"), as nats-server's `/connz` has it.
    pub fn version(&self) -> Option<String> {
        if self.clear {
            return None;
        }
        self.conn.protocol_version().map(|version| match version {
            rustls::ProtocolVersion::TLSv1_3 => "1.3".to_owned(),
            rustls::ProtocolVersion::TLSv1_2 => "1.2".to_owned(),
            other => format!("{other:?}"),
        })
    }

    /// The negotiated cipher suite's name.
    pub fn cipher_suite(&self) -> Option<String> {
        if self.clear {
            return None;
        }
        self.conn
            .negotiated_cipher_suite()
            .map(|suite| format!("{:?}", suite.suite()))
    }

    /// The client's certificate (DER), once the handshake verified it
    /// (`tls.ca_file`).
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        let chain = self.conn.peer_certificates()?;
        chain.first().map(|cert| cert.as_ref())
    }

    /// Takes bytes from the transport; appends the plaintext they carry to
    /// `plaintext`. On failure the alert (if any) is queued for the
    /// transport, and the connection should close once it is sent.
    pub fn receive(&mut self, mut bytes: &[u8], plaintext: &mut Vec<u8>) -> Result<(), TlsFailure> {
        if !self.heard && !bytes.is_empty() {
            self.heard = true;
            if bytes[0] != TLS_HANDSHAKE_RECORD {
                if self.allow_plaintext {
                    self.clear = true;
                } else {
                    return Err(TlsFailure::Plaintext);
                }
            }
        }
        if self.clear {
            plaintext.extend_from_slice(bytes);
            return Ok(());
        }
        while !bytes.is_empty() {
            // An empty reader would mean EOF to rustls: only non-empty ones.
            match self.conn.read_tls(&mut bytes) {
                Ok(_) => {}
                Err(error) => return Err(TlsFailure::Protocol(error.to_string())),
            }
            let processed = self.conn.process_new_packets();
            self.drain_plaintext(plaintext);
            self.collect_tls();
            match processed {
                Ok(state) => self.peer_closed |= state.peer_has_closed(),
                Err(error) => return Err(TlsFailure::Protocol(error.to_string())),
            }
        }
        Ok(())
    }

    fn drain_plaintext(&mut self, plaintext: &mut Vec<u8>) {
        let mut reader = self.conn.reader();
        while let Ok(chunk) = reader.fill_buf() {
            if chunk.is_empty() {
                break;
            }
            let len = chunk.len();
            plaintext.extend_from_slice(chunk);
            reader.consume(len);
        }
    }

    /// Moves TLS records rustls produced to the transport's queue.
    fn collect_tls(&mut self) {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.out).is_err() {
                break;
            }
        }
    }

    /// Whether the client closed its side with close_notify (and expects
    /// ours once the rest is sent).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether sealing more plaintext now would be useful.
    pub fn wants_plaintext(&self) -> bool {
        self.pending().len() < SEAL_AHEAD && (self.clear || !self.conn.is_handshaking())
    }

    /// Encrypts a prefix of `plaintext` for the transport; returns how many
    /// plaintext bytes it took. Takes nothing during the handshake.
    pub fn seal(&mut self, plaintext: &[IoSlice<'_>]) -> usize {
        if !self.wants_plaintext() {
            return 0;
        }
        if self.clear {
            let mut budget = SEAL_AHEAD - self.pending().len();
            let before = self.out.len();
            for slice in plaintext {
                let take = slice.len().min(budget);
                self.out.extend_from_slice(&slice[..take]);
                budget -= take;
                if budget == 0 {
                    break;
                }
            }
            return self.out.len() - before;
        }
        let taken = self.conn.writer().write_vectored(plaintext).unwrap_or(0);
        self.collect_tls();
        taken
    }

    /// Queues a close_notify alert after what is already sealed (once).
    pub fn close_notify(&mut self) {
        if !self.clear && !self.conn.is_handshaking() && !self.notified {
            self.notified = true;
            self.conn.send_close_notify();
            self.collect_tls();
        }
    }

    /// Bytes waiting for the transport.
    pub fn pending(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// The transport took `written` bytes of [`pending`](Self::pending).
    pub fn advance(&mut self, written: usize) {
        self.sent += written;
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent >= SEAL_AHEAD {
            // A transport that always takes part: move the rest to the
            // front rather than let the buffer grow.
            self.out.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Queues `bytes` in the clear, after what is queued: only for an
    /// answer to a client that spoke plaintext where TLS is required.
    pub fn push_clear(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
}
