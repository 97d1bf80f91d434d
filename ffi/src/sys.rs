//! Raw bindings: bindgen's output over `wrapper.h` plus the generated flag
//! constants (see build.rs).
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// RTE_* flag macros evaluated by the C compiler at build time.
pub mod consts {
    include!(concat!(env!("OUT_DIR"), "/consts.rs"));
}
pub use consts::*;
