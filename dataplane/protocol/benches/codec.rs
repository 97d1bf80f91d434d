//! Codec micro-benchmarks: decoding a batch of PUBLISH frames in place and
//! encoding MESSAGE frames, per frame; and the same for the NATS text
//! protocol (PUB decoded, MSG encoded), to compare the two codecs.
//! `cargo bench -p blipmq-protocol`.

use blipmq_protocol::nats::{self, decode_client_op, ClientOp, NatsLimits};
use blipmq_protocol::{decode_frame, encode, Request};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const FRAMES: usize = 1024;

fn publish_batch(payload: usize) -> Vec<u8> {
    let body = vec![7u8; payload];
    let mut buf = Vec::new();
    for _ in 0..FRAMES {
        encode::put_publish(&mut buf, b"orders.eu.created", None, &body, false);
    }
    buf
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for payload in [16usize, 128, 1024] {
        let buf = publish_batch(payload);
        group.bench_function(format!("{payload}B"), |b| {
            b.iter(|| {
                let mut at = 0;
                let mut bytes = 0;
                while let Some((frame, used)) = decode_frame(&buf[at..], u32::MAX).unwrap() {
                    if let Ok(Request::Publish { payload, .. }) = Request::parse(frame) {
                        bytes += payload.len();
                    }
                    at += used;
                }
                black_box(bytes)
            })
        });
    }
    group.finish();
}

fn encode_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_message");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for payload in [16usize, 128, 1024] {
        let body = vec![7u8; payload];
        let mut out = Vec::with_capacity(FRAMES * (payload + 64));
        group.bench_function(format!("{payload}B"), |b| {
            b.iter(|| {
                out.clear();
                for sid in 0..FRAMES as u32 {
                    encode::put_message(&mut out, b"orders.eu.created", sid, None, &body);
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn nats_pub_batch(payload: usize) -> Vec<u8> {
    let body = vec![7u8; payload];
    let mut buf = Vec::new();
    for _ in 0..FRAMES {
        buf.extend_from_slice(format!("PUB orders.eu.created {payload}\r\n").as_bytes());
        buf.extend_from_slice(&body);
        buf.extend_from_slice(b"\r\n");
    }
    buf
}

fn nats_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("nats_decode_pub");
    group.throughput(Throughput::Elements(FRAMES as u64));
    let limits = NatsLimits::default();
    for payload in [16usize, 128, 1024] {
        let buf = nats_pub_batch(payload);
        group.bench_function(format!("{payload}B"), |b| {
            b.iter(|| {
                let mut at = 0;
                let mut bytes = 0;
                while let Some((op, used)) = decode_client_op(&buf[at..], &limits).unwrap() {
                    if let ClientOp::Pub { payload, .. } = op {
                        bytes += payload.len();
                    }
                    at += used;
                }
                black_box(bytes)
            })
        });
    }
    group.finish();
}

fn nats_encode_msg(c: &mut Criterion) {
    let mut group = c.benchmark_group("nats_encode_msg");
    group.throughput(Throughput::Elements(FRAMES as u64));
    // NATS sids are text; formatting them is the subscriber's, done once.
    let sids: Vec<Vec<u8>> = (0..FRAMES)
        .map(|sid| sid.to_string().into_bytes())
        .collect();
    for payload in [16usize, 128, 1024] {
        let body = vec![7u8; payload];
        let mut out = Vec::with_capacity(FRAMES * (payload + 64));
        group.bench_function(format!("{payload}B"), |b| {
            b.iter(|| {
                out.clear();
                for sid in &sids {
                    nats::encode::put_msg(&mut out, b"orders.eu.created", sid, None, &body);
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    decode,
    encode_message,
    nats_decode,
    nats_encode_msg
);
criterion_main!(benches);
