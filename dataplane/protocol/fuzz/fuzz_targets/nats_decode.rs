//! Decodes NATS client ops from arbitrary bytes with small limits; see
//! `blipmq_protocol::fuzzing::fuzz_nats_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    blipmq_protocol::fuzzing::fuzz_nats_decode(data);
});
