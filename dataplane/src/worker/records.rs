//! Records that workers exchange over their rings.
//!
//! A DATA record carries one published message once per destination worker,
//! with the queue groups the publishing worker assigned to that destination.
//! INTEREST records keep every worker's view of the others' subscriptions.
//! Records never leave the process, so their layout is private and simple.

const KIND_DATA: u8 = 1;
const KIND_INTEREST_ADD: u8 = 2;
const KIND_INTEREST_REMOVE: u8 = 3;

const DATA_HEAD: usize = 24;

/// Bits of a DATA record's second byte.
const HAS_REPLY: u8 = 0x01;
/// Forwarded for its queue groups only: plain subscribers already got it.
const GROUPS_ONLY: u8 = 0x02;
const HOPS_SHIFT: u8 = 2;
const HOPS_MASK: u8 = 0x0f;
/// Came from the leaf-node hub: never offered back to it.
const FROM_HUB: u8 = 0x80;
/// How often a queue-group delivery may be forwarded between workers before
/// it is counted as undeliverable (views of other workers can be stale).
pub const MAX_HOPS: u8 = 8;

/// How a DATA record travels: first from its publisher's worker, or
/// forwarded for its queue groups because the member picked had left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Routing {
    pub groups_only: bool,
    pub hops: u8,
    /// The message came from the leaf-node hub (see `leaf`).
    pub from_hub: bool,
    /// When the publishing worker read the message, on the broker's
    /// latency clock (see `worker::latency`).
    pub read_at: u64,
}
const INTEREST_HEAD: usize = 6;

pub use crate::session::Message;

/// A record read from a ring, borrowing the ring's memory.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Data {
        message: Message<'a>,
        /// Queue groups whose one delivery this worker must make.
        groups: GroupNames<'a>,
        routing: Routing,
    },
    Interest {
        add: bool,
        filter: &'a [u8],
        queue: Option<&'a [u8]>,
    },
}

/// The queue-group names of a DATA record: `u16 len, bytes` repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupNames<'a> {
    count: u16,
    bytes: &'a [u8],
}

impl<'a> GroupNames<'a> {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.bytes;
        (0..self.count).map(move |_| {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let name = &rest[2..2 + len];
            rest = &rest[2 + len..];
            name
        })
    }
}

/// Bytes of a DATA record with these parts; `groups` are the names assigned
/// to the destination.
pub fn data_len<'g>(message: &Message<'_>, groups: impl Iterator<Item = &'g [u8]>) -> usize {
    let group_bytes: usize = groups.map(|g| 2 + g.len()).sum();
    DATA_HEAD
        + message.subject.len()
        + message.reply.map_or(0, <[u8]>::len)
        + group_bytes
        + message.headers.len()
        + message.payload.len()
}

/// Writes a DATA record into `out`, which is exactly [`data_len`] bytes long.
pub fn write_data<'g>(
    out: &mut [u8],
    routing: Routing,
    message: &Message<'_>,
    groups: impl Iterator<Item = &'g [u8]> + Clone,
) {
    let Message {
        subject,
        reply,
        headers,
        payload,
    } = *message;
    let count = groups.clone().count();
    out[0] = KIND_DATA;
    let mut bits = (routing.hops.min(MAX_HOPS)) << HOPS_SHIFT;
    if reply.is_some() {
        bits |= HAS_REPLY;
    }
    if routing.groups_only {
        bits |= GROUPS_ONLY;
    }
    if routing.from_hub {
        bits |= FROM_HUB;
    }
    out[1] = bits;
    out[2..4].copy_from_slice(&(count as u16).to_be_bytes());
    out[4..6].copy_from_slice(&(subject.len() as u16).to_be_bytes());
    out[6..8].copy_from_slice(&(reply.map_or(0, <[u8]>::len) as u16).to_be_bytes());
    out[8..12].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    out[12..16].copy_from_slice(&(headers.len() as u32).to_be_bytes());
    out[16..24].copy_from_slice(&routing.read_at.to_ne_bytes());
    let mut at = DATA_HEAD;
    for part in [subject, reply.unwrap_or_default()] {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    for group in groups {
        out[at..at + 2].copy_from_slice(&(group.len() as u16).to_be_bytes());
        out[at + 2..at + 2 + group.len()].copy_from_slice(group);
        at += 2 + group.len();
    }
    for part in [headers, payload] {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, out.len());
}

pub fn interest_len(filter: &[u8], queue: Option<&[u8]>) -> usize {
    INTEREST_HEAD + filter.len() + queue.map_or(0, <[u8]>::len)
}

pub fn write_interest(out: &mut [u8], add: bool, filter: &[u8], queue: Option<&[u8]>) {
    out[0] = if add {
        KIND_INTEREST_ADD
    } else {
        KIND_INTEREST_REMOVE
    };
    out[1] = queue.is_some() as u8;
    out[2..4].copy_from_slice(&(filter.len() as u16).to_be_bytes());
    let queue = queue.unwrap_or_default();
    out[4..6].copy_from_slice(&(queue.len() as u16).to_be_bytes());
    out[6..6 + filter.len()].copy_from_slice(filter);
    out[6 + filter.len()..].copy_from_slice(queue);
}

fn be16(bytes: &[u8]) -> usize {
    u16::from_be_bytes([bytes[0], bytes[1]]) as usize
}

fn be32(bytes: &[u8]) -> usize {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
}

/// Reads a record that [`write_data`] or [`write_interest`] wrote. Records
/// come only from this process's workers, so a bad one is a bug: it panics.
pub fn read(record: &[u8]) -> Record<'_> {
    match record[0] {
        KIND_DATA => {
            let bits = record[1];
            let has_reply = bits & HAS_REPLY != 0;
            let count = be16(&record[2..]) as u16;
            let subject_len = be16(&record[4..]);
            let reply_len = be16(&record[6..]);
            let payload_len = be32(&record[8..]);
            let headers_len = be32(&record[12..]);
            let subject_end = DATA_HEAD + subject_len;
            let reply_end = subject_end + reply_len;
            let payload_start = record.len() - payload_len;
            let headers_start = payload_start - headers_len;
            Record::Data {
                message: Message {
                    subject: &record[DATA_HEAD..subject_end],
                    reply: has_reply.then(|| &record[subject_end..reply_end]),
                    headers: &record[headers_start..payload_start],
                    payload: &record[payload_start..],
                },
                groups: GroupNames {
                    count,
                    bytes: &record[reply_end..headers_start],
                },
                routing: Routing {
                    groups_only: bits & GROUPS_ONLY != 0,
                    hops: (bits >> HOPS_SHIFT) & HOPS_MASK,
                    from_hub: bits & FROM_HUB != 0,
                    read_at: u64::from_ne_bytes(record[16..24].try_into().expect("8 bytes")),
                },
            }
        }
        kind @ (KIND_INTEREST_ADD | KIND_INTEREST_REMOVE) => {
            let has_queue = record[1] != 0;
            let filter_len = be16(&record[2..]);
            let filter_end = INTEREST_HEAD + filter_len;
            Record::Interest {
                add: kind == KIND_INTEREST_ADD,
                filter: &record[INTEREST_HEAD..filter_end],
                queue: has_queue.then(|| &record[filter_end..]),
            }
        }
        kind => panic!("ring record of unknown kind {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trip() {
        let groups: [&[u8]; 2] = [b"q1", b"workers"];
        let message = Message {
            subject: b"a.b",
            reply: Some(b"_INBOX.1"),
            headers: b"NATS/1.0\r\nK: v\r\n\r\n",
            payload: b"hello",
        };
        let mut buf = vec![0; data_len(&message, groups.iter().copied())];
        let routing = Routing {
            groups_only: true,
            hops: MAX_HOPS,
            from_hub: true,
            read_at: 1_234_567_890,
        };
        write_data(&mut buf, routing, &message, groups.iter().copied());
        let Record::Data {
            message: read_message,
            groups: names,
            routing: read_routing,
        } = read(&buf)
        else {
            panic!("not data")
        };
        assert_eq!(read_message, message);
        assert_eq!(names.iter().collect::<Vec<_>>(), groups.to_vec());
        assert_eq!(read_routing, routing);
    }

    #[test]
    fn data_without_reply_headers_or_groups() {
        let message = Message {
            subject: b"x",
            ..Message::default()
        };
        let mut buf = vec![0; data_len(&message, std::iter::empty())];
        write_data(&mut buf, Routing::default(), &message, std::iter::empty());
        match read(&buf) {
            Record::Data {
                message: read_message,
                groups,
                routing,
            } => {
                assert_eq!(routing, Routing::default());
                assert_eq!(read_message, message);
                assert!(groups.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn interest_round_trip() {
        for (add, queue) in [(true, None), (false, Some(&b"g"[..]))] {
            let mut buf = vec![0; interest_len(b"a.>", queue)];
            write_interest(&mut buf, add, b"a.>", queue);
            assert_eq!(
                read(&buf),
                Record::Interest {
                    add,
                    filter: b"a.>",
                    queue
                }
            );
        }
    }
}
