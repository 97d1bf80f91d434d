//! A stock nats-server as a leaf-node hub, started by a test, and a NATS
//! client written by hand for its client port (or any NATS server's).
//!
//! [`Hub::start`] skips (returns `None`) with a reason when nats-server is
//! not in PATH, unless CI=true, where that fails the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bounds every wait.
pub const WITHIN: Duration = Duration::from_secs(10);

// ---- the hub ---------------------------------------------------------------

/// A nats-server child, killed on drop (and its directory removed).
pub struct Hub {
    child: Child,
    dir: PathBuf,
    pub client_port: u16,
    pub leaf_port: u16,
    pub monitor_port: u16,
    /// The routes port, for a node of a [`HubCluster`].
    pub cluster_port: Option<u16>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

/// nats-server, or `None` with the reason printed (a panic when CI=true).
fn nats_server_or_skip() -> Option<PathBuf> {
    let found = nats_server();
    if found.is_none() {
        let why = "nats-server not found in PATH (Debian: apt install nats-server)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}, and CI=true");
        }
        eprintln!("skipped: {why}");
    }
    found
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Waits (bounded) for a nats-server [`Hub::spawn`] started to say it is
/// ready; `Err` with its last log line if it exited first.
fn await_ready(ready: &mpsc::Receiver<Result<(), String>>) -> Result<(), String> {
    match ready.recv_timeout(WITHIN) {
        Ok(result) => result,
        Err(_) => Err("nats-server did not report ready in time".to_owned()),
    }
}

/// The ports of one nats-server.
struct Ports {
    client: u16,
    leaf: u16,
    monitor: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            client: free_port(),
            leaf: free_port(),
            monitor: free_port(),
        }
    }
}

impl Hub {
    /// Starts a hub, or `None` (skip) when there is no nats-server.
    /// `leaf_auth` puts a user/password on the leafnodes block.
    pub fn start(name: &str, leaf_auth: Option<(&str, &str)>) -> Option<Hub> {
        let authorization = leaf_auth.map_or(String::new(), |(user, password)| {
            format!("  authorization {{ user: \"{user}\", password: \"{password}\" }}\n")
        });
        Hub::start_with(name, &authorization)
    }

    /// A hub with `leaf_extra` inside its leafnodes block (a `tls { }`
    /// block, an `authorization`); `None` (skip) without nats-server.
    pub fn start_with(name: &str, leaf_extra: &str) -> Option<Hub> {
        let binary = nats_server_or_skip()?;
        let (hub, ready) = Hub::spawn(&binary, name, Ports::free(), leaf_extra, None);
        if let Err(why) = await_ready(&ready) {
            panic!("{why}");
        }
        Some(hub)
    }

    /// Starts nats-server `hub-{name}` with `ports`, `leaf_extra` inside
    /// its leafnodes block and `cluster` as its `cluster` block; the
    /// receiver hears when it says it is ready ([`await_ready`]).
    fn spawn(
        binary: &std::path::Path,
        name: &str,
        ports: Ports,
        leaf_extra: &str,
        cluster: Option<(u16, String)>,
    ) -> (Hub, mpsc::Receiver<Result<(), String>>) {
        let dir = std::env::temp_dir().join(format!("blipmq-leaf-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let Ports {
            client: client_port,
            leaf: leaf_port,
            monitor: monitor_port,
        } = ports;
        let cluster_block = cluster
            .as_ref()
            .map_or(String::new(), |(_, block)| block.clone());
        let config = format!(
            "server_name: hub-{name}\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\n\
             leafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n{leaf_extra}}}\n{cluster_block}"
        );
        let config_path = dir.join("hub.conf");
        std::fs::write(&config_path, config).unwrap();
        // BLIPMQ_HUB_TRACE=1 echoes the hub's protocol trace, for debugging.
        let trace = std::env::var_os("BLIPMQ_HUB_TRACE").is_some();
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .args(if trace { &["-DV"][..] } else { &[] })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts");
        // Ready when it says so (its log goes to stderr).
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let label = format!("hub-{name}");
        std::thread::spawn(move || {
            let mut last = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if trace {
                    eprintln!("{label}: {line}");
                }
                if line.contains("Server is ready") {
                    let _ = ready_tx.send(Ok(()));
                }
                last = line;
            }
            // Gone: whoever still waits for "ready" hears why.
            let _ = ready_tx.send(Err(format!("{label} exited: {last}")));
        });
        let hub = Hub {
            child,
            dir,
            client_port,
            leaf_port,
            monitor_port,
            cluster_port: cluster.map(|(port, _)| port),
        };
        (hub, ready_rx)
    }

    /// Kills the nats-server (SIGKILL) and reaps it; again is a no-op.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Where its NATS clients connect.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// `GET <path>` on the monitoring port, as JSON.
    pub fn monitor(&self, path: &str) -> serde_json::Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor_port)).unwrap();
        stream.set_read_timeout(Some(WITHIN)).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split_once("\r\n\r\n").expect("an HTTP response").1;
        serde_json::from_str(body).expect("JSON")
    }
}

/// Polls `hub`'s `/leafz?subs=1` until `done` holds (bounded).
pub fn await_leafz(hub: &Hub, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let leafz = hub.monitor("/leafz?subs=1");
        if done(&leafz) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {leafz}"
        );
        // The monitor is polled: nothing to await.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `hub` lists `sub` (`subject` or `subject queue`) among the
/// subscriptions of one of its leaves.
pub fn await_hub_knows(hub: &Hub, sub: &str) {
    await_leafz(hub, &format!("a leaf's interest in {sub:?}"), |leafz| {
        leafz["leafs"].as_array().is_some_and(|leafs| {
            leafs.iter().any(|leaf| {
                leaf["subscriptions_list"]
                    .as_array()
                    .is_some_and(|subs| subs.iter().any(|s| s == sub))
            })
        })
    });
}

// ---- a cluster of hubs -----------------------------------------------------

/// nats-servers routed to each other as one cluster, on loopback. Each
/// node can be killed on its own ([`HubCluster::kill`]); all are killed,
/// and their directories removed, on drop.
pub struct HubCluster {
    pub nodes: Vec<Hub>,
}

impl HubCluster {
    /// Starts `size` nodes (`hub-{name}-{i}`) of cluster `name`, each with
    /// client, monitoring, leafnodes and routes ports and a route to every
    /// other node, and waits until every node has its routes up; `None`
    /// (skip) when there is no nats-server.
    ///
    /// The ports are free when picked, but another process may take one
    /// before its node binds it (the node then exits): the cluster is
    /// started again on other ports, at most three times.
    pub fn start(name: &str, size: usize) -> Option<HubCluster> {
        let binary = nats_server_or_skip()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match HubCluster::try_start(&binary, name, size) {
                Ok(cluster) => return Some(cluster),
                Err(why) if attempt < 3 => eprintln!("cluster {name}: {why}; again"),
                Err(why) => panic!("cluster {name}: {why}"),
            }
        }
    }

    fn try_start(binary: &std::path::Path, name: &str, size: usize) -> Result<HubCluster, String> {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        let mut readiness = Vec::new();
        for (i, &port) in route_ports.iter().enumerate() {
            let routes: Vec<String> = route_ports
                .iter()
                .filter(|&&other| other != port)
                .map(|other| format!("nats-route://127.0.0.1:{other}"))
                .collect();
            let block = format!(
                "cluster {{\n  name: blipmq-{name}\n  listen: 127.0.0.1:{port}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            );
            let (hub, ready) = Hub::spawn(
                binary,
                &format!("{name}-{i}"),
                Ports::free(),
                "",
                Some((port, block)),
            );
            nodes.push(hub);
            readiness.push(ready);
        }
        // Dropped (all killed) on an early return or a panic below.
        let cluster = HubCluster { nodes };
        for ready in &readiness {
            await_ready(ready)?;
        }
        let deadline = Instant::now() + WITHIN;
        loop {
            let routes: Vec<u64> = cluster
                .nodes
                .iter()
                .map(|node| node.monitor("/routez")["num_routes"].as_u64().unwrap_or(0))
                .collect();
            if routes.iter().all(|&n| n == size as u64 - 1) {
                return Ok(cluster);
            }
            assert!(
                Instant::now() < deadline,
                "the cluster's routes did not come up: {routes:?} routes per node"
            );
            // The monitor is polled: nothing to await.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `i`'s nats-server, killed (SIGKILL) and reaped; the others
    /// stay up.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }
}

// ---- a leaf's configuration ------------------------------------------------

/// A blipmqd configuration with a NATS listener on a free loopback port
/// and one remote, `name`, with a URL per hub leafnodes port (nodes of
/// one hub cluster, tried in turn).
pub fn leaf_config(name: &str, leaf_ports: &[u16]) -> String {
    let urls: Vec<String> = leaf_ports
        .iter()
        .map(|port| format!("\"nats-leaf://127.0.0.1:{port}\""))
        .collect();
    format!(
        "[nats]\nlisten = \"127.0.0.1:0\"\n\n[[leafnode.remotes]]\n\
         urls = [{}]\nname = \"{name}\"\n",
        urls.join(", ")
    )
}

// ---- a NATS client, by hand ------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
pub struct HubMsg {
    pub subject: String,
    pub reply: Option<String>,
    pub headers: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// A client of the NATS server at `addr` (a hub's client port, a
    /// broker's NATS listener), connected with headers on.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WITHIN)).unwrap();
        let mut client = Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        assert!(client.line().starts_with("INFO "));
        client.send(
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\n",
        );
        client.flush();
        client
    }

    pub fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("a line within the timeout");
        assert!(!line.is_empty(), "the hub closed the client");
        line.trim_end().to_owned()
    }

    /// PING, then everything up to its PONG: the hub has handled what was
    /// sent before. Messages in between are kept nowhere (callers flush
    /// before they expect any).
    pub fn flush(&mut self) {
        self.send("PING\r\n");
        loop {
            let line = self.line();
            assert!(!line.starts_with("-ERR"), "{line}");
            if line == "PONG" {
                return;
            }
        }
    }

    /// The next message on `subject`, skipping the others.
    pub fn next_msg_on(&mut self, subject: &str) -> HubMsg {
        loop {
            let msg = self.next_msg();
            if msg.subject == subject {
                return msg;
            }
        }
    }

    /// A second handle on the client's socket, to publish from another
    /// thread.
    pub fn writer(&self) -> TcpStream {
        self.writer.try_clone().unwrap()
    }

    pub fn next_msg(&mut self) -> HubMsg {
        loop {
            let line = self.line();
            if line == "PING" {
                self.send("PONG\r\n");
                continue;
            }
            // A cluster's node tells its clients of changes in the cluster.
            if line.starts_with("INFO ") {
                continue;
            }
            let args: Vec<&str> = line.split(' ').collect();
            let (headers_len, total) = match args[0] {
                "MSG" => (None, args[args.len() - 1].parse::<usize>().unwrap()),
                "HMSG" => (
                    Some(args[args.len() - 2].parse::<usize>().unwrap()),
                    args[args.len() - 1].parse::<usize>().unwrap(),
                ),
                _ => panic!("unexpected {line}"),
            };
            let fixed = if headers_len.is_some() { 5 } else { 4 };
            let reply = (args.len() == fixed + 1).then(|| args[3].to_owned());
            let mut body = vec![0; total + 2];
            self.reader.read_exact(&mut body).unwrap();
            body.truncate(total);
            let headers = headers_len.map(|len| body.drain(..len).collect());
            return HubMsg {
                subject: args[1].to_owned(),
                reply,
                headers,
                payload: body,
            };
        }
    }
}

// ---- waits and payloads ----------------------------------------------------

/// Publishes empty messages on `subject` from `publisher` until
/// `subscriber` gets one: the subscriber's interest has crossed the link.
/// Later copies are for the caller to skip (`next_msg_on`).
pub fn publish_until_received(publisher: &Client, subscriber: &mut Client, subject: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = publisher.writer();
    let frame = format!("PUB {subject} 0\r\n\r\n");
    let publishing = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + WITHIN;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                writer.write_all(frame.as_bytes()).unwrap();
                // Paced, not a synchronisation: the receiver is awaited.
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    subscriber.next_msg_on(subject);
    stop.store(true, Ordering::Relaxed);
    publishing.join().unwrap();
}

/// Reads `subscriber`'s messages on `subject` until one on `end`: their
/// payloads, in order.
pub fn payloads_until(subscriber: &mut Client, subject: &str, end: &str) -> Vec<String> {
    let mut payloads = Vec::new();
    loop {
        let msg = subscriber.next_msg();
        if msg.subject == end {
            return payloads;
        }
        if msg.subject == subject {
            payloads.push(String::from_utf8(msg.payload).unwrap());
        }
    }
}

/// Publishes `0`, `1`, … `count - 1` on `subject`.
pub fn publish_numbered(client: &mut Client, subject: &str, count: usize) {
    for i in 0..count {
        client.send(&format!("PUB {subject} {}\r\n{i}\r\n", i.to_string().len()));
    }
}

/// What [`publish_numbered`] publishes.
pub fn numbers(count: usize) -> Vec<String> {
    (0..count).map(|i| i.to_string()).collect()
}
