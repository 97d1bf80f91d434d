//! The client's error type, and the clonable reason a connection ended.

use std::io;

/// Everything a client operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed (connect, read or write).
    #[error("i/o error: {0}")]
    Io(#[source] io::Error),
    /// TLS failed: the broker's certificate is not trusted or not valid for
    /// its name, the broker refused the client's certificate (or its
    /// absence), the peer does not speak TLS, or a PEM file is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The broker answered ERROR (e.g. 401 bad token, 403 not permitted, 503
    /// slow consumer).
    #[error("server error {code}: {reason}")]
    Server {
        /// The protocol's error code (400, 401, 403, 404, 408, 409, 413, 429, 503).
        code: u16,
        /// The broker's UTF-8 reason.
        reason: String,
    },
    /// The broker broke the wire protocol; the connection was closed.
    #[error("protocol violation by the broker: {0}")]
    Protocol(String),
    /// A subject, filter, reply subject or queue group name was refused
    /// locally; nothing was sent.
    #[error("{0}")]
    InvalidSubject(String),
    /// The payload exceeds the broker's `max_payload`; nothing was sent.
    #[error("payload of {len} bytes exceeds the broker's max_payload of {max}")]
    PayloadTooLarge {
        /// Bytes of the refused payload.
        len: usize,
        /// The broker's limit, from INFO.
        max: u64,
    },
    /// No answer (or no message) within the allotted time.
    #[error("timed out")]
    Timeout,
    /// The connection (or, for a subscription, the subscription) is closed.
    #[error("connection closed")]
    Closed,
    /// The broker sent DISCONNECT (it is draining); reconnect elsewhere or later.
    #[error("disconnected by the broker: {reason}")]
    Disconnected {
        /// The broker's reason, possibly empty.
        reason: String,
    },
}

/// Why a connection ended; clonable so that every waiter and every
/// subscription can be given the same error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Closed by the client, or the broker closed without saying why.
    Closed,
    /// The broker's last frame before closing was this ERROR.
    Server { code: u16, reason: String },
    /// The broker broke the protocol.
    Protocol(String),
    /// The broker sent DISCONNECT.
    Disconnected(String),
    /// The socket failed.
    Io(io::ErrorKind, String),
    /// TLS failed (an alert from the broker, a bad record).
    Tls(String),
}

/// What rustls reported, when it is behind an I/O error.
fn tls_failure(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        match tls_failure(&err) {
            Some(tls) => Error::Tls(tls.to_string()),
            None => Error::Io(err),
        }
    }
}

impl Reason {
    /// The error an operation on the connection reports.
    pub(crate) fn to_error(&self) -> Error {
        match self {
            Reason::Closed => Error::Closed,
            Reason::Server { code, reason } => Error::Server {
                code: *code,
                reason: reason.clone(),
            },
            Reason::Protocol(msg) => Error::Protocol(msg.clone()),
            Reason::Disconnected(reason) => Error::Disconnected {
                reason: reason.clone(),
            },
            Reason::Io(kind, msg) => Error::Io(io::Error::new(*kind, msg.clone())),
            Reason::Tls(msg) => Error::Tls(msg.clone()),
        }
    }

    /// The error a subscription's `recv` reports once its queue is empty:
    /// socket failures read as [`Error::Closed`].
    pub(crate) fn to_recv_error(&self) -> Error {
        match self {
            Reason::Io(..) => Error::Closed,
            other => other.to_error(),
        }
    }

    pub(crate) fn io(err: &io::Error) -> Reason {
        match tls_failure(err) {
            Some(tls) => Reason::Tls(tls.to_string()),
            None => Reason::Io(err.kind(), err.to_string()),
        }
    }
}
