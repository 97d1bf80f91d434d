//! Connections that never say a word: opened in a burst while another run
//! goes on, each watched until the broker closes it or a deadline passes.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What happened to the silent connections.
#[derive(Debug, Clone, Copy)]
pub struct FloodOutcome {
    pub opened: usize,
    /// How long opening them all took.
    pub open_time: Duration,
    /// Closed by the broker within the deadline of their opening.
    pub closed_in_time: usize,
    /// The longest a connection closed in time stayed open.
    pub slowest_close: Duration,
}

/// Starts a thread that waits `delay`, opens `count` connections to `addr`
/// that send nothing, and reads each until the broker closes it or
/// `deadline` after its opening has passed (so it returns within about
/// `delay` + the opening + `deadline`).
pub fn start(
    addr: SocketAddr,
    count: usize,
    delay: Duration,
    deadline: Duration,
) -> JoinHandle<Result<FloodOutcome>> {
    std::thread::spawn(move || {
        // A bench's schedule, not synchronisation: the flood starts when the
        // flow's warm-up ends.
        std::thread::sleep(delay);
        let started = Instant::now();
        let mut conns = Vec::with_capacity(count);
        for i in 0..count {
            let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                .with_context(|| format!("silent connection {i} cannot connect"))?;
            conns.push((stream, Instant::now()));
        }
        let open_time = started.elapsed();
        let mut outcome = FloodOutcome {
            opened: count,
            open_time,
            closed_in_time: 0,
            slowest_close: Duration::ZERO,
        };
        for (stream, opened) in &mut conns {
            if let Some(after) = closed_within(stream, *opened + deadline) {
                let open_for = after.duration_since(*opened);
                outcome.closed_in_time += 1;
                outcome.slowest_close = outcome.slowest_close.max(open_for);
            }
        }
        Ok(outcome)
    })
}

/// Reads (and discards: an INFO, an ERROR) until the broker closes
/// `stream`; when, or `None` if `deadline` came first.
fn closed_within(stream: &mut TcpStream, deadline: Instant) -> Option<Instant> {
    let mut sink = [0u8; 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok()?;
        match stream.read(&mut sink) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(Instant::now())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}
