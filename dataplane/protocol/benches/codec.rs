//! Codec micro-benchmarks: decoding a batch of PUBLISH frames in place and
//! encoding MESSAGE frames, per frame. `cargo bench -p blipmq-protocol`.

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

criterion_group!(benches, decode, encode_message);
criterion_main!(benches);
