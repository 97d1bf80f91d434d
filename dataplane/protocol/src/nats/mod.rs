//! The NATS client protocol (server side), sans-IO: the text protocol
//! nats-server 2.9+ speaks to nats-py, async-nats, the nats CLI and the
//! other official clients. Not wired into the broker yet.
//!
//! [`decode_client_op`] reads client ops in place from a caller's buffer
//! without allocating; [`encode`] appends server ops to a caller's buffer.
//! Behaviour follows nats-server's `server/parser.go` and `server/client.go`;
//! where this codec differs, the item says so.

mod decode;
pub mod encode;
mod error;
mod json;
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
