//! Robustness of `blipmqd` against hostile or broken clients: garbage,
//! truncated frames, huge lengths, subscription floods, clients that never
//! read. After each abuse the process must still be alive and serve a fresh
//! client end to end. Run with 1 and 2 workers (`w1::*`, `w2::*`).

#[macro_use]
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use blipmq_protocol::{encode, Op};
use common::*;

/// A random frame that is well framed (len and topic_len consistent) but
/// whose op, flags, topic and body are arbitrary.
fn random_framed(rng: &mut XorShift, out: &mut Vec<u8>) {
    const OPS: [u8; 13] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x00, 0x42,
    ];
    let op = OPS[rng.below(OPS.len() as u64) as usize];
    let flag_bits = if rng.below(4) == 0 {
        rng.next_u64() as u8
    } else {
        rng.below(4) as u8
    };
    let topic_len = rng.below(40) as usize;
    let body_len = rng.below(120) as usize;
    let mut topic = vec![0u8; topic_len];
    if rng.below(2) == 0 {
        // Printable subject-ish bytes, with dots and wildcards.
        const CHARS: &[u8] = b"ab.*>.x";
        for b in topic.iter_mut() {
            *b = CHARS[rng.below(CHARS.len() as u64) as usize];
        }
    } else {
        rng.fill(&mut topic);
    }
    let mut body = vec![0u8; body_len];
    rng.fill(&mut body);
    out.extend(raw_frame(op, flag_bits, &topic, &body));
}

/// 200 connections send 0..4 KiB of garbage (raw random bytes, or randomly
/// filled but well framed frames), some after a valid CONNECT. Whatever the
/// broker answers must be legal frames, it must close or keep serving, and it
/// must survive.
fn random_garbage(workers: usize) {
    let mut broker = Broker::start(workers, BASE_CONFIG);
    let mut rng = XorShift::new(0x5eed_b11b_0000 + workers as u64);
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in 0..200 {
        assert!(
            Instant::now() < deadline,
            "garbage connections took over 15 s (at {i})"
        );
        let mut c = Raw::connect(broker.addr());
        let connected = rng.below(2) == 0;
        if connected {
            c.do_connect(r#"{"protocol":1}"#);
        }
        let len = rng.below(4097) as usize;
        let mut garbage = Vec::with_capacity(len + 256);
        if rng.below(3) == 0 {
            while garbage.len() < len {
                random_framed(&mut rng, &mut garbage);
            }
        } else {
            garbage.resize(len, 0);
            rng.fill(&mut garbage);
        }
        // Sent in a few pieces, so that frames straddle reads.
        let mut rest = &garbage[..];
        let mut ok = true;
        while !rest.is_empty() && ok {
            let cut = (1 + rng.below(rest.len() as u64)) as usize;
            ok = c.try_send(&rest[..cut]).is_ok();
            rest = &rest[cut..];
        }
        match rng.below(4) {
            0 => drop(c), // vanish without reading anything
            _ => {
                c.shutdown_write();
                // Every frame before the close must be a legal broker frame
                // (OwnedFrame::parse panics otherwise).
                let frames = c.expect_closed_within(Duration::from_secs(5));
                for f in &frames {
                    let _ = f.parse();
                }
            }
        }
    }
    broker.assert_alive();
    assert_serves_fresh_client(broker.addr());
}

/// Valid frames cut at every interesting point, then the connection ends
/// (half-close, or drop). The broker must close its side and survive; the
/// subscriptions of those connections must be gone.
fn truncated_frames_then_close(workers: usize) {
    let mut broker = Broker::start(workers, BASE_CONFIG);
    let frames: Vec<Vec<u8>> = vec![
        build(|b| encode::put_publish(b, b"tr.x", Some(b"tr.reply"), &[7u8; 300], true)),
        build(|b| encode::put_subscribe(b, b"tr.*", 9, Some(b"grp"), true)),
        build(|b| encode::put_unsubscribe(b, 9, 4, true)),
        build(|b| encode::put_connect(b, br#"{"protocol":1,"verbose":true}"#)),
        ping_bytes(),
    ];
    for (fi, frame) in frames.iter().enumerate() {
        let mut cuts: Vec<usize> = vec![1, 2, 3, 4, 5, 7, 8, 9, frame.len() / 2, frame.len() - 1];
        cuts.retain(|&k| k < frame.len());
        cuts.dedup();
        for &k in &cuts {
            for (variant, handshake) in [(0, true), (1, true), (2, false)] {
                let mut c = Raw::connect(broker.addr());
                if handshake {
                    c.do_connect(r#"{"protocol":1}"#);
                    // A live subscription that must be cleaned up with the connection.
                    c.subscribe("tr.x", 1);
                }
                c.send(&frame[..k]);
                if variant == 1 {
                    drop(c);
                } else {
                    c.shutdown_write();
                    let got = c.expect_closed_within(Duration::from_secs(5));
                    for f in &got {
                        let _ = f.parse();
                    }
                    assert!(
                        got.iter().all(|f| !f.is_op(Op::Message)),
                        "frame {fi} cut at {k}: {got:?}"
                    );
                }
            }
        }
    }
    broker.assert_alive();
    // No subscription of the dead connections receives anything, and
    // publishing to their subject is harmless.
    let mut p = Raw::handshake(broker.addr());
    for _ in 0..100 {
        p.publish("tr.x", b"to the dead");
    }
    p.ping_pong();
    broker.assert_alive();
    assert_serves_fresh_client(broker.addr());
}

/// Lengths near and past every limit: 0xFFFFFFFF, 0x80000000, max+1 with a
/// partial body, topic_len past len: 413 or 400 and close, never a hang or
/// a crash.
fn huge_lengths(workers: usize) {
    let mut broker = Broker::start(workers, BASE_CONFIG);
    let limit = 1024 + 1024;
    for handshake in [true, false] {
        for len in [u32::MAX, 0x8000_0000, 0x0100_0000, limit + 1] {
            let mut c = Raw::connect(broker.addr());
            if handshake {
                c.do_connect(r#"{"protocol":1}"#);
            }
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0x02, 0x00, 0x01, 0x00, b'x']);
            bytes.extend_from_slice(&[0u8; 1000]);
            let _ = c.try_send(&bytes);
            let frames = c.expect_closed();
            match frames.as_slice() {
                [only] if only.error().map(|e| e.0) == Some(413) => {}
                _ => panic!("len 0x{len:08x} (after CONNECT: {handshake}): expected ERROR 413 then close, got {frames:?}"),
            }
        }
        for (topic_len, len) in [(0xffffu16, 4u32), (5, 8), (100, 50)] {
            let mut c = Raw::connect(broker.addr());
            if handshake {
                c.do_connect(r#"{"protocol":1}"#);
            }
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.push(0x02);
            bytes.extend_from_slice(&topic_len.to_be_bytes());
            bytes.push(0);
            bytes.extend_from_slice(&vec![b'a'; len as usize - 4]);
            let _ = c.try_send(&bytes);
            let frames = c.expect_closed();
            match frames.as_slice() {
                [only] if only.error().map(|e| e.0) == Some(400) => {}
                _ => panic!(
                    "topic_len {topic_len} > len {len} (after CONNECT: {handshake}): expected ERROR 400 then close, got {frames:?}"
                ),
            }
        }
    }
    broker.assert_alive();
    assert_serves_fresh_client(broker.addr());
}

/// 5000 SUBSCRIBEs against a limit of 4, pipelined: 4 OK then 4996 ERROR
/// 429, in order, the connection stays open and the 4 work. Without ACK the
/// refused ones get nothing but 429s either.
fn thousands_of_subscriptions_past_limit(workers: usize) {
    let mut broker = Broker::start(
        workers,
        "[limits]\nmax_subscriptions = 4\nmax_pending_bytes = 1048576\n",
    );
    let n = 5000u32;
    for ack in [true, false] {
        let mut c = Raw::handshake(broker.addr());
        let mut writer = c.stream.try_clone().expect("clone stream");
        let sender = std::thread::spawn(move || {
            let mut batch = Vec::new();
            for sid in 0..n {
                let subject = format!("many.{sid}");
                encode::put_subscribe(&mut batch, subject.as_bytes(), sid, None, ack);
                if batch.len() >= 64 * 1024 {
                    writer.write_all(&batch).expect("write SUBSCRIBEs");
                    batch.clear();
                }
            }
            encode::put_ping(&mut batch);
            writer.write_all(&batch).expect("write SUBSCRIBEs");
        });
        let mut oks = 0;
        let mut refused = 0;
        loop {
            let frame = c.read_frame();
            if frame.is_op(Op::Pong) {
                break;
            }
            match frame.error() {
                Some((429, _)) => refused += 1,
                None if frame.is_op(Op::Ok) => {
                    assert_eq!(refused, 0, "an OK after a 429: limit not applied in order");
                    oks += 1;
                }
                _ => panic!("unexpected {frame:?}"),
            }
        }
        sender.join().expect("sender thread");
        if ack {
            assert_eq!((oks, refused), (4, n - 4), "with ACK");
        } else {
            assert_eq!(oks, 0, "OK without ACK or verbose");
        }
        // The first four work, the rest do not exist.
        for sid in [0u32, 1, 3, 4, 4999] {
            c.publish(&format!("many.{sid}"), b"x");
        }
        let frames = c.frames_until_pong();
        let mut sids: Vec<u32> = frames
            .iter()
            .map(|f| as_msg(f).unwrap_or_else(|| panic!("{f:?}")).sid)
            .collect();
        sids.sort();
        assert_eq!(sids, vec![0, 1, 3]);
    }
    broker.assert_alive();
    assert_serves_fresh_client(broker.addr());
}

/// 20 000 live subscriptions on one connection (within the limit), matched,
/// then the connection vanishes: the broker cleans up and keeps serving.
fn many_subscriptions_then_vanish(workers: usize) {
    let mut broker = Broker::start(
        workers,
        "[limits]\nmax_subscriptions = 50000\nmax_pending_bytes = 4194304\n",
    );
    let n = 20_000u32;
    let mut c = Raw::handshake(broker.addr());
    let mut writer = c.stream.try_clone().expect("clone stream");
    let sender = std::thread::spawn(move || {
        let mut batch = Vec::new();
        for sid in 0..n {
            let subject = match sid % 4 {
                0 => format!("big.{sid}"),
                1 => format!("big.{sid}.*"),
                2 => format!("big.*.{sid}"),
                _ => format!("big.{sid}.>"),
            };
            encode::put_subscribe(&mut batch, subject.as_bytes(), sid, None, false);
            if batch.len() >= 64 * 1024 {
                writer.write_all(&batch).expect("write SUBSCRIBEs");
                batch.clear();
            }
        }
        encode::put_ping(&mut batch);
        writer.write_all(&batch).expect("write SUBSCRIBEs");
    });
    c.expect_pong();
    sender.join().expect("sender");
    let mut p = Raw::handshake(broker.addr());
    p.publish("big.4", b"a"); // sid 4
    p.publish("big.5.x", b"b"); // sid 5
    p.publish("big.q.6", b"c"); // sid 6
    p.publish("big.7.x.y", b"d"); // sid 7
    p.publish("big.none", b"e");
    p.ping_pong();
    let mut sids: Vec<u32> = c.read_msgs(4).iter().map(|m| m.sid).collect();
    sids.sort();
    assert_eq!(sids, vec![4, 5, 6, 7]);
    c.expect_silence(Duration::from_millis(100));
    drop(c);
    for i in 0..200 {
        p.publish(&format!("big.{i}"), b"to nobody");
    }
    p.ping_pong();
    broker.assert_alive();
    assert_serves_fresh_client(broker.addr());
}

/// Clients that never read while a publisher floods them, one publisher that
/// vanishes mid-flood, and connection churn: the broker stays up, cuts only
/// the non-readers, and serves a fresh client end to end.
fn flood_non_readers_then_fresh_client(workers: usize) {
    let mut broker = Broker::start(
        workers,
        "[limits]\nmax_payload = 4096\nmax_pending_bytes = 65536\n",
    );
    let stuck: Vec<Raw> = (0..3)
        .map(|i| {
            let mut s =
                small_rcvbuf_handshake_on_worker(broker.addr(), 4096, Some((i % workers) as u32));
            s.subscribe("fl.>", 1);
            s
        })
        .collect();
    let mut payload = vec![b'f'; 4000];
    let mut p = Raw::handshake(broker.addr());
    let mut batch = Vec::new();
    let start = Instant::now();
    for i in 0..4000u32 {
        payload[..4].copy_from_slice(&i.to_be_bytes());
        encode::put_publish(&mut batch, b"fl.x", None, &payload, false);
        if batch.len() >= 64 * 1024 {
            p.try_send(&batch).unwrap_or_else(|e| {
                panic!("publisher blocked or cut by non-reading subscribers: {e}")
            });
            batch.clear();
        }
    }
    p.send(&batch);
    p.ping_pong();
    assert!(start.elapsed() < Duration::from_secs(15));

    // A second publisher disappears with half a frame written.
    let mut q = Raw::handshake(broker.addr());
    let mut bytes = Vec::new();
    for _ in 0..100 {
        encode::put_publish(&mut bytes, b"fl.y", None, &payload, false);
    }
    let _ = q.try_send(&bytes[..bytes.len() - 1000]);
    drop(q);

    // Churn: connections that come and go at every stage of the handshake.
    for i in 0..300 {
        let addr = broker.addr();
        match i % 3 {
            0 => drop(std::net::TcpStream::connect(addr).expect("connect")),
            1 => drop(Raw::connect(addr)),
            _ => drop(Raw::handshake(addr)),
        }
    }

    // The non-readers were cut: reading now ends in EOF.
    for (i, mut s) in stuck.into_iter().enumerate() {
        let (frames, _partial) = s.expect_closed_allow_partial_within(Duration::from_secs(10));
        let last = frames.last();
        if let Some(f) = last.filter(|f| !f.is_op(Op::Message)) {
            let (code, reason) = f
                .error()
                .unwrap_or_else(|| panic!("non-reader {i}: unexpected {f:?}"));
            assert!(
                code == 503 && reason.contains("slow consumer"),
                "non-reader {i}: {f:?}"
            );
        }
    }
    p.ping_pong();
    broker.assert_alive();
    assert_serves_fresh_client(broker.addr());
}

/// A client that floods PINGs and never reads the PONGs: the broker must
/// bound what it holds for it (stop reading it, or cut it), stay small, and
/// keep serving others.
fn answer_flood_without_reading(workers: usize) {
    let mut broker = Broker::start(
        workers,
        "[limits]\nmax_payload = 65536\nmax_pending_bytes = 1048576\n",
    );
    let mut c = small_rcvbuf_handshake_on_worker(broker.addr(), 4096, None);
    c.stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .expect("write timeout");
    let mut pings = Vec::with_capacity(64 * 1024);
    while pings.len() < 64 * 1024 {
        encode::put_ping(&mut pings);
    }
    // Up to 64 MiB of PINGs (8 M PONGs owed), for at most 3 s.
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < 64 << 20 && start.elapsed() < Duration::from_secs(3) {
        if c.try_send(&pings).is_err() {
            break; // paced (write timeout) or cut: both fine
        }
        sent += pings.len();
    }
    let rss_kib = broker_rss_kib(broker.pid());
    assert!(
        rss_kib < 256 * 1024,
        "blipmqd holds {rss_kib} KiB after {sent} bytes of PINGs from a client that does not read"
    );
    broker.assert_alive();
    assert_serves_fresh_client(broker.addr());
    drop(c);
    broker.assert_alive();
}

for_workers!(
    random_garbage,
    truncated_frames_then_close,
    huge_lengths,
    thousands_of_subscriptions_past_limit,
    many_subscriptions_then_vanish,
    flood_non_readers_then_fresh_client,
    answer_flood_without_reading,
);
