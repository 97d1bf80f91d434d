//! Subject rules as nats-server applies them to a client, and the BlipMQ
//! rules a broker serving NATS clients needs on top.
//!
//! nats-server's rules (server/sublist.go, client.go):
//! - PUB/HPUB subject: not checked at all unless the client is pedantic;
//!   then `IsValidLiteralSubject` refuses an empty token or a `*`/`>` token
//!   with `-ERR 'Invalid Publish Subject'`, and the message is still
//!   delivered. Reply subjects are never checked.
//! - SUB filter, pedantic or not: the sublist refuses an empty token or any
//!   token after a `>` token with `-ERR 'Invalid Subject'`; no subscription.
//! - Queue group: not checked.
//! - Connection: stays open in every case.
//! - The parser splits at blanks (and SUB/UNSUB at `\r`, `\n`), so a token
//!   never holds one; every other byte is accepted, including control
//!   characters, NUL and invalid UTF-8; there is no length limit.
//!
//! Where BlipMQ's rules ([`crate::subject`]) differ:
//! - BlipMQ refuses empty and wildcard tokens in every publish subject and
//!   reply subject, pedantic or not, and refuses the message.
//! - BlipMQ requires UTF-8 without whitespace or control characters
//!   (Unicode whitespace too), and a length of at most `max_topic_length`.
//! - BlipMQ's queue group is a single token: no `.`; NATS allows `q.v1`.
//! - Filters agree on structure: `*` anywhere, `>` only last, no empty token.
//!
//! A broker that answers NATS clients therefore checks a subject twice:
//! [`check_subject`] decides what nats-server would answer, and
//! [`check_blipmq_subject`] whether BlipMQ can route it at all.

use super::error::NatsSubjectError;
use crate::subject::{validate_filter, validate_queue, validate_subject, SubjectError};

/// What a subject is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectRole {
    /// The subject of PUB/HPUB.
    Publish,
    /// The reply subject of PUB/HPUB.
    Reply,
    /// The subject of SUB, wildcards allowed.
    Filter,
    /// The queue group of SUB.
    Queue,
}

/// Checks `subject` as nats-server does for a client in `pedantic` mode or
/// not. `Ok` means nats-server answers nothing about it.
pub fn check_subject(
    role: SubjectRole,
    subject: &[u8],
    pedantic: bool,
) -> Result<(), NatsSubjectError> {
    match role {
        SubjectRole::Publish if pedantic => {
            let literal = !subject.is_empty()
                && subject
                    .split(|&b| b == b'.')
                    .all(|token| !token.is_empty() && token != b"*" && token != b">");
            if literal {
                Ok(())
            } else {
                Err(NatsSubjectError::InvalidPublishSubject)
            }
        }
        SubjectRole::Publish | SubjectRole::Reply | SubjectRole::Queue => Ok(()),
        SubjectRole::Filter => {
            let mut after_tail = false;
            for token in subject.split(|&b| b == b'.') {
                if token.is_empty() || after_tail {
                    return Err(NatsSubjectError::InvalidSubject);
                }
                after_tail = token == b">";
            }
            Ok(())
        }
    }
}

/// Checks `subject` against BlipMQ's own rules ([`crate::subject`]), which
/// the broker's routing relies on; `max_len` is `max_topic_length`.
pub fn check_blipmq_subject(
    role: SubjectRole,
    subject: &[u8],
    max_len: usize,
) -> Result<(), SubjectError> {
    match role {
        SubjectRole::Publish | SubjectRole::Reply => validate_subject(subject, max_len),
        SubjectRole::Filter => validate_filter(subject, max_len),
        SubjectRole::Queue => validate_queue(subject, max_len),
    }
}
