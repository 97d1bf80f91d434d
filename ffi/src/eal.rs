//! The Environment Abstraction Layer: initialised once per process, cleaned
//! up when the last handle (held by every pool, port, memzone and thread
//! registration) goes.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{check, Error, Result};
use crate::sys;

/// `argv[0]` handed to `rte_eal_init` before the caller's arguments.
pub const ARGV0: &str = "blipmqd";

/// Set by the first [`Eal::init`]; DPDK cannot run `rte_eal_init` twice in a
/// process, not even after `rte_eal_cleanup`.
static INIT_CALLED: AtomicBool = AtomicBool::new(false);

/// A handle on the process's EAL. Cloning is cheap; `rte_eal_cleanup` runs
/// when the last clone is dropped, and every [`Mempool`](crate::Mempool),
/// [`Port`](crate::Port), [`Memzone`](crate::Memzone) and
/// [`ThreadRegistration`] holds one, so it cannot run under them.
///
/// When the process is DPDK's primary, the drop also removes the runtime
/// directory (`/var/run/dpdk/<file-prefix>` for root), so that a stopped
/// process leaves nothing there. Hugepage files are another matter: pass
/// `--in-memory` or `--huge-unlink` (or `--no-huge`) to leave none.
#[derive(Clone, Debug)]
pub struct Eal {
    inner: Arc<EalInner>,
}

#[derive(Debug)]
struct EalInner {
    runtime_dir: PathBuf,
    primary: bool,
}

impl Eal {
    /// Runs `rte_eal_init` with `[ARGV0, args...]`.
    ///
    /// Once per process: any later call returns
    /// [`Error::EalAlreadyInitialized`], whatever became of the first. Note
    /// that `rte_eal_init` pins the calling thread to the main lcore's CPUs,
    /// and threads spawned afterwards inherit that affinity.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        for arg in std::iter::once(ARGV0).chain(args.iter().map(AsRef::as_ref)) {
            owned.push(CString::new(arg).map_err(|_| {
                Error::InvalidArgument(format!("EAL argument {arg:?} contains a NUL byte"))
            })?);
        }
        let argc = c_int::try_from(owned.len())
            .map_err(|_| Error::InvalidArgument("too many EAL arguments".into()))?;
        if INIT_CALLED.swap(true, Ordering::SeqCst) {
            return Err(Error::EalAlreadyInitialized);
        }
        // DPDK's getopt permutes argv and may keep pointers into it, so the
        // array and its strings live for the rest of the process (once).
        let argv: &'static mut [*mut c_char] = Box::leak(
            owned
                .into_iter()
                .map(CString::into_raw)
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let expected_dir = expected_runtime_dir(args);
        let existed = expected_dir.exists();
        // SAFETY: argv holds argc valid NUL-terminated strings followed by
        // NULL, all leaked (valid for the process), and INIT_CALLED makes this
        // the process's only rte_eal_init call.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            let error = Error::errno("rte_eal_init");
            // A failed start leaves no runtime directory it made behind.
            if !existed && looks_like_runtime_dir(&expected_dir) {
                let _ = std::fs::remove_dir_all(&expected_dir);
            }
            return Err(error);
        }
        // SAFETY: the EAL is initialised; rte_eal_get_runtime_dir returns a
        // NUL-terminated string in EAL's static configuration, copied here.
        let runtime_dir = unsafe { CStr::from_ptr(sys::rte_eal_get_runtime_dir()) };
        let runtime_dir = PathBuf::from(runtime_dir.to_string_lossy().into_owned());
        // SAFETY: no arguments; valid after a successful rte_eal_init.
        let primary = unsafe { sys::rte_eal_process_type() } == sys::RTE_PROC_PRIMARY;
        Ok(Eal {
            inner: Arc::new(EalInner {
                runtime_dir,
                primary,
            }),
        })
    }

    /// Ethernet ports that exist and are owned by no one (what
    /// `RTE_ETH_FOREACH_DEV` visits), in id order.
    pub fn ports(&self) -> Vec<u16> {
        let _ethdev = crate::port::ethdev_lock();
        let mut ports = Vec::new();
        let mut next: u64 = 0;
        // Each step returns a port id at or after its argument, or
        // RTE_MAX_ETHPORTS when there is none, so this ends within
        // RTE_MAX_ETHPORTS turns.
        while next < u64::from(sys::RTE_MAX_ETHPORTS) {
            // SAFETY: the EAL is initialised (self exists); the call only
            // reads ethdev's port table, for any id.
            let port = unsafe {
                sys::rte_eth_find_next_owned_by(next as u16, sys::RTE_ETH_DEV_NO_OWNER.into())
            };
            if port >= u64::from(sys::RTE_MAX_ETHPORTS) {
                break;
            }
            ports.push(port as u16);
            next = port + 1;
        }
        ports
    }

    /// The port id of the device named `name` (for a vdev, its name, e.g.
    /// `net_ring0`).
    pub fn port_by_name(&self, name: &str) -> Result<u16> {
        let c_name = CString::new(name).map_err(|_| {
            Error::InvalidArgument(format!("port name {name:?} contains a NUL byte"))
        })?;
        let mut port = 0u16;
        let _ethdev = crate::port::ethdev_lock();
        // SAFETY: c_name is a valid C string and port a valid out pointer,
        // both live across the call.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port) };
        check(|| format!("rte_eth_dev_get_port_by_name({name})"), ret)?;
        Ok(port)
    }

    /// Hot-plugs a device (`rte_dev_probe`), e.g. a vdev such as
    /// `net_tap0,iface=dtap0`; its port then shows in [`ports`](Eal::ports).
    pub fn probe_device(&self, devargs: &str) -> Result<()> {
        let c_args = CString::new(devargs).map_err(|_| {
            Error::InvalidArgument(format!("devargs {devargs:?} contain a NUL byte"))
        })?;
        let _ethdev = crate::port::ethdev_lock();
        // SAFETY: the EAL is initialised (self exists); c_args is a valid C
        // string that DPDK parses and copies; ethdev control calls are
        // serialised by the lock.
        let ret = unsafe { sys::rte_dev_probe(c_args.as_ptr()) };
        check(|| format!("rte_dev_probe({devargs})"), ret)?;
        Ok(())
    }

    /// Whether the EAL runs on hugepages (false under `--no-huge`).
    pub fn has_hugepages(&self) -> bool {
        // SAFETY: no arguments; reads the EAL configuration.
        unsafe { sys::rte_eal_has_hugepages() != 0 }
    }

    /// The main lcore's id.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: no arguments; reads the EAL configuration.
        unsafe { sys::rte_get_main_lcore() }
    }

    /// The number of EAL lcores (registered non-EAL threads not included).
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: no arguments; reads the EAL configuration.
        unsafe { sys::rte_lcore_count() }
    }

    /// The calling thread's lcore id: `None` for a thread that is neither an
    /// EAL thread nor registered (such a thread gets no mempool cache).
    pub fn current_lcore() -> Option<u32> {
        // SAFETY: reads the calling thread's thread-local lcore id.
        let id = unsafe { sys::blipmq_lcore_id() };
        (id != sys::LCORE_ID_ANY).then_some(id)
    }

    /// The calling thread's NUMA socket, `None` when unknown.
    pub fn current_socket() -> Option<u32> {
        // SAFETY: reads the calling thread's thread-local socket id.
        let id = unsafe { sys::blipmq_socket_id() };
        (id != sys::SOCKET_ID_ANY as u32).then_some(id)
    }

    /// Whether this process is DPDK's primary process.
    pub fn is_primary(&self) -> bool {
        self.inner.primary
    }

    /// DPDK's runtime directory for this process's `--file-prefix`.
    pub fn runtime_dir(&self) -> &Path {
        &self.inner.runtime_dir
    }

    /// Gives the calling (non-EAL) thread an lcore id with
    /// `rte_thread_register`, so that mempool caches work on it; the id is
    /// released when the returned guard is dropped, on this thread (the guard
    /// is not `Send`). Pin the thread first: the registration records its
    /// current affinity.
    pub fn register_thread(&self) -> Result<ThreadRegistration> {
        if let Some(lcore) = Eal::current_lcore() {
            return Err(Error::ThreadAlreadyRegistered { lcore });
        }
        // SAFETY: the EAL is initialised (self exists) and this thread has no
        // lcore id, so registering it cannot overwrite another registration.
        let ret = unsafe { sys::rte_thread_register() };
        if ret < 0 {
            return Err(Error::errno("rte_thread_register"));
        }
        let lcore = Eal::current_lcore().ok_or_else(|| {
            Error::InvalidState("rte_thread_register succeeded but left no lcore id".into())
        })?;
        Ok(ThreadRegistration {
            lcore,
            _eal: self.clone(),
            _not_send: PhantomData,
        })
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: the last Eal handle is going; every object that uses DPDK
        // memory (pool, port, memzone, registration) holds a handle, so none
        // is left, and INIT_CALLED keeps rte_eal_init from running again.
        let ret = unsafe { sys::rte_eal_cleanup() };
        if ret < 0 {
            tracing::warn!(error = %Error::errno("rte_eal_cleanup"), "EAL cleanup failed");
        }
        if self.primary && looks_like_runtime_dir(&self.runtime_dir) && self.runtime_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.runtime_dir) {
                tracing::warn!(dir = %self.runtime_dir.display(), error = %e,
                    "could not remove the DPDK runtime directory");
            }
        }
    }
}

/// DPDK's runtime directory is `<base>/dpdk/<file-prefix>`: never remove
/// anything that does not look like one.
fn looks_like_runtime_dir(dir: &Path) -> bool {
    dir.is_absolute()
        && dir
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|p| p == "dpdk")
}

/// Where `rte_eal_init` with `args` makes its runtime directory: the base
/// (`/var/run` for root, else `$XDG_RUNTIME_DIR` or `/tmp`), `dpdk`, then
/// `--file-prefix` (default `rte`).
fn expected_runtime_dir<S: AsRef<str>>(args: &[S]) -> PathBuf {
    let mut prefix = "rte".to_string();
    let mut args = args.iter().map(AsRef::as_ref);
    while let Some(arg) = args.next() {
        if arg == "--file-prefix" {
            if let Some(value) = args.next() {
                prefix = value.to_string();
            }
        } else if let Some(value) = arg.strip_prefix("--file-prefix=") {
            prefix = value.to_string();
        }
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let base = if unsafe { libc::getuid() } == 0 {
        PathBuf::from("/var/run")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"))
    };
    base.join("dpdk").join(prefix)
}

/// A registered non-EAL thread (see [`Eal::register_thread`]); unregisters
/// on drop. Not `Send`: it must be dropped by the thread it registered.
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<blipmq_dpdk_sys::ThreadRegistration>();
/// ```
#[derive(Debug)]
pub struct ThreadRegistration {
    lcore: u32,
    _eal: Eal,
    _not_send: PhantomData<*const ()>,
}

impl ThreadRegistration {
    /// The lcore id this thread was given.
    pub fn lcore_id(&self) -> u32 {
        self.lcore
    }
}

impl Drop for ThreadRegistration {
    fn drop(&mut self) {
        // SAFETY: this guard is !Send, so this is the thread that
        // rte_thread_register registered, and the EAL is still up (_eal is
        // dropped after this body).
        unsafe { sys::rte_thread_unregister() };
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    fn send<T: Send>() {}
    fn sync<T: Sync>() {}

    #[test]
    fn auto_traits() {
        send::<Eal>();
        sync::<Eal>();
        send::<Mempool>();
        sync::<Mempool>();
        send::<Mbuf<'static>>();
        send::<MbufBurst<'static, 32>>();
        send::<Port<'static>>();
        sync::<Port<'static>>();
        send::<RxQueue<'static>>();
        send::<TxQueue<'static>>();
        send::<Memzone>();
        sync::<Memzone>();
    }
}
