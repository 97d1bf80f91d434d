//! `blipmq-bench --transport dpdk` end to end, bounded: blipmqd's dpdk
//! backend on a memif pair driven by the DPDK load generator, beside the
//! kernel backend, in quick phases. Needs root, DPDK and builds with the
//! dpdk features (`--features blipmq-dataplane/dpdk,blipmq-bench/dpdk`);
//! skips with the reason without them, and fails instead under CI=true.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(180);

fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the DPDK load generator test cannot run under CI=true: {why}");
    }
    eprintln!("skipped: {why}");
}

fn blipmqd() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_blipmq-bench")).with_file_name("blipmqd")
}

#[test]
fn dpdk_load_generator_delivers_every_message_through_the_dpdk_backend() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("needs root (DPDK's memif and EAL)");
    }
    if !cfg!(feature = "dpdk") {
        return skip_or_fail(
            "blipmq-bench was built without its dpdk feature \
             (--features blipmq-dataplane/dpdk,blipmq-bench/dpdk)",
        );
    }
    if !blipmqd().is_file() {
        return skip_or_fail("no blipmqd next to blipmq-bench (cargo build --release --workspace)");
    }
    let out = std::env::temp_dir().join(format!("blipmq-dpdk-loadgen-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_blipmq-bench"))
        .args(["--transport", "dpdk", "--quick"])
        .args(["-s", "tp-1x1-128B,tp-1x4-1KiB"])
        .arg("--out")
        .arg(&out)
        .spawn()
        .expect("blipmq-bench starts");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("blipmq-bench --transport dpdk took over {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "blipmq-bench failed: {status}");
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("results.json")).expect("results.json written"),
    )
    .expect("results.json parses");
    let results = json["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "two scenarios × two transports");
    for result in results {
        let label = format!("{} on {}", result["scenario"], result["backend"]);
        assert_eq!(result["status"], "ok", "{label}: {result:#}");
        assert!(result["delivered"].as_u64().unwrap() > 0, "{label}");
        for count in ["missing", "gaps", "reordered", "duplicates", "malformed"] {
            assert_eq!(result[count], 0, "{label}: {count}");
        }
        if result["backend"] == "dpdk" {
            assert!(
                result["loadgen_busy"].as_f64().is_some(),
                "{label}: the generator reports its loop"
            );
        }
    }
    let markdown = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(markdown.contains("dpdk, memif, DPDK load generator"));
    let _ = std::fs::remove_dir_all(&out);
}
