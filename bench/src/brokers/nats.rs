//! nats-server from PATH: on 127.0.0.1, or in a veth lab's broker
//! namespace on the lab's address (kernel TCP, as blipmqd's kernel backend
//! there).

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::{
    free_port, log_file, spawn_registered, Broker, BrokerKind, Settings, MAX_PENDING_BYTES,
};
use crate::lab::LAB_PORT;
use crate::tls::BenchTls;

/// The config every bench instance runs with (nats-server 2.9 syntax).
pub fn config_text(addr: SocketAddr, tls: Option<&BenchTls>) -> String {
    let mut text = format!(
        "# Written by blipmq-bench.\n\
         listen: \"{addr}\"\n\
         # Same per-connection output limit as BlipMQ and Redis get (default 64MB).\n\
         max_pending: {MAX_PENDING_BYTES}\n\
         # A stalled write closes the client after this (default 10s).\n\
         write_deadline: \"30s\"\n\
         max_connections: 65536\n"
    );
    if let Some(tls) = tls {
        // Debug quoting escapes `"` and `\\` as the config's strings want.
        text += &format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  # The handshake's bound (default 0.5s, short on a loaded machine).\n  timeout: 5\n}}\n",
            tls.cert_file.display().to_string(),
            tls.key_file.display().to_string(),
        );
    }
    text
}

/// Starts nats-server with the bench's config plus `extra`.
pub fn start(
    exe: &Path,
    settings: &Settings,
    tag: &str,
    log_path: &Path,
    extra: &str,
) -> Result<Broker> {
    // In a lab the namespace is the broker's own: the port is free.
    let addr: SocketAddr = match &settings.lab {
        None => (IpAddr::from([127, 0, 0, 1]), free_port()?).into(),
        Some(lab) => (IpAddr::V4(lab.broker_ip), LAB_PORT).into(),
    };
    let config_path = settings.log_dir.join(format!("{tag}-nats.conf"));
    let text = config_text(addr, settings.tls.as_deref()) + extra;
    std::fs::write(&config_path, text)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let log = log_file(log_path)?;
    // `ip netns exec` execs nats-server in place: the child's pid is its.
    let mut command = match &settings.lab {
        None => super::broker_command(exe, settings),
        Some(lab) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &lab.broker_ns]).arg(exe);
            command
        }
    };
    command
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = spawn_registered(&mut command)?;
    let mut broker = Broker::new(BrokerKind::Nats, child, addr, log_path.to_path_buf());
    broker.wait_ready(&probe)?;
    Ok(broker)
}

/// The server greets with an INFO line.
pub(super) fn probe(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf)?;
    if &buf == b"INFO " {
        Ok(())
    } else {
        Err(std::io::Error::other("no INFO"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_block_names_the_certificate_files() {
        let addr: SocketAddr = "127.0.0.1:4222".parse().unwrap();
        assert!(!config_text(addr, None).contains("tls"));
        let dir = std::env::temp_dir().join(format!("bench-nats-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = BenchTls::create(&dir).unwrap();
        let text = config_text(addr, Some(&tls));
        let _ = std::fs::remove_dir_all(&dir);
        let block = &text[text.find("tls {").expect("a tls block")..];
        assert!(block.contains(&format!(
            "cert_file: {:?}",
            tls.cert_file.display().to_string()
        )));
        assert!(block.contains(&format!(
            "key_file: {:?}",
            tls.key_file.display().to_string()
        )));
        assert!(block.trim_end().ends_with('}'));
    }
}
