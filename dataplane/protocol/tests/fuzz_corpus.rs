//! Replays the `decode` fuzz target's corpus through the same logic, so that
//! every input the fuzzer found interesting stays a regression test.

use std::path::Path;

use blipmq_protocol::fuzzing::fuzz_decode;

#[test]
fn replay_decode_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        fuzz_decode(&data);
        // Every prefix too: partial input must not panic either.
        for cut in 0..data.len() {
            fuzz_decode(&data[..cut]);
        }
        count += 1;
    }
    assert!(count > 0, "no corpus files in {}", dir.display());
}
