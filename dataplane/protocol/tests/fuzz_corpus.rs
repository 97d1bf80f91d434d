//! Replays the fuzz targets' corpora through the same logic, so that every
//! input the fuzzer found interesting stays a regression test.

use std::path::Path;

use blipmq_protocol::fuzzing::{fuzz_decode, fuzz_nats_decode};

/// Runs `target` on every file of `corpus/<name>` and on every prefix of it
/// (partial input must not panic either).
fn replay(name: &str, target: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        target(&data);
        for cut in 0..data.len() {
            target(&data[..cut]);
        }
        count += 1;
    }
    assert!(count > 0, "no corpus files in {}", dir.display());
}

#[test]
fn replay_decode_corpus() {
    replay("decode", fuzz_decode);
}

#[test]
fn replay_nats_decode_corpus() {
    replay("nats_decode", fuzz_nats_decode);
}
