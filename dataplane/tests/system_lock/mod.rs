//! A lock shared by the tests that read or change machine-wide state (the
//! hugepage pools, hugetlbfs mounts, NIC drivers), in this test binary and
//! in others running at the same time: an exclusive `flock` on one file.

use std::fs;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

/// Longest wait for another test to release the lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Held by every test that reads or changes the machine's hugepage pools,
/// hugetlbfs mounts or NIC drivers: an exclusive `flock` on one file.
pub struct SystemLock {
    _file: fs::File,
}

impl SystemLock {
    pub fn take() -> SystemLock {
        let path = std::env::temp_dir().join("blipmq-hugepage-setup-tests.lock");
        // Read-only where another user made the file: flock needs no write.
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .or_else(|_| fs::File::open(&path))
            .expect("lock file");
        let fd = file.as_raw_fd();
        let (tx, rx) = mpsc::channel();
        // flock blocks until the holder lets go; wait for that on a thread
        // so that the wait is bounded.
        std::thread::spawn(move || {
            // SAFETY: fd stays open: `file` lives until the lock is returned
            // (or the test panics, which ends the wait).
            let _ = tx.send(unsafe { libc::flock(fd, libc::LOCK_EX) });
        });
        match rx.recv_timeout(LOCK_TIMEOUT) {
            Ok(0) => SystemLock { _file: file },
            Ok(_) => panic!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ),
            Err(_) => panic!(
                "{} held by another test for over {LOCK_TIMEOUT:?}",
                path.display()
            ),
        }
    }
}
