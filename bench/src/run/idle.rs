//! Many idle subscriber connections, held open while another run goes on.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::proto::{self, Reader, Wire};

/// Connections opened before their answers are read.
const CHUNK: usize = 250;
const TIMEOUT: Duration = Duration::from_secs(20);

/// Idle subscribers, each subscribed to its own subject `idle.N`.
pub struct IdleConnections {
    pub streams: Vec<TcpStream>,
    pub open_time: Duration,
}

/// Opens `count` connections, each with the handshake and one SUBSCRIBE,
/// confirmed by PONG. `on_progress` gets the number open so far.
pub fn open<W: Wire>(
    addr: SocketAddr,
    count: usize,
    on_progress: &dyn Fn(usize),
) -> Result<IdleConnections> {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(count);
    let mut out = Vec::with_capacity(256);
    while streams.len() < count {
        let first = streams.len();
        let chunk = CHUNK.min(count - first);
        for i in first..first + chunk {
            let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
                .with_context(|| format!("idle connection {i} cannot connect"))?;
            stream.set_nodelay(true)?;
            out.clear();
            W::put_hello(&mut out, "bench-idle");
            W::put_subscribe(&mut out, &format!("idle.{i}"), 1, None);
            W::put_ping(&mut out);
            (&stream)
                .write_all(&out)
                .with_context(|| format!("idle connection {i} cannot send its SUBSCRIBE"))?;
            streams.push(stream);
        }
        for (i, stream) in streams.iter().enumerate().skip(first) {
            let mut reader = Reader::new(0);
            let (mut source, mut sink) = (stream, stream);
            let deadline = Instant::now() + TIMEOUT;
            proto::await_pong::<W>(&mut source, &mut sink, stream, &mut reader, deadline)
                .with_context(|| format!("idle connection {i} got no PONG"))?;
        }
        on_progress(streams.len());
    }
    Ok(IdleConnections {
        streams,
        open_time: started.elapsed(),
    })
}
