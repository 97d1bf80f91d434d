//! The NATS client protocol (server side), sans-IO: the text protocol
//! nats-server 2.9+ speaks to nats-py, async-nats, the nats CLI and the
//! other official clients. The broker's session and worker drive it for
//! connections of its NATS listener (`[nats] listen`).
//!
//! [`decode_client_op`] reads client ops in place from a caller's buffer
//! without allocating; [`encode`] appends server ops to a caller's buffer.
//! Behaviour follows nats-server's `server/parser.go` and `server/client.go`.
//!
//! Where this codec differs from nats-server, and what it leaves to the
//! session that drives it:
//! - Being stateless, it bounds what a caller must buffer: a run of more
//!   than `max_control_line` blanks before the arguments, and more than
//!   `max_control_line` bytes after PING/PONG, are refused as an over-long
//!   control line (nats-server skips them without limit).
//! - `INFO`, `+OK`, `-ERR`, `MSG`, `HMSG` from a client are refused as
//!   unknown ops; nats-server parses them (ignores INFO and +OK, closes on
//!   -ERR). Clients do not send them.
//! - HPUB is decoded whether or not the client asked for headers; the
//!   session refuses it when [`ConnectOptions::headers_enabled`] is false
//!   (nats-server: "message headers not supported", closes, no -ERR).
//! - Authentication (a first op other than CONNECT when auth is required),
//!   `verbose` +OK answers, permissions and subject checks (see
//!   [`check_subject`]) are the session's.
//! - CONNECT JSON: field names must match exactly (Go's decoder also takes
//!   other cases) and the argument must be an object (Go accepts `null`).

mod decode;
pub mod encode;
mod error;
mod json;
pub mod leaf;
mod subject;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod test_client;
#[cfg(test)]
mod tests;

pub use decode::{decode_client_op, ClientOp};
pub use error::{NatsError, NatsSubjectError};
pub use json::{ConnectOptions, ServerInfo, CLIENT_PROTOCOL_INFO};
pub use subject::{check_blipmq_subject, check_subject, SubjectRole};

/// nats-server's `MAX_CONTROL_LINE_SIZE`: the default limit on the
/// arguments of one control line.
pub const MAX_CONTROL_LINE_SIZE: usize = 4096;
/// nats-server's `MAX_PAYLOAD_SIZE`: the default `max_payload`, 1 MiB.
pub const MAX_PAYLOAD_SIZE: usize = 1024 * 1024;

/// Limits the decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatsLimits {
    /// Longest control line arguments, in bytes (`max_control_line`).
    pub max_control_line: usize,
    /// Largest PUB payload or HPUB headers + payload, in bytes
    /// (`max_payload`; advertised in INFO).
    pub max_payload: usize,
}

impl Default for NatsLimits {
    fn default() -> Self {
        NatsLimits {
            max_control_line: MAX_CONTROL_LINE_SIZE,
            max_payload: MAX_PAYLOAD_SIZE,
        }
    }
}
