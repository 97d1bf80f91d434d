//! The Unix control socket: JSON lines, one request and one reply per line,
//! served on the control thread (never on a worker core).
//!
//! The socket is created mode 0600 and guarded by an exclusive lock on
//! `PATH.lock`, so a second broker cannot take over a live one's socket.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Control, Effect};

/// Longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// An idle client is dropped after this long.
const CLIENT_IDLE: Duration = Duration::from_secs(300);
/// The environment variable `blipmqctl` reads the socket path from.
pub const SOCKET_ENV: &str = "BLIPMQ_SOCKET";

/// Where the control socket is when `control.socket` is "auto":
/// `$XDG_RUNTIME_DIR/blipmqd.sock`, else `/tmp/blipmqd-UID.sock`.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => Path::new(&dir).join("blipmqd.sock"),
        None => {
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            PathBuf::from(format!("/tmp/blipmqd-{uid}.sock"))
        }
    }
}

/// A served control socket; stops and removes its file on drop, and ends
/// the connections it serves (a watching `blipmqctl` sees the broker go).
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    clients: Clients,
    _lock: File,
}

/// The connections being served, by serial, to shut down on drop.
type Clients = Arc<Mutex<HashMap<u64, UnixStream>>>;

/// Why the socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Another live broker holds this path.
    InUse(PathBuf),
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::InUse(path) => write!(
                f,
                "control socket {} is in use by another blipmqd (set [control] socket)",
                path.display()
            ),
            BindError::Io(path, error) => {
                write!(f, "control socket {}: {error}", path.display())
            }
        }
    }
}

impl ControlSocket {
    pub fn bind(path: &Path, control: Arc<Control>) -> Result<ControlSocket, BindError> {
        let io_error = |error| BindError::Io(path.to_path_buf(), error);
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error)?;
        if lock.try_lock().is_err() {
            return Err(BindError::InUse(path.to_path_buf()));
        }
        // We hold the lock: a file left at `path` is a dead broker's.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(error)),
        }
        let listener = UnixListener::bind(path).map_err(io_error)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_error)?;
        control.set_socket_path(path.to_path_buf());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Clients::default();
        let thread = {
            let stop = stop.clone();
            let clients = clients.clone();
            std::thread::Builder::new()
                .name("blipmq-control".into())
                .spawn(move || accept_loop(listener, control, stop, clients))
                .map_err(io_error)?
        };
        Ok(ControlSocket {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
            clients,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock accept() with a connection of our own.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        for stream in clients.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        drop(clients);
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(lock_path(&self.path));
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn accept_loop(
    listener: UnixListener,
    control: Arc<Control>,
    stop: Arc<AtomicBool>,
    clients: Clients,
) {
    for (serial, stream) in (0u64..).zip(listener.incoming()) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match stream {
            Ok(stream) => {
                if let Ok(handle) = stream.try_clone() {
                    let mut served = clients.lock().unwrap_or_else(|e| e.into_inner());
                    served.insert(serial, handle);
                }
                let control = control.clone();
                let done = clients.clone();
                let spawned = std::thread::Builder::new()
                    .name("blipmq-control-client".into())
                    .spawn(move || {
                        serve_client(stream, &control);
                        let mut served = done.lock().unwrap_or_else(|e| e.into_inner());
                        served.remove(&serial);
                    });
                if let Err(error) = spawned {
                    tracing::warn!(%error, "cannot serve a control client");
                    let mut served = clients.lock().unwrap_or_else(|e| e.into_inner());
                    served.remove(&serial);
                }
            }
            Err(error) => tracing::warn!(%error, "control socket accept failed"),
        }
    }
}

fn serve_client(stream: UnixStream, control: &Control) {
    let _ = stream.set_read_timeout(Some(CLIENT_IDLE));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE => {
                let _ = writer.write_all(b"{\"ok\":false,\"error\":\"request line too long\"}\n");
                return;
            }
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let (mut reply, effect) = control.handle_line(line.trim());
        reply.push('\n');
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
        if effect == Effect::Drain {
            control.start_drain();
        }
    }
}
