//! Decodes frames from arbitrary bytes with a small frame limit and parses
//! each in both directions; see `blipmq_protocol::fuzzing::fuzz_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blipmq_protocol::fuzzing::fuzz_decode(data);
});
