//! blipmqd from this workspace.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use anyhow::{anyhow, bail, Context, Result};
use blipmq_protocol::{decode_frame, Op};

use super::{
    log_file, log_tail, spawn_registered, Broker, BrokerKind, Settings, MAX_PENDING_BYTES,
    START_TIMEOUT,
};

/// The config every bench instance runs with; everything else is default.
pub fn config_text() -> String {
    format!(
        "# Written by blipmq-bench.\n\
         [server]\n\
         # Shorter than the default 5s: the bench's clients are gone when it stops.\n\
         drain_timeout = \"1s\"\n\
         max_connections = 65536\n\
         \n\
         [limits]\n\
         # Same per-connection output limit as NATS and Redis get.\n\
         max_pending_bytes = {MAX_PENDING_BYTES}\n"
    )
}

pub fn start(exe: &Path, settings: &Settings, tag: &str, log_path: &Path) -> Result<Broker> {
    let config_path = settings.log_dir.join(format!("{tag}-blipmq.toml"));
    std::fs::write(&config_path, config_text())
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let log = log_file(log_path)?;
    let mut command = Command::new(exe);
    command
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--workers")
        .arg(settings.workers.to_string())
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?);
    let mut child = spawn_registered(&mut command)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    // The first stdout line names the address; the rest goes to the log.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("blipmqd-stdout".into())
        .spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            let mut log = log;
            let _ = log.write_all(&rest);
        })?;
    let mut broker = Broker::new(
        BrokerKind::Blipmq,
        child,
        "127.0.0.1:0".parse()?,
        log_path.to_path_buf(),
    );
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => line,
        Err(_) => bail!("blipmqd printed no address within {START_TIMEOUT:?}"),
    };
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("blipmqd listening on ")
        .and_then(|addr| addr.parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "blipmqd did not start: stdout {:?}; log:\n{}",
                line.trim(),
                log_tail(log_path, 10)
            )
        })?;
    broker.addr = addr;
    broker.wait_ready(probe)?;
    Ok(broker)
}

/// The broker greets with INFO.
fn probe(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    loop {
        let n = stream.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        match decode_frame(&buf[..have], u32::MAX) {
            Ok(Some((frame, _))) if frame.op == Op::Info as u8 => return Ok(()),
            Ok(None) if have < buf.len() => continue,
            _ => return Err(std::io::Error::other("no INFO")),
        }
    }
}
