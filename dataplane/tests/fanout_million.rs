//! One publisher, four subscribers on two workers (two on each, checked with
//! INFO.worker), 1,000,000 messages with an 8-byte sequence number: every
//! subscriber receives all of them, in order, none lost, and no ERROR.
//! Then the same with large payloads, which workers share between their
//! subscribers' queues instead of copying: every byte is checked.
//! Bounded: each fails after 120 s.

#[macro_use]
mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blipmq_protocol::{decode_frame, encode, Op};
use common::*;

const MESSAGES: u64 = 1_000_000;
const LARGE_MESSAGES: u64 = 20_000;
const SUBJECT: &[u8] = b"fan.out";
const SID: u32 = 77;

/// What the publisher sends as message `seq` of a run.
#[derive(Clone, Copy)]
enum Payloads {
    /// The 8-byte sequence number.
    Sequence,
    /// 4–20 KiB: the sequence number, then bytes derived from it.
    Large,
}

impl Payloads {
    fn build(self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&seq.to_be_bytes());
        if let Payloads::Large = self {
            let len = 4096 + (seq as usize * 7919) % 16384;
            out.extend((8..len).map(|i| (i as u64 ^ seq.wrapping_mul(31)) as u8));
        }
    }
}

/// Reads MESSAGE frames in place from one big buffer; checks sid, subject and
/// the sequence. Returns the count received.
fn fast_reader(
    mut stream: TcpStream,
    messages: u64,
    payloads: Payloads,
    deadline: Instant,
) -> Result<u64, String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4 << 20];
    let (mut start, mut end) = (0usize, 0usize);
    let mut next: u64 = 0;
    let mut expected = Vec::new();
    while next < messages {
        // Decode every whole frame in the buffer.
        loop {
            let (frame, used) = match decode_frame(&buf[start..end], u32::MAX) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(err) => return Err(format!("undecodable bytes after {next} messages: {err}")),
            };
            if frame.op == Op::Message as u8 {
                if frame.topic != SUBJECT || frame.body.len() < 12 || frame.flags != 0 {
                    return Err(format!(
                        "unexpected MESSAGE after {next}: {:?}",
                        frame.topic
                    ));
                }
                let sid = u32::from_be_bytes(frame.body[..4].try_into().unwrap());
                let seq = u64::from_be_bytes(frame.body[4..12].try_into().unwrap());
                if sid != SID || seq != next {
                    return Err(format!(
                        "expected sequence {next} (sid {SID}), got {seq} (sid {sid})"
                    ));
                }
                payloads.build(seq, &mut expected);
                if frame.body[4..] != expected[..] {
                    return Err(format!("message {seq}: payload differs from what was sent"));
                }
                next += 1;
            } else if frame.op == Op::Ping as u8 {
                let mut pong = Vec::new();
                encode::put_pong(&mut pong);
                (&stream).write_all(&pong).map_err(|e| e.to_string())?;
            } else {
                let body = String::from_utf8_lossy(frame.body);
                return Err(format!(
                    "unexpected frame op 0x{:02x} after {next} messages (an ERROR?): {body:?} {:02x?}",
                    frame.op, frame.body
                ));
            }
            start += used;
        }
        if start == end {
            start = 0;
            end = 0;
        } else if buf.len() - end < 64 * 1024 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        match stream.read(&mut buf[end..]) {
            Ok(0) => {
                return Err(format!(
                    "broker closed the connection after {next} messages"
                ))
            }
            Ok(n) => end += n,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("read error after {next} messages: {err}")),
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {next} of {messages} messages within the deadline"
            ));
        }
    }
    Ok(next)
}

#[test]
fn fanout_million_two_workers() {
    fan_out(MESSAGES, Payloads::Sequence);
}

#[test]
fn fanout_large_shared_payloads_two_workers() {
    fan_out(LARGE_MESSAGES, Payloads::Large);
}

fn fan_out(messages: u64, payloads: Payloads) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let broker = Broker::start(
        2,
        "[limits]\nmax_payload = 32768\nmax_pending_bytes = 67108864\n",
    );
    let mut subs = Vec::new();
    for w in [0u32, 0, 1, 1] {
        let mut s = Raw::handshake_on_worker(broker.addr(), w);
        assert_eq!(s.worker(), w);
        s.subscribe(std::str::from_utf8(SUBJECT).unwrap(), SID); // ACK, waits for OK
        subs.push(s);
    }
    let workers: Vec<u32> = subs.iter().map(Raw::worker).collect();
    assert_eq!(workers, vec![0, 0, 1, 1]);

    let (tx, rx) = mpsc::channel::<(String, Result<u64, String>)>();
    for (i, s) in subs.into_iter().enumerate() {
        let tx = tx.clone();
        let stream = s.into_stream();
        let worker = workers[i];
        std::thread::Builder::new()
            .name(format!("sub-{i}"))
            .spawn(move || {
                let result = fast_reader(stream, messages, payloads, deadline);
                let _ = tx.send((format!("subscriber {i} (worker {worker})"), result));
            })
            .expect("spawn reader");
    }

    let mut publisher = Raw::handshake(broker.addr());
    let mut writer = publisher.stream.try_clone().expect("clone");
    writer
        .set_write_timeout(Some(Duration::from_secs(60)))
        .expect("write timeout");
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(128 * 1024);
                let mut payload = Vec::new();
                let mut result = Ok(messages);
                for seq in 0..messages {
                    payloads.build(seq, &mut payload);
                    encode::put_publish(&mut batch, SUBJECT, None, &payload, false);
                    if batch.len() >= 64 * 1024 - 32 || seq + 1 == messages {
                        if let Err(err) = writer.write_all(&batch) {
                            result = Err(format!("publish write failed at {seq}: {err}"));
                            break;
                        }
                        batch.clear();
                    }
                }
                let _ = tx.send(("publisher".into(), result));
            })
            .expect("spawn publisher");
    }
    drop(tx);

    let mut done = 0;
    let mut publisher_done = false;
    while done < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((who, Ok(n))) => {
                assert_eq!(n, messages, "{who}");
                if who == "publisher" {
                    publisher_done = true;
                }
                done += 1;
            }
            Ok((who, Err(err))) => panic!("{who}: {err} (after {:?})", start.elapsed()),
            Err(_) => panic!("fan-out of {messages} messages did not finish within 120 s"),
        }
    }
    assert!(publisher_done);
    // The publisher got no ERROR either: its next answer is the PONG.
    publisher.ping_pong();
    eprintln!(
        "fan-out: {messages} messages x 4 subscribers in {:?}",
        start.elapsed()
    );
}
