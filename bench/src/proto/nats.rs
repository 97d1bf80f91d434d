//! The NATS core text protocol (client side), as nats-server 2.x speaks it.

use memchr::memchr;

use super::{parse_decimal, put_decimal, Event, Parsed, ProtoError, Wire};

#[derive(Debug, Clone, Copy)]
pub struct Nats;

fn err(what: &str, line: &[u8]) -> ProtoError {
    let shown = &line[..line.len().min(80)];
    ProtoError(format!(
        "NATS: {what}: {:?}",
        String::from_utf8_lossy(shown)
    ))
}

impl Wire for Nats {
    const INFO_BEFORE_TLS: bool = true;

    fn put_hello(out: &mut Vec<u8>, name: &str) {
        let json = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "name": name,
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
        });
        out.extend_from_slice(b"CONNECT ");
        out.extend_from_slice(json.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    fn put_subscribe(out: &mut Vec<u8>, subject: &str, sid: u32, queue: Option<&str>) {
        out.extend_from_slice(b"SUB ");
        out.extend_from_slice(subject.as_bytes());
        out.push(b' ');
        if let Some(queue) = queue {
            out.extend_from_slice(queue.as_bytes());
            out.push(b' ');
        }
        put_decimal(out, sid as usize);
        out.extend_from_slice(b"\r\n");
    }

    fn put_publish_head(out: &mut Vec<u8>, subject: &str, payload_len: usize) {
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(subject.as_bytes());
        out.push(b' ');
        put_decimal(out, payload_len);
        out.extend_from_slice(b"\r\n");
    }

    fn publish_tail() -> &'static [u8] {
        b"\r\n"
    }

    fn put_ping(out: &mut Vec<u8>) {
        out.extend_from_slice(b"PING\r\n");
    }

    fn put_pong(out: &mut Vec<u8>) {
        out.extend_from_slice(b"PONG\r\n");
    }

    #[inline]
    fn parse(buf: &[u8]) -> Parsed<'_> {
        let Some(nl) = memchr(b'\n', buf) else {
            if buf.len() > 64 * 1024 {
                return Err(err("control line too long", buf));
            }
            return Ok(None);
        };
        if nl == 0 || buf[nl - 1] != b'\r' {
            return Err(err("line not ended by CRLF", &buf[..nl]));
        }
        let line = &buf[..nl - 1];
        let after = nl + 1;
        if line.starts_with(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let space = line
                .iter()
                .rposition(|&b| b == b' ')
                .ok_or_else(|| err("MSG without size", line))?;
            let size =
                parse_decimal(&line[space + 1..]).ok_or_else(|| err("bad MSG size", line))?;
            let total = after + size + 2;
            if buf.len() < total {
                return Ok(None);
            }
            if &buf[after + size..total] != b"\r\n" {
                return Err(err("MSG payload not followed by CRLF", line));
            }
            return Ok(Some((Event::Msg(&buf[after..after + size]), total)));
        }
        let event = match line {
            b"PING" => Event::Ping,
            b"PONG" => Event::Pong,
            b"+OK" => Event::Ack,
            _ if line.starts_with(b"INFO ") => Event::Ack,
            _ if line.starts_with(b"-ERR") => Event::Error {
                code: 0,
                text: line,
            },
            _ => return Err(err("unknown operation", line)),
        };
        Ok(Some((event, after)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_msg_and_control_lines() {
        let wire = b"INFO {\"x\":1}\r\nMSG a.b 1 5\r\nhello\r\nMSG a.b 2 r.x 2\r\nhi\r\nPING\r\n-ERR 'Slow Consumer'\r\n";
        let mut rest: &[u8] = wire;
        let mut events = Vec::new();
        while let Some((event, used)) = Nats::parse(rest).unwrap() {
            events.push(format!("{event:?}"));
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(events.len(), 5);
        assert_eq!(events[1], format!("{:?}", Event::Msg(b"hello")));
        assert_eq!(events[2], format!("{:?}", Event::Msg(b"hi")));
        assert_eq!(events[3], "Ping");
    }

    #[test]
    fn incomplete_msg_waits() {
        let wire = b"MSG a.b 1 5\r\nhel";
        assert!(Nats::parse(wire).unwrap().is_none());
        assert!(Nats::parse(b"MSG a.b").unwrap().is_none());
    }

    #[test]
    fn encodes_requests() {
        let mut out = Vec::new();
        Nats::put_subscribe(&mut out, "a.b", 3, Some("g"));
        Nats::put_publish_head(&mut out, "a.b", 16);
        assert_eq!(out, b"SUB a.b g 3\r\nPUB a.b 16\r\n");
    }
}
