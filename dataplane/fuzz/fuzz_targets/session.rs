//! Plays a script of connections, frames, raw bytes, partial writes, time
//! and closes on two worker cores; see `blipmq_dataplane::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blipmq_dataplane::fuzzing::fuzz_session(data);
});
