//! Replays the session fuzz target's corpus (dataplane/fuzz/corpus/session)
//! through the same logic, so that every input the fuzzer found interesting
//! stays a regression test, and checks that the committed seeds are the
//! ones `session_seeds` writes.

use std::path::{Path, PathBuf};

use blipmq_dataplane::fuzzing::{fuzz_session, session_seeds};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session")
}

#[test]
fn replay_session_corpus() {
    let dir = corpus();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            fuzz_session(&std::fs::read(&path).unwrap());
            count += 1;
        }
    }
    assert!(count > 0, "no corpus files in {}", dir.display());
}

#[test]
fn committed_seeds_are_current() {
    for (name, script) in session_seeds() {
        let path = corpus().join(format!("seed_{name}"));
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == script,
            "{} is stale: rewrite the seeds with \
             `cargo test --release -p blipmq-dataplane --test fuzz_corpus -- --ignored`",
            path.display()
        );
    }
}

/// Writes the seed files (run when the session script's format changes).
#[test]
#[ignore = "writes the committed seed corpus"]
fn write_session_seeds() {
    std::fs::create_dir_all(corpus()).unwrap();
    for (name, script) in session_seeds() {
        std::fs::write(corpus().join(format!("seed_{name}")), script).unwrap();
    }
}
