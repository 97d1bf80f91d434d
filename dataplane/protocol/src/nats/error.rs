//! What can go wrong, worded and handled as nats-server 2.9+ does.

/// Why client input cannot be decoded, or a CONNECT cannot be accepted.
///
/// Every variant closes the connection in nats-server ([`closes_connection`]
/// is always true); some are announced with `-ERR '<text>'` first
/// ([`err_text`]), others close silently (nats-server only logs them).
///
/// [`closes_connection`]: NatsError::closes_connection
/// [`err_text`]: NatsError::err_text
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatsError {
    /// Bytes that do not start a known op, or an op name not followed by a
    /// blank where arguments must follow (parser.go's `parseErr`).
    #[error("unknown protocol operation")]
    UnknownOperation,
    /// The arguments of a control line are longer than the limit
    /// (parser.go's `overMaxControlLineLimit`).
    #[error("maximum control line exceeded (limit {limit} bytes)")]
    MaxControlLine { limit: usize },
    /// A PUB/HPUB announces more bytes than `max_payload`; refused as soon as
    /// the control line is read.
    #[error("maximum payload exceeded: {size} vs {limit}")]
    MaxPayload { size: usize, limit: usize },
    /// PUB, HPUB, SUB or UNSUB with too few or too many arguments
    /// (client.go: "processPub Parse Error" and friends).
    #[error("{op} with a wrong number of arguments")]
    ArgumentCount { op: &'static str },
    /// The payload size of a PUB, or the total size of an HPUB, is missing or
    /// not a decimal of at most 9 digits ("Bad or Missing Size").
    #[error("{op}: bad or missing size")]
    BadSize { op: &'static str },
    /// The header size of an HPUB is not a decimal of at most 9 digits.
    #[error("HPUB: bad or missing header size")]
    BadHeaderSize,
    /// An HPUB whose header size is larger than its total size.
    #[error("HPUB: header size larger than total size")]
    HeaderLargerThanTotal,
    /// The payload of a PUB/HPUB is not followed by `\r\n` (parser.go's
    /// `MSG_END_R`/`MSG_END_N` states fall into `parseErr`).
    #[error("payload not followed by CRLF")]
    MissingPayloadCrlf,
    /// The CONNECT argument is not a JSON object of the expected shape.
    #[error("CONNECT is not valid JSON")]
    BadConnectJson,
    /// CONNECT asks for a protocol other than 0 or 1.
    #[error("invalid client protocol")]
    BadClientProtocol,
    /// CONNECT asks for no_responders without headers.
    #[error("no responders requires headers support")]
    NoRespondersRequiresHeaders,
}

impl NatsError {
    /// The text nats-server sends as `-ERR '<text>'` before it closes, or
    /// `None` where it closes without a word.
    pub fn err_text(&self) -> Option<&'static str> {
        match self {
            NatsError::UnknownOperation | NatsError::MissingPayloadCrlf => {
                Some("Unknown Protocol Operation")
            }
            // errCtx wraps ErrMaxControlLine; its Error() is the bare text.
            NatsError::MaxControlLine { .. } => Some("maximum control line exceeded"),
            NatsError::MaxPayload { .. } => Some("Maximum Payload Violation"),
            NatsError::BadClientProtocol => Some("invalid client protocol"),
            NatsError::NoRespondersRequiresHeaders => {
                Some("no responders requires headers support")
            }
            // parse() returns these errors to readLoop, which logs them and
            // closes with ProtocolViolation: nothing is sent.
            NatsError::ArgumentCount { .. }
            | NatsError::BadSize { .. }
            | NatsError::BadHeaderSize
            | NatsError::HeaderLargerThanTotal
            | NatsError::BadConnectJson => None,
        }
    }

    /// Whether nats-server closes the connection after this error: always,
    /// since each one leaves the byte stream unparseable or the session
    /// unusable. Kept as a method so that the session does not hard-code it.
    pub fn closes_connection(&self) -> bool {
        true
    }
}

/// A subject, filter or queue name nats-server refuses while keeping the
/// connection open (see [`check_subject`](super::check_subject)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatsSubjectError {
    /// Pedantic PUB/HPUB subject with an empty or wildcard token. nats-server
    /// sends the error and still delivers the message.
    #[error("invalid publish subject")]
    InvalidPublishSubject,
    /// SUB filter with an empty token or a token after `>`; the sublist
    /// refuses it and no subscription is made.
    #[error("invalid subject")]
    InvalidSubject,
}

impl NatsSubjectError {
    /// The text of the `-ERR '<text>'` nats-server sends.
    pub fn err_text(&self) -> &'static str {
        match self {
            NatsSubjectError::InvalidPublishSubject => "Invalid Publish Subject",
            NatsSubjectError::InvalidSubject => "Invalid Subject",
        }
    }

    /// Never: nats-server answers `-ERR` and keeps reading.
    pub fn closes_connection(&self) -> bool {
        false
    }
}
