//! Redis RESP2: PUBLISH / SUBSCRIBE / PING, client side.

use memchr::memchr;

use super::{parse_decimal, put_decimal, Event, Parsed, ProtoError, Wire};

#[derive(Debug, Clone, Copy)]
pub struct Resp;

fn err(what: &str, bytes: &[u8]) -> ProtoError {
    let shown = &bytes[..bytes.len().min(80)];
    ProtoError(format!(
        "RESP: {what}: {:?}",
        String::from_utf8_lossy(shown)
    ))
}

fn put_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    put_decimal(out, bytes.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A CRLF-ended line starting at `pos`: `(line without CRLF, next position)`.
#[inline]
fn line_at(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, ProtoError> {
    let Some(nl) = memchr(b'\n', &buf[pos..]) else {
        return Ok(None);
    };
    let end = pos + nl;
    if end == pos || buf[end - 1] != b'\r' {
        return Err(err("line not ended by CRLF", &buf[pos..end]));
    }
    Ok(Some((&buf[pos..end - 1], end + 1)))
}

/// One array element at `pos`: a bulk string or an integer (as its digits).
#[inline]
fn element_at(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, ProtoError> {
    let Some((line, next)) = line_at(buf, pos)? else {
        return Ok(None);
    };
    match line.first() {
        Some(b'$') => {
            let len = parse_decimal(&line[1..]).ok_or_else(|| err("bad bulk length", line))?;
            let end = next + len + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[next + len..end] != b"\r\n" {
                return Err(err("bulk string not followed by CRLF", line));
            }
            Ok(Some((&buf[next..next + len], end)))
        }
        Some(b':') => Ok(Some((&line[1..], next))),
        _ => Err(err("unexpected array element", line)),
    }
}

impl Wire for Resp {
    const INFO_BEFORE_TLS: bool = false;

    fn put_hello(_out: &mut Vec<u8>, _name: &str) {}

    fn put_subscribe(out: &mut Vec<u8>, subject: &str, _sid: u32, queue: Option<&str>) {
        assert!(queue.is_none(), "Redis pub/sub has no queue groups");
        out.extend_from_slice(b"*2\r\n");
        put_bulk(out, b"SUBSCRIBE");
        put_bulk(out, subject.as_bytes());
    }

    fn put_publish_head(out: &mut Vec<u8>, subject: &str, payload_len: usize) {
        out.extend_from_slice(b"*3\r\n");
        put_bulk(out, b"PUBLISH");
        put_bulk(out, subject.as_bytes());
        out.push(b'$');
        put_decimal(out, payload_len);
        out.extend_from_slice(b"\r\n");
    }

    fn publish_tail() -> &'static [u8] {
        b"\r\n"
    }

    fn put_ping(out: &mut Vec<u8>) {
        out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    }

    fn put_pong(_out: &mut Vec<u8>) {
        // Redis never pings its clients.
    }

    #[inline]
    fn parse(buf: &[u8]) -> Parsed<'_> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first != b'*' {
            let Some((line, next)) = line_at(buf, 0)? else {
                return Ok(None);
            };
            let event = match first {
                b'+' if line == b"+PONG" => Event::Pong,
                b'+' => Event::Ack,
                b':' => {
                    let text =
                        std::str::from_utf8(&line[1..]).map_err(|_| err("bad integer", line))?;
                    Event::Receivers(text.parse().map_err(|_| err("bad integer", line))?)
                }
                b'-' => Event::Error {
                    code: 0,
                    text: line,
                },
                _ => return Err(err("unexpected reply", line)),
            };
            return Ok(Some((event, next)));
        }
        // A push in subscribe mode: ["message", channel, payload],
        // ["subscribe", channel, count] or ["pong", ""].
        let Some((line, mut pos)) = line_at(buf, 0)? else {
            return Ok(None);
        };
        let count = parse_decimal(&line[1..]).ok_or_else(|| err("bad array length", line))?;
        if !(1..=3).contains(&count) {
            return Err(err("unexpected array length", line));
        }
        let mut items: [&[u8]; 3] = [b""; 3];
        for item in items.iter_mut().take(count) {
            let Some((element, next)) = element_at(buf, pos)? else {
                return Ok(None);
            };
            *item = element;
            pos = next;
        }
        let event = match items[0] {
            b"message" if count == 3 => Event::Msg(items[2]),
            b"pong" => Event::Pong,
            b"subscribe" => Event::Ack,
            other => return Err(err("unexpected push", other)),
        };
        Ok(Some((event, pos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pushes_and_replies() {
        let wire = b"*3\r\n$9\r\nsubscribe\r\n$3\r\na.b\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$3\r\na.b\r\n$5\r\nhe\r\no\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n:4\r\n+PONG\r\n";
        let mut rest: &[u8] = wire;
        let mut events = Vec::new();
        while let Some((event, used)) = Resp::parse(rest).unwrap() {
            events.push(event);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(
            events,
            vec![
                Event::Ack,
                Event::Msg(b"he\r\no"),
                Event::Pong,
                Event::Receivers(4),
                Event::Pong
            ]
        );
    }

    #[test]
    fn incomplete_waits() {
        let wire = b"*3\r\n$7\r\nmessage\r\n$3\r\na.b\r\n$5\r\nhe";
        for cut in 0..wire.len() {
            assert!(Resp::parse(&wire[..cut]).unwrap().is_none(), "cut {cut}");
        }
    }

    #[test]
    fn publish_encoding() {
        let mut out = Vec::new();
        Resp::put_publish_head(&mut out, "a.b", 2);
        out.extend_from_slice(b"hi");
        out.extend_from_slice(Resp::publish_tail());
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$3\r\na.b\r\n$2\r\nhi\r\n");
    }
}
