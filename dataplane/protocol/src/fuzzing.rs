//! The decoding logic the `decode` fuzz target runs, shared with the test that
//! replays the fuzz corpus. Not part of the API.

use crate::{decode_frame, validate_filter, validate_queue, validate_subject, Connect, Info, Request, ServerFrame};

/// A small frame limit, so that the fuzzer reaches the 413 rule easily.
pub const FUZZ_MAX_LEN: u32 = 4096 + 1024;
/// The default `max_topic_length`.
pub const FUZZ_MAX_TOPIC: usize = 255;

/// Decodes frames from `data` until it runs out or a frame is refused, and
/// parses each one in both directions. Panics only on a broken invariant.
pub fn fuzz_decode(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((frame, consumed))) = decode_frame(rest, FUZZ_MAX_LEN) {
        assert!(consumed >= 8 && consumed <= rest.len());
        assert_eq!(consumed, 8 + frame.topic.len() + frame.body.len());
        let _ = validate_subject(frame.topic, FUZZ_MAX_TOPIC);
        let _ = validate_filter(frame.topic, FUZZ_MAX_TOPIC);
        if let Ok(request) = Request::parse(frame) {
            match request {
                Request::Connect { json } => {
                    let _ = Connect::parse(json);
                }
                Request::Publish { reply: Some(reply), .. } => {
                    let _ = validate_subject(reply, FUZZ_MAX_TOPIC);
                }
                Request::Subscribe { queue: Some(queue), .. } => {
                    let _ = validate_queue(queue, FUZZ_MAX_TOPIC);
                }
                _ => {}
            }
        }
        match ServerFrame::parse(frame) {
            Ok(ServerFrame::Message { reply: Some(reply), .. }) => {
                let _ = validate_subject(reply, FUZZ_MAX_TOPIC);
            }
            Ok(ServerFrame::Info { json }) => {
                let _ = serde_json::from_slice::<Info>(json);
            }
            _ => {}
        }
        rest = &rest[consumed..];
    }
}
