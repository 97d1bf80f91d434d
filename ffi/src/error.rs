//! The crate's error type: every DPDK failure carries the call, the errno and
//! `rte_strerror`'s text for it.

use std::ffi::CStr;
use std::os::raw::c_int;

use crate::sys;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a DPDK call or before one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A DPDK call failed. `code` is a positive errno value: `rte_errno` for
    /// calls that return -1 or NULL, the negated return value for calls that
    /// return `-errno`; `message` is `rte_strerror(code)`.
    #[error("{call} failed: {message} (errno {code})")]
    Dpdk {
        call: String,
        code: i32,
        message: String,
    },
    /// `rte_eal_init` runs once per process; this process already ran it
    /// (whether it succeeded, failed or was cleaned up since).
    #[error(
        "the EAL was already initialised in this process (rte_eal_init runs once per process)"
    )]
    EalAlreadyInitialized,
    /// The calling thread already has an lcore id (an EAL thread, or one
    /// registered before).
    #[error("this thread already has lcore id {lcore}")]
    ThreadAlreadyRegistered { lcore: u32 },
    /// An argument that DPDK would reject or misread (checked before the call).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The call does not fit the object's state (a queue taken twice, a port
    /// stopped while its queues are held, ...).
    #[error("invalid state: {0}")]
    InvalidState(String),
}

impl Error {
    /// The errno of a [`Error::Dpdk`], if it is one.
    pub fn code(&self) -> Option<i32> {
        match self {
            Error::Dpdk { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A failure reported through `rte_errno` (the call returned -1 or NULL).
    pub(crate) fn errno(call: impl Into<String>) -> Error {
        Error::from_code(call, errno())
    }

    /// A failure reported as a negative return value (`-errno`).
    pub(crate) fn ret(call: impl Into<String>, ret: c_int) -> Error {
        Error::from_code(call, ret.saturating_neg())
    }

    fn from_code(call: impl Into<String>, code: i32) -> Error {
        Error::Dpdk {
            call: call.into(),
            code,
            message: strerror(code),
        }
    }
}

/// `Ok(ret)` for a non-negative return value, else [`Error::ret`].
pub(crate) fn check(call: impl FnOnce() -> String, ret: c_int) -> Result<c_int> {
    if ret < 0 {
        Err(Error::ret(call(), ret))
    } else {
        Ok(ret)
    }
}

/// The calling thread's `rte_errno`.
pub fn errno() -> i32 {
    // SAFETY: reads the calling thread's own thread-local rte_errno; valid
    // before, during and after the EAL's lifetime.
    unsafe { sys::blipmq_errno() }
}

/// `rte_strerror(code)`: DPDK's own codes, else the C library's text.
pub fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror accepts any int and returns a NUL-terminated string,
    // either static or in a thread-local buffer, that stays valid until this
    // thread calls it again; it is copied out before that.
    unsafe {
        let s = sys::rte_strerror(code);
        if s.is_null() {
            return format!("error {code}");
        }
        CStr::from_ptr(s).to_string_lossy().into_owned()
    }
}
