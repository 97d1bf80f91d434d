//! redis-server from PATH, without persistence.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;

use anyhow::Result;

use super::{free_port, log_file, spawn_registered, Broker, BrokerKind, Settings};

/// The command-line configuration every bench instance runs with.
pub fn args(port: u16, settings: &Settings) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        // No output limit for pub/sub clients (default 32mb hard, 8mb for
        // 60 s), as the other brokers get 1 GiB.
        "--client-output-buffer-limit",
        "pubsub 0 0 0",
        "--maxclients",
        &settings.max_clients.to_string(),
        "--dir",
        &settings.log_dir.to_string_lossy(),
        "--logfile",
        "",
    ]
    .map(String::from)
    .to_vec()
}

pub fn start(exe: &Path, settings: &Settings, log_path: &Path) -> Result<Broker> {
    let port = free_port()?;
    let log = log_file(log_path)?;
    let mut command = super::broker_command(exe, settings);
    command
        .args(args(port, settings))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = spawn_registered(&mut command)?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut broker = Broker::new(BrokerKind::Redis, child, addr, log_path.to_path_buf());
    broker.wait_ready(&probe)?;
    Ok(broker)
}

/// PING answers +PONG once the server serves.
fn probe(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf)?;
    if &buf == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other("no PONG"))
    }
}
