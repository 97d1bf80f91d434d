#!/usr/bin/env bash
# Builds a libFuzzer target and runs it for a bounded time over its committed
# corpus; fails on a crash, a hang or an allocation over the limit, and says
# where the input that did it is.
#
#   dataplane/fuzz/run.sh TARGET|all SECONDS [JOBS]
#
# Targets: decode, nats_decode (the binary and NATS decoders,
# dataplane/protocol/fuzz) and session (two worker cores driven by a script,
# dataplane/fuzz). New inputs go to a scratch corpus under the target dir,
# not to the committed one. No cargo-fuzz: stable cargo with
# RUSTC_BOOTSTRAP=1 and the flags cargo-fuzz passes (sanitizer coverage;
# FUZZ_SANITIZER=address adds AddressSanitizer). Extra libFuzzer options can
# come in FUZZ_ARGS, e.g. FUZZ_ARGS=-merge=1 with a fresh corpus dir.
set -euo pipefail

usage() { echo "usage: $0 decode|nats_decode|session|all SECONDS [JOBS]" >&2; exit 2; }
[ $# -ge 2 ] || usage
target=$1 seconds=$2 jobs=${3:-1}
root=$(cd "$(dirname "$0")/../.." && pwd)

if [ "$target" = all ]; then
    for t in decode nats_decode session; do "$0" "$t" "$seconds" "$jobs"; done
    exit 0
fi
case $target in
    decode | nats_decode) crate=$root/dataplane/protocol/fuzz max_len=4096 ;;
    session) crate=$root/dataplane/fuzz max_len=16384 ;;
    *) usage ;;
esac

triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-$root/target}/fuzz
rustflags="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cforce-frame-pointers"
if [ "${FUZZ_SANITIZER:-}" = address ]; then
    rustflags="$rustflags -Zsanitizer=address"
    target_dir=$target_dir-asan
fi
# The broker's own dependency versions (the fuzz crates' lock files are not
# committed; cargo adds libfuzzer-sys and drops the rest).
[ -f "$crate/Cargo.lock" ] || cp "$root/Cargo.lock" "$crate/Cargo.lock"
# --target keeps the flags off build scripts and proc macros.
RUSTC_BOOTSTRAP=1 RUSTFLAGS="$rustflags" CARGO_TARGET_DIR=$target_dir \
    cargo build --release --quiet --manifest-path "$crate/Cargo.toml" --target "$triple" --bin "$target"
binary=$target_dir/$triple/release/$target

scratch=$target_dir/corpus/$target
artifacts=$target_dir/artifacts/$target/
mkdir -p "$scratch" "$artifacts"
log=$target_dir/$target.log
echo "fuzzing $target for ${seconds}s with $jobs job(s); log $log" >&2
status=0
jobs_args=()
[ "$jobs" -gt 1 ] && jobs_args=(-jobs="$jobs" -workers="$jobs")
# The scratch corpus first: libFuzzer adds new inputs to the first dir. Run
# in the target dir, where parallel jobs write their fuzz-N.log.
rm -f "$target_dir"/fuzz-*.log
(cd "$target_dir" && "$binary" "$scratch" "$crate/corpus/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -max_len="$max_len" -artifact_prefix="$artifacts" -print_final_stats=1 \
    "${jobs_args[@]}" ${FUZZ_ARGS:-}) >"$log" 2>&1 || status=$?
# Parallel jobs report in their own fuzz-N.log (the main log may repeat
# them): their final stats are counted once, from there.
logs=("$log")
stats_logs=("$log")
if [ "$jobs" -gt 1 ]; then
    mapfile -t job_logs < <(ls "$target_dir"/fuzz-*.log 2>/dev/null || true)
    logs+=("${job_logs[@]}")
    stats_logs=("${job_logs[@]}")
fi

# The figures: executions, coverage and corpus of the last status line.
execs=$({ grep -ho 'stat::number_of_executed_units: *[0-9]*' "${stats_logs[@]}" /dev/null || true; } \
    | awk '{s += $2} END {print s + 0}')
last=$({ grep -hE '^#[0-9]+.*(cov|ft):' "${stats_logs[@]}" /dev/null || true; } | tail -n 1)
echo "$target: executions $execs; last status: ${last:-none}"
if [ "$status" -ne 0 ] || grep -qE 'ERROR: libFuzzer|==ERROR|panicked at' "${logs[@]}"; then
    { grep -hE 'panicked at|ERROR: |SUMMARY|Test unit written to|artifact_prefix' "${logs[@]}" || true; } \
        | head -n 20 >&2 || true
    echo "$target: FAILED (exit $status); crash inputs under $artifacts, log $log" >&2
    exit 1
fi
