//! A NATS hub and two leaf nodes of the broker under test, on 127.0.0.1:
//! the leaf-node fan-out scenarios. The hub is nats-server with a
//! `leafnodes` listener and monitoring; the leaves are either two blipmqd
//! (a NATS listener and `[[leafnode.remotes]]` to the hub) or two
//! nats-server (`leafnodes { remotes }` to the hub). Every process is a
//! [`Broker`], started by its usual launcher and stopped by its guard.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::{free_port, Binaries, Broker, BrokerKind, Settings};
use crate::proto::{self, nats::Nats, Event, Reader, Wire};
use crate::run::flow::Target;

/// The leaves' names (nats-server 2.9's `/leafz` does not list them: the
/// hub tells its leaves apart by their connections' ports).
pub const LEAF_A: &str = "bench-leaf-a";
pub const LEAF_B: &str = "bench-leaf-b";
/// Longest wait for the leaves to join and for the interest to cross.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound of one monitoring request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the route probe waits for one probe message before the next.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The hub's config beyond the bench's own nats-server config: its
/// leafnodes listener and monitoring port.
pub fn hub_extra(leaf_port: u16, http_port: u16) -> String {
    format!(
        "server_name: bench-hub\n\
         http: \"127.0.0.1:{http_port}\"\n\
         leafnodes {{\n  listen: \"127.0.0.1:{leaf_port}\"\n}}\n"
    )
}

/// A leaf's config beyond the bench's own for `kind`: one remote, the
/// hub's leafnodes port, under `name`.
pub fn leaf_extra(kind: BrokerKind, name: &str, hub_leaf_port: u16) -> Result<String> {
    let url = format!("nats-leaf://127.0.0.1:{hub_leaf_port}");
    match kind {
        BrokerKind::Blipmq => Ok(format!(
            "\n[[leafnode.remotes]]\nurls = [\"{url}\"]\nname = \"{name}\"\n"
        )),
        BrokerKind::Nats => Ok(format!(
            "server_name: {name}\nleafnodes {{\n  remotes = [ {{ url: \"{url}\" }} ]\n}}\n"
        )),
        BrokerKind::Redis => bail!("Redis has no leaf nodes"),
    }
}

/// The hub's counters of the two leaves' links (its side): messages and
/// bytes in from leaf A, out to leaf B.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    pub a_in_msgs: u64,
    pub a_in_bytes: u64,
    pub b_out_msgs: u64,
    pub b_out_bytes: u64,
}

impl LinkCounters {
    /// From the hub's `/leafz` JSON, leaf A's connection from `ports.0`,
    /// B's from `ports.1`; an error unless both are listed (a leaf that
    /// reconnected comes from another port).
    pub fn from_leafz(leafz: &serde_json::Value, ports: (u16, u16)) -> Result<LinkCounters> {
        let leaf = |port: u16, name: &str| {
            leaf_ports(leafz)
                .into_iter()
                .position(|p| p == port)
                .map(|i| &leafz["leafs"][i])
                .ok_or_else(|| {
                    anyhow!("the hub's /leafz does not list {name} (port {port}): {leafz}")
                })
        };
        let (a, b) = (leaf(ports.0, LEAF_A)?, leaf(ports.1, LEAF_B)?);
        let count = |leaf: &serde_json::Value, key: &str| leaf[key].as_u64().unwrap_or(0);
        Ok(LinkCounters {
            a_in_msgs: count(a, "in_msgs"),
            a_in_bytes: count(a, "in_bytes"),
            b_out_msgs: count(b, "out_msgs"),
            b_out_bytes: count(b, "out_bytes"),
        })
    }

    /// What was counted from `before` to `self`.
    pub fn since(&self, before: &LinkCounters) -> LinkCounters {
        LinkCounters {
            a_in_msgs: self.a_in_msgs.saturating_sub(before.a_in_msgs),
            a_in_bytes: self.a_in_bytes.saturating_sub(before.a_in_bytes),
            b_out_msgs: self.b_out_msgs.saturating_sub(before.b_out_msgs),
            b_out_bytes: self.b_out_bytes.saturating_sub(before.b_out_bytes),
        }
    }

    /// Bytes over the hub's two links (in from A, out to B) per message
    /// delivered to the subscribers; None when nothing was delivered.
    pub fn bytes_per_delivered(&self, delivered: u64) -> Option<f64> {
        (delivered > 0).then(|| (self.a_in_bytes + self.b_out_bytes) as f64 / delivered as f64)
    }
}

/// The ports of the leaf connections the hub's `/leafz` lists, in order.
pub fn leaf_ports(leafz: &serde_json::Value) -> Vec<u16> {
    leafz["leafs"].as_array().map_or(Vec::new(), |leafs| {
        leafs
            .iter()
            .map(|l| l["port"].as_u64().unwrap_or(0) as u16)
            .collect()
    })
}

/// What crossed the hub's two leaf links on the wire, from the hub's
/// sockets (`ss -ti`): bytes received from leaf A, sent to leaf B (TCP
/// payload: the leaf protocol's lines and the messages, without TCP/IP
/// headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WireCounters {
    pub a_in_bytes: u64,
    pub b_out_bytes: u64,
}

impl WireCounters {
    /// From `ss -tinH` output listing the hub's leafnodes sockets: the one
    /// whose peer port is `ports.0` (leaf A) and `ports.1` (leaf B).
    pub fn from_ss(text: &str, ports: (u16, u16)) -> Result<WireCounters> {
        // A socket's line (addresses), then its indented info line.
        let mut peer = None;
        let (mut a, mut b) = (None, None);
        for line in text.lines() {
            if !line.starts_with(char::is_whitespace) {
                peer = line
                    .split_whitespace()
                    .filter_map(|token| token.parse::<SocketAddr>().ok())
                    .nth(1)
                    .map(|addr| addr.port());
                continue;
            }
            let value = |key: &str| {
                line.split_whitespace()
                    .find_map(|token| token.strip_prefix(key)?.strip_prefix(':')?.parse().ok())
            };
            if peer == Some(ports.0) {
                a = value("bytes_received");
            } else if peer == Some(ports.1) {
                b = value("bytes_sent").or_else(|| value("bytes_acked"));
            }
        }
        match (a, b) {
            (Some(a_in_bytes), Some(b_out_bytes)) => Ok(WireCounters {
                a_in_bytes,
                b_out_bytes,
            }),
            _ => bail!("ss lists no byte counts of the hub's sockets to ports {ports:?}: {text:?}"),
        }
    }

    /// The hub's sockets on its leafnodes port `leaf_port` now (`ss`,
    /// killed if it takes longer than [`HTTP_TIMEOUT`]).
    fn read(leaf_port: u16, ports: (u16, u16)) -> Result<WireCounters> {
        use std::process::{Command, Stdio};
        let mut child = Command::new("ss")
            .args(["-tinH", "state", "established", "sport", "="])
            .arg(format!(":{leaf_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run ss (iproute2)")?;
        // A few sockets: far less than a pipe holds, so ss never blocks
        // on its output before it exits.
        let deadline = Instant::now() + HTTP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("ss did not answer within {HTTP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let mut text = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_string(&mut text)?;
        }
        if !status.success() {
            bail!("ss exited with {status}");
        }
        WireCounters::from_ss(&text, ports)
    }

    /// What was counted from `before` to `self`.
    pub fn since(&self, before: &WireCounters) -> WireCounters {
        WireCounters {
            a_in_bytes: self.a_in_bytes.saturating_sub(before.a_in_bytes),
            b_out_bytes: self.b_out_bytes.saturating_sub(before.b_out_bytes),
        }
    }

    /// Wire bytes over both links per message delivered; None when
    /// nothing was delivered.
    pub fn bytes_per_delivered(&self, delivered: u64) -> Option<f64> {
        (delivered > 0).then(|| (self.a_in_bytes + self.b_out_bytes) as f64 / delivered as f64)
    }
}

/// The hub's view of its leaf links at one moment, or over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinkWindow {
    /// Its own counters (`/leafz`).
    pub link: LinkCounters,
    /// Its sockets' (None when `ss` could not tell).
    pub wire: Option<WireCounters>,
    /// The hub's CPU seconds.
    pub hub_cpu_secs: f64,
}

impl LinkWindow {
    pub fn since(&self, before: &LinkWindow) -> LinkWindow {
        LinkWindow {
            link: self.link.since(&before.link),
            wire: self
                .wire
                .zip(before.wire)
                .map(|(after, before)| after.since(&before)),
            hub_cpu_secs: self.hub_cpu_secs - before.hub_cpu_secs,
        }
    }
}

/// `GET path` on 127.0.0.1:`port` (nats-server's monitoring), as JSON.
fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("cannot reach the hub's monitoring on {addr}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("GET {path} on {addr}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path} on {addr}: no HTTP response"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        bail!(
            "GET {path} on {addr}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    serde_json::from_str(body).with_context(|| format!("GET {path} on {addr}: not JSON"))
}

/// The hub and its two leaves, and what the hub counted on their links in
/// the measured window. Publishers connect to leaf A; the first
/// `subs_on_a` subscribers to leaf A, the others to leaf B. Dropping it
/// stops every process.
pub struct LeafCluster {
    pub hub: Broker,
    pub a: Broker,
    pub b: Broker,
    monitor: SocketAddr,
    /// The hub's leafnodes port.
    leaf_port: u16,
    /// The ports leaf A's and leaf B's links come from (the hub's view).
    link_ports: (u16, u16),
    subs_on_a: usize,
    /// The route probe's subscription on leaf B, held until the flow's
    /// subscribers are in place (so that B's interest never lapses).
    probe: Option<proto::Conn>,
    before: Option<LinkWindow>,
    /// The hub's view of its leaf links over the measured window, or why
    /// it could not be read.
    pub window: Option<Result<LinkWindow, String>>,
}

impl LeafCluster {
    /// Starts the hub (nats-server), then leaves A and B of `kind`, and
    /// waits (bounded) until the hub lists both.
    pub fn start(
        kind: BrokerKind,
        bins: &Binaries,
        settings: &Settings,
        tag: &str,
        subs_on_a: usize,
    ) -> Result<LeafCluster> {
        if settings.tls.is_some() || settings.lab.is_some() || settings.memif.is_some() {
            bail!("the leaf-node scenarios run on 127.0.0.1 over kernel TCP, without TLS");
        }
        // The hub: nats-server as always, with no stats file of blipmqd's.
        let hub_settings = Settings {
            stats_file: None,
            stats_watcher: None,
            count_syscalls: None,
            ..settings.clone()
        };
        let mut last_error = None;
        let mut started = None;
        // The leafnodes and monitoring ports may be taken before the hub
        // binds them (it then exits at start): new ports, a few times.
        for _attempt in 0..3 {
            let (leaf_port, http_port) = (free_port()?, free_port()?);
            match Broker::start_with(
                BrokerKind::Nats,
                bins,
                &hub_settings,
                // Each broker's trial keeps its own hub log.
                &format!("{tag}-{}-hub", kind.name()),
                &hub_extra(leaf_port, http_port),
            ) {
                Ok(hub) => {
                    started = Some((hub, leaf_port, http_port));
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let (hub, leaf_port, http_port) = match started {
            Some(started) => started,
            None => {
                return Err(last_error
                    .unwrap_or_else(|| anyhow!("cannot start the hub"))
                    .context("the hub"))
            }
        };
        // The leaves speak NATS to their clients; two blipmqd cannot share
        // one stats file, and the flow watches none of theirs.
        let leaf_settings = Settings {
            nats_clients: true,
            ..hub_settings
        };
        let leaf = |name: &str, suffix: &str| -> Result<Broker> {
            Broker::start_with(
                kind,
                bins,
                &leaf_settings,
                &format!("{tag}-{suffix}"),
                &leaf_extra(kind, name, leaf_port)?,
            )
            .with_context(|| format!("leaf {name}"))
        };
        let monitor = SocketAddr::from(([127, 0, 0, 1], http_port));
        // One leaf after the other, each once it has joined: the hub lists
        // them by the ports their links come from.
        let (mut hub, mut a) = (hub, leaf(LEAF_A, "leaf-a")?);
        let a_port = await_joined(monitor, &mut [&mut hub, &mut a], LEAF_A, &[])?;
        let mut b = leaf(LEAF_B, "leaf-b")?;
        let b_port = await_joined(monitor, &mut [&mut hub, &mut a, &mut b], LEAF_B, &[a_port])?;
        Ok(LeafCluster {
            hub,
            a,
            b,
            monitor,
            leaf_port,
            link_ports: (a_port, b_port),
            subs_on_a,
            probe: None,
            before: None,
            window: None,
        })
    }

    /// The hub's view of its leaf links now.
    pub fn link_now(&self) -> Result<LinkWindow> {
        Ok(LinkWindow {
            link: LinkCounters::from_leafz(&get_json(self.monitor, "/leafz")?, self.link_ports)?,
            wire: WireCounters::read(self.leaf_port, self.link_ports).ok(),
            hub_cpu_secs: self.hub.cpu_seconds()?,
        })
    }

    /// Makes sure that a message published on leaf A on `subject` reaches
    /// leaf B: subscribes a probe on B, and publishes numbered probe
    /// messages on A until the last one sent arrives (bounded). Messages
    /// from A to B keep their order, so none is still under way after it;
    /// those sent before the interest had crossed were dropped by A. The
    /// probe's subscription stays until [`Target::subscribed`], so that
    /// B's interest in `subject` never lapses. Call before the flow's
    /// clients connect: the probe's messages must reach none of them.
    pub fn open_route(&mut self, subject: &str) -> Result<()> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let mut subscribe = Vec::new();
        Nats::put_subscribe(&mut subscribe, subject, 1, None);
        let mut sub = proto::open::<Nats>(
            self.b.addr,
            "bench-probe-sub",
            &subscribe,
            HTTP_TIMEOUT,
            None,
        )
        .context("the route probe's subscriber on leaf B")?;
        let mut publisher =
            proto::open::<Nats>(self.a.addr, "bench-probe-pub", &[], HTTP_TIMEOUT, None)
                .context("the route probe's publisher on leaf A")?;
        sub.socket.set_read_timeout(Some(PROBE_INTERVAL))?;
        let mut reader = Reader::new(64 * 1024);
        let mut sent = 0u64;
        loop {
            if Instant::now() > deadline {
                bail!(
                    "no message published on leaf A reached leaf B within {JOIN_TIMEOUT:?} \
                     ({sent} probes): the interest did not cross the hub"
                );
            }
            Target::check_alive(self)?;
            sent += 1;
            let body = format!("probe {sent}");
            let mut out = Vec::new();
            Nats::put_publish_head(&mut out, subject, body.len());
            out.extend_from_slice(body.as_bytes());
            out.extend_from_slice(Nats::publish_tail());
            publisher.writer.write_all(&out)?;
            // Until this probe arrives, or nothing more for an interval.
            let mut arrived = false;
            while !arrived {
                match reader.read_from(&mut sub.reader) {
                    Ok(0) => bail!("leaf B closed the route probe's subscriber"),
                    Ok(_) => {}
                    Err(error)
                        if matches!(
                            error.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(error) => return Err(error).context("the route probe's subscriber"),
                }
                while let Some(event) = reader.next::<Nats>().map_err(|e| anyhow!("{e}"))? {
                    match event {
                        Event::Msg(payload) if payload == body.as_bytes() => arrived = true,
                        Event::Ping => {
                            let mut pong = Vec::new();
                            Nats::put_pong(&mut pong);
                            sub.writer.write_all(&pong)?;
                        }
                        _ => {}
                    }
                }
            }
            if arrived {
                break;
            }
        }
        sub.socket.set_read_timeout(None)?;
        self.probe = Some(sub);
        Ok(())
    }

    /// Stops the leaves, then the hub; a line for each unusual stop.
    pub fn stop(self) -> Vec<String> {
        let LeafCluster { hub, a, b, .. } = self;
        [("leaf A", a), ("leaf B", b), ("the hub", hub)]
            .into_iter()
            .filter_map(|(role, broker)| {
                let kind = broker.kind;
                broker.stop().oddity(kind).map(|o| format!("{role}: {o}"))
            })
            .collect()
    }
}

/// Polls the hub's `/leafz` (bounded, failing early when one of `running`
/// exits) until it lists a leaf connection besides those from `known`
/// ports; returns its port.
fn await_joined(
    monitor: SocketAddr,
    running: &mut [&mut Broker],
    name: &str,
    known: &[u16],
) -> Result<u16> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        for broker in running.iter_mut() {
            broker
                .check_alive()
                .with_context(|| format!("waiting for {name} to join the hub"))?;
        }
        let leafz = get_json(monitor, "/leafz");
        if let Ok(leafz) = &leafz {
            let new: Vec<u16> = leaf_ports(leafz)
                .into_iter()
                .filter(|p| !known.contains(p))
                .collect();
            match new[..] {
                [port] => return Ok(port),
                [] => {}
                _ => bail!("more leaves joined the hub than started: {leafz}"),
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not join the hub within {JOIN_TIMEOUT:?}; the hub's /leafz: {}",
                match leafz {
                    Ok(leafz) => leafz.to_string(),
                    Err(error) => format!("{error:#}"),
                }
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Target for LeafCluster {
    fn sub_addr(&self, s: usize) -> SocketAddr {
        if s < self.subs_on_a {
            self.a.addr
        } else {
            self.b.addr
        }
    }

    fn pub_addr(&self, _: usize) -> SocketAddr {
        self.a.addr
    }

    fn check_alive(&mut self) -> Result<()> {
        self.hub.check_alive().context("the hub")?;
        self.a.check_alive().context("leaf A")?;
        self.b.check_alive().context("leaf B")
    }

    /// The two leaves' (the brokers under test); the hub's is apart.
    fn cpu_seconds(&self) -> Result<f64> {
        Ok(self.a.cpu_seconds()? + self.b.cpu_seconds()?)
    }

    fn helper_cpu_seconds(&self) -> f64 {
        self.hub.cpu_seconds().unwrap_or(0.0)
    }

    fn begin_window(&mut self) {
        match self.link_now() {
            Ok(now) => self.before = Some(now),
            Err(error) => self.window = Some(Err(format!("{error:#}"))),
        }
    }

    fn end_window(&mut self) {
        let Some(before) = self.before.take() else {
            return;
        };
        self.window = Some(
            self.link_now()
                .map(|after| after.since(&before))
                .map_err(|error| format!("{error:#}")),
        );
    }

    /// Drops the route probe's subscription (UNSUB, confirmed by PONG):
    /// the flow's subscribers hold B's interest now.
    fn subscribed(&mut self) -> Result<()> {
        let Some(mut probe) = self.probe.take() else {
            return Ok(());
        };
        let mut out = b"UNSUB 1\r\n".to_vec();
        Nats::put_ping(&mut out);
        probe.writer.write_all(&out)?;
        probe.socket.set_read_timeout(Some(HTTP_TIMEOUT))?;
        let mut reader = Reader::new(64 * 1024);
        proto::await_pong::<Nats>(
            &mut probe.reader,
            &mut probe.writer,
            &probe.socket,
            &mut reader,
            Instant::now() + HTTP_TIMEOUT,
        )
        .context("the route probe's UNSUB")?;
        let _ = probe.socket.shutdown(std::net::Shutdown::Both);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blipmq_dataplane::config::Config;

    #[test]
    fn blipmq_leaf_config_is_blipmqds_own_with_one_remote() {
        let text = crate::brokers::blipmq::config_text(None, None)
            + &leaf_extra(BrokerKind::Blipmq, LEAF_A, 7422).unwrap();
        let config = Config::from_toml_str(&text).expect("blipmqd takes it");
        let remotes = &config.leafnode.remotes;
        assert_eq!(remotes.len(), 1);
        assert_eq!(remotes[0].name, LEAF_A);
        assert_eq!(remotes[0].urls, ["nats-leaf://127.0.0.1:7422"]);
    }

    #[test]
    fn nats_configs_name_the_leafnodes_port_and_monitoring() {
        let hub = hub_extra(7422, 8222);
        assert!(hub.contains("http: \"127.0.0.1:8222\""), "{hub}");
        assert!(
            hub.contains("leafnodes {\n  listen: \"127.0.0.1:7422\"\n}"),
            "{hub}"
        );
        let leaf = leaf_extra(BrokerKind::Nats, LEAF_B, 7422).unwrap();
        assert!(
            leaf.starts_with(&format!("server_name: {LEAF_B}\n")),
            "{leaf}"
        );
        assert!(
            leaf.contains("remotes = [ { url: \"nats-leaf://127.0.0.1:7422\" } ]"),
            "{leaf}"
        );
        assert!(leaf_extra(BrokerKind::Redis, LEAF_A, 7422).is_err());
    }

    #[test]
    fn wire_bytes_from_the_hubs_sockets() {
        let ss = "0      0      127.0.0.1:7422 127.0.0.1:50001\n\
                  \t cubic wscale:7,7 rto:204 bytes_sent:310 bytes_acked:310 bytes_received:12000 segs_out:9\n\
                  0      0      127.0.0.1:7422 127.0.0.1:50002\n\
                  \t cubic wscale:7,7 rto:204 bytes_sent:9000 bytes_acked:9000 bytes_received:420 segs_out:9\n";
        let before = WireCounters::from_ss(ss, (50001, 50002)).unwrap();
        assert_eq!(
            before,
            WireCounters {
                a_in_bytes: 12_000,
                b_out_bytes: 9_000
            }
        );
        let after = WireCounters {
            a_in_bytes: 52_000,
            b_out_bytes: 49_000,
        };
        assert_eq!(after.since(&before).bytes_per_delivered(1_000), Some(80.0));
        // A leaf's socket missing (it reconnected from another port).
        assert!(WireCounters::from_ss(ss, (50001, 50003)).is_err());
    }

    #[test]
    fn link_counters_from_the_hubs_leafz_and_per_delivered_message() {
        // (messages, bytes) in from A and out to B.
        let leafz = |(a_msgs, a_bytes): (u64, u64), (b_msgs, b_bytes): (u64, u64)| {
            serde_json::json!({
                "leafnodes": 2,
                "leafs": [
                    { "port": 50002, "in_msgs": 3, "in_bytes": 9, "out_msgs": b_msgs, "out_bytes": b_bytes },
                    { "port": 50001, "in_msgs": a_msgs, "in_bytes": a_bytes, "out_msgs": 5, "out_bytes": 7 },
                ]
            })
        };
        let ports = (50001, 50002);
        let before = LinkCounters::from_leafz(&leafz((10, 1_280), (20, 2_560)), ports).unwrap();
        assert_eq!(leaf_ports(&leafz((0, 0), (0, 0))), [50002, 50001]);
        let after =
            LinkCounters::from_leafz(&leafz((1_010, 129_280), (1_020, 130_560)), ports).unwrap();
        let window = after.since(&before);
        assert_eq!(
            window,
            LinkCounters {
                a_in_msgs: 1_000,
                a_in_bytes: 128_000,
                b_out_msgs: 1_000,
                b_out_bytes: 128_000,
            }
        );
        // 1,000 messages crossed in and out once each, delivered to 4
        // subscribers on B: 256 KB over 4,000 deliveries.
        assert_eq!(window.bytes_per_delivered(4_000), Some(64.0));
        assert_eq!(window.bytes_per_delivered(0), None);
        // Leaf B reconnected (from another port): no figures.
        let one_leaf = serde_json::json!({ "leafs": [ { "port": 50001 }, { "port": 50003 } ] });
        assert!(LinkCounters::from_leafz(&one_leaf, ports).is_err());
    }
}
