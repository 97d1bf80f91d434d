//! Shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;

/// What a test does when the crate was built as a stub: prints the skip line
/// on the real stdout (past libtest's capture), or fails under `CI=true`.
pub fn dpdk_missing() {
    skip("DPDK not found by pkg-config libdpdk");
}

/// Prints `skipped: <why>` on the real stdout, or panics when `CI=true`.
pub fn skip(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (and CI=true: not skipping)");
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "skipped: {why}");
    let _ = out.flush();
}
