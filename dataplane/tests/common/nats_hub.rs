//! A stock nats-server as a leaf-node hub, started by a test, and a NATS
//! client written by hand for its client port (or any NATS server's).
//!
//! [`Hub::start`] skips (returns `None`) with a reason when nats-server is
//! not in PATH, unless CI=true, where that fails the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Bounds every wait.
pub const WITHIN: Duration = Duration::from_secs(10);

// ---- the hub ---------------------------------------------------------------

/// A nats-server child, killed on drop.
pub struct Hub {
    child: Child,
    dir: PathBuf,
    pub client_port: u16,
    pub leaf_port: u16,
    pub monitor_port: u16,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl Hub {
    /// Starts a hub, or `None` (skip) when there is no nats-server.
    /// `leaf_auth` puts a user/password on the leafnodes block.
    pub fn start(name: &str, leaf_auth: Option<(&str, &str)>) -> Option<Hub> {
        let Some(binary) = nats_server() else {
            let why = "nats-server not found in PATH (Debian: apt install nats-server)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}, and CI=true");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("blipmq-leaf-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (client_port, leaf_port, monitor_port) = (free_port(), free_port(), free_port());
        let authorization = leaf_auth.map_or(String::new(), |(user, password)| {
            format!("  authorization {{ user: \"{user}\", password: \"{password}\" }}\n")
        });
        let config = format!(
            "server_name: hub-{name}\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\n\
             leafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n{authorization}}}\n"
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
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if trace {
                    eprintln!("hub: {line}");
                }
                if line.contains("Server is ready") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let hub = Hub {
            child,
            dir,
            client_port,
            leaf_port,
            monitor_port,
        };
        ready_rx
            .recv_timeout(WITHIN)
            .expect("nats-server reports ready");
        Some(hub)
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
