//! A client connection: the socket itself, or TLS over it (`--tls`), split
//! into a reading and a writing half that two threads may use at once, and
//! the setup every connection goes through (handshake, PING, PONG).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use blipmq_client::tls::{TlsReader, TlsWriter};

use super::{Event, Reader, Wire};
use crate::tls::BenchTls;

/// What a connection reads from.
pub enum ReadHalf {
    Plain(TcpStream),
    Tls(TlsReader),
}

impl Read for ReadHalf {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(stream) => stream.read(buf),
            ReadHalf::Tls(stream) => stream.read(buf),
        }
    }
}

/// What a connection writes to.
pub enum WriteHalf {
    Plain(TcpStream),
    Tls(TlsWriter),
}

impl Write for WriteHalf {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(stream) => stream.write(buf),
            WriteHalf::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Plain(stream) => stream.flush(),
            WriteHalf::Tls(stream) => stream.flush(),
        }
    }
}

/// An open connection.
pub struct Conn {
    pub reader: ReadHalf,
    pub writer: WriteHalf,
    /// The socket under both, for timeouts and shutdown.
    pub socket: TcpStream,
}

/// Connects (with `tls`: INFO in the clear first where the protocol has it
/// so, then the TLS handshake), sends the handshake plus `extra` and a
/// PING, and reads until the PONG: after it, every earlier request (a
/// SUBSCRIBE) has taken effect.
pub fn open<W: Wire>(
    addr: SocketAddr,
    name: &str,
    extra: &[u8],
    timeout: Duration,
    tls: Option<&BenchTls>,
) -> io::Result<Conn> {
    let deadline = Instant::now() + timeout;
    let socket = TcpStream::connect_timeout(&addr, timeout)?;
    socket.set_nodelay(true)?;
    let mut conn = match tls {
        None => Conn {
            reader: ReadHalf::Plain(socket.try_clone()?),
            writer: WriteHalf::Plain(socket.try_clone()?),
            socket,
        },
        Some(tls) => {
            if W::INFO_BEFORE_TLS {
                socket.set_read_timeout(Some(timeout))?;
                read_clear_line(&socket)?;
            }
            let (reader, writer) = tls
                .handshake(socket.try_clone()?, deadline)
                .map_err(|error| io::Error::other(format!("{error:#}")))?;
            socket.set_write_timeout(None)?;
            Conn {
                reader: ReadHalf::Tls(reader),
                writer: WriteHalf::Tls(writer),
                socket,
            }
        }
    };
    let mut out = Vec::with_capacity(256 + extra.len());
    W::put_hello(&mut out, name);
    out.extend_from_slice(extra);
    W::put_ping(&mut out);
    conn.writer.write_all(&out)?;
    let mut reader = Reader::new(16 * 1024);
    await_pong::<W>(
        &mut conn.reader,
        &mut conn.writer,
        &conn.socket,
        &mut reader,
        deadline,
    )?;
    Ok(conn)
}

/// Reads the server's greeting line (NATS INFO before the TLS upgrade).
/// The server sends nothing more until the client's TLS handshake, so
/// reading in chunks takes nothing of TLS.
fn read_clear_line(mut socket: &TcpStream) -> io::Result<()> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    while !line.ends_with(b"\r\n") {
        let n = socket.read(&mut chunk)?;
        if n == 0 || line.len() > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no INFO line before the TLS handshake",
            ));
        }
        line.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// Reads `source` (through `reader`) until a PONG, answering PINGs on
/// `sink`; an ERROR or the end of the stream is an error. `socket` is the
/// one under both, whose read timeout bounds the wait by `deadline`.
pub fn await_pong<W: Wire>(
    source: &mut impl Read,
    sink: &mut impl Write,
    socket: &TcpStream,
    reader: &mut Reader,
    deadline: Instant,
) -> io::Result<()> {
    loop {
        while let Some(event) = reader.next::<W>().map_err(io::Error::other)? {
            match event {
                Event::Pong => {
                    socket.set_read_timeout(None)?;
                    return Ok(());
                }
                Event::Error { code, text } => {
                    return Err(io::Error::other(format!(
                        "server error {code} during setup: {}",
                        String::from_utf8_lossy(text)
                    )))
                }
                Event::Disconnect(reason) => {
                    return Err(io::Error::other(format!(
                        "server disconnected during setup: {}",
                        String::from_utf8_lossy(reason)
                    )))
                }
                Event::Ping => {
                    let mut pong = Vec::new();
                    W::put_pong(&mut pong);
                    sink.write_all(&pong)?;
                }
                _ => {}
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no PONG from the server",
            ));
        }
        socket.set_read_timeout(Some(left))?;
        if reader.read_from(source)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection during setup",
            ));
        }
    }
}
