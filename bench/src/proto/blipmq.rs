//! BlipMQ's binary protocol, through the `blipmq-protocol` crate.

use blipmq_protocol::{decode_frame, encode, Op, ServerFrame};

use super::{Event, Parsed, ProtoError, Wire};

#[derive(Debug, Clone, Copy)]
pub struct Blipmq;

impl Wire for Blipmq {
    const INFO_BEFORE_TLS: bool = false;

    fn put_hello(out: &mut Vec<u8>, name: &str) {
        let json = serde_json::json!({ "protocol": 1, "name": name }).to_string();
        encode::put_connect(out, json.as_bytes());
    }

    fn put_subscribe(out: &mut Vec<u8>, subject: &str, sid: u32, queue: Option<&str>) {
        encode::put_subscribe(
            out,
            subject.as_bytes(),
            sid,
            queue.map(str::as_bytes),
            false,
        );
    }

    fn put_publish_head(out: &mut Vec<u8>, subject: &str, payload_len: usize) {
        encode::put_header(out, Op::Publish, 0, subject.as_bytes(), payload_len);
    }

    fn publish_tail() -> &'static [u8] {
        b""
    }

    fn put_ping(out: &mut Vec<u8>) {
        encode::put_ping(out);
    }

    fn put_pong(out: &mut Vec<u8>) {
        encode::put_pong(out);
    }

    #[inline]
    fn parse(buf: &[u8]) -> Parsed<'_> {
        let Some((frame, used)) =
            decode_frame(buf, u32::MAX).map_err(|e| ProtoError(format!("BlipMQ: {e}")))?
        else {
            return Ok(None);
        };
        let event =
            match ServerFrame::parse(frame).map_err(|e| ProtoError(format!("BlipMQ: {e}")))? {
                ServerFrame::Message { payload, .. } => Event::Msg(payload),
                ServerFrame::Ping => Event::Ping,
                ServerFrame::Pong => Event::Pong,
                ServerFrame::Ok | ServerFrame::Info { .. } => Event::Ack,
                ServerFrame::Error { code, reason } => Event::Error { code, text: reason },
                ServerFrame::Disconnect { reason } => Event::Disconnect(reason),
            };
        Ok(Some((event, used)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_message_in_pieces() {
        let mut wire = Vec::new();
        encode::put_message(&mut wire, b"a.b", 7, None, b"hello");
        encode::put_pong(&mut wire);
        for cut in 0..wire.len() {
            if let Ok(Some((_, used))) = Blipmq::parse(&wire[..cut]) {
                assert!(used <= cut);
            }
        }
        let (event, used) = Blipmq::parse(&wire).unwrap().unwrap();
        assert_eq!(event, Event::Msg(b"hello"));
        let (event, _) = Blipmq::parse(&wire[used..]).unwrap().unwrap();
        assert_eq!(event, Event::Pong);
    }

    #[test]
    fn publish_head_matches_put_publish() {
        let mut head = Vec::new();
        Blipmq::put_publish_head(&mut head, "a.b", 2);
        head.extend_from_slice(b"hi");
        let mut full = Vec::new();
        encode::put_publish(&mut full, b"a.b", None, b"hi", false);
        assert_eq!(head, full);
    }
}
