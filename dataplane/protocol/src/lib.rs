//! BlipMQ wire protocol, version 1 (`shared/docs/protocol.md`, normative).
//!
//! Sans-IO: decoding reads frames in place from a caller's byte buffer, with
//! no allocation per frame; encoding appends frames to a caller's buffer.
//! Subject rules and the CONNECT/INFO JSON bodies live here too, so that the
//! broker and the client share one definition of the wire. [`nats`] is the
//! NATS client protocol, for unmodified NATS clients.

#![forbid(unsafe_code)]

pub mod decode;
pub mod encode;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod nats;
pub mod subject;

pub use decode::{decode_frame, FrameError, RawFrame, Request, ServerFrame};
pub use frame::{flags, ErrorCode, Op, FRAME_ALLOWANCE, HEADER_LEN, LEN_PREFIX};
pub use handshake::{Connect, Info, PROTOCOL_VERSION};
pub use subject::{
    filter_covers, filter_matches, validate_filter, validate_queue, validate_subject, SubjectError,
};
