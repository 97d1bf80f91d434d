//! The sans-IO leaf-node link (`blipmq_dataplane::leaf`) against a real hub:
//! Debian's nats-server (v2.9.10) with a `leafnodes { listen }` block,
//! started by the test. A tiny blocking driver runs the link over a plain
//! TCP socket; NATS clients on the hub's client port are written by hand.
//!
//! Skipped with a reason when nats-server is not in PATH, unless CI=true.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blipmq_dataplane::leaf::{
    Action, CloseReason, Credentials, Event, Forwarded, InterestChange, LeafLink, LeafLinkConfig,
    Origin, Outgoing, Read as LinkRead,
};

/// Bounds every wait.
const WITHIN: Duration = Duration::from_secs(10);

// ---- the hub ---------------------------------------------------------------

/// A nats-server child, killed on drop.
struct Hub {
    child: Child,
    dir: PathBuf,
    client_port: u16,
    leaf_port: u16,
    monitor_port: u16,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl Hub {
    /// Starts a hub, or `None` (skip) when there is no nats-server.
    /// `leaf_auth` puts a user/password on the leafnodes block.
    fn start(name: &str, leaf_auth: Option<(&str, &str)>) -> Option<Hub> {
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

    /// `GET <path>` on the monitoring port, as JSON.
    fn monitor(&self, path: &str) -> serde_json::Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor_port)).unwrap();
        stream.set_read_timeout(Some(WITHIN)).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split_once("\r\n\r\n").expect("an HTTP response").1;
        serde_json::from_str(body).expect("JSON")
    }
}

// ---- a NATS client on the hub's client port, by hand ------------------------

#[derive(Debug, PartialEq, Eq)]
struct HubMsg {
    subject: String,
    reply: Option<String>,
    headers: Option<Vec<u8>>,
    payload: Vec<u8>,
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(hub: &Hub) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", hub.client_port)).unwrap();
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

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
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
    fn flush(&mut self) {
        self.send("PING\r\n");
        loop {
            let line = self.line();
            assert!(!line.starts_with("-ERR"), "{line}");
            if line == "PONG" {
                return;
            }
        }
    }

    fn next_msg(&mut self) -> HubMsg {
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

// ---- the driver: the link over a socket ------------------------------------

/// A [`LeafLink`] over a blocking socket.
struct Driver {
    link: LeafLink,
    stream: Option<TcpStream>,
    input: Vec<u8>,
    /// What the link asked for and reported, as debug text, in order.
    log: Vec<String>,
    /// Hub messages delivered, in order.
    delivered: Vec<HubMsg>,
    pongs: usize,
}

impl Driver {
    fn new(hub: &Hub, name: &str, credentials: Credentials, seed: u64) -> Driver {
        let mut config = LeafLinkConfig::new(name, vec![format!("127.0.0.1:{}", hub.leaf_port)]);
        config.credentials = credentials;
        config.seed = seed;
        Driver {
            link: LeafLink::new(config, Instant::now()),
            stream: None,
            input: Vec::new(),
            log: Vec::new(),
            delivered: Vec::new(),
            pongs: 0,
        }
    }

    /// Runs the link until `done` holds; panics after [`WITHIN`].
    fn run_until(&mut self, what: &str, done: impl Fn(&Driver) -> bool) {
        let deadline = Instant::now() + WITHIN;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.log
            );
            self.step();
        }
    }

    fn step(&mut self) {
        while let Some(action) = self.link.poll(Instant::now()) {
            self.log.push(format!("{action:?}"));
            match action {
                Action::Connect { url, .. } => match TcpStream::connect(&url) {
                    Ok(stream) => {
                        // A short read timeout lets timers run; it is not a
                        // wait for anything.
                        stream
                            .set_read_timeout(Some(Duration::from_millis(20)))
                            .unwrap();
                        self.stream = Some(stream);
                        self.input.clear();
                        self.link.connected(Instant::now());
                    }
                    Err(_) => self.link.disconnected(Instant::now()),
                },
                Action::Close(_) => {
                    self.flush_output();
                    self.stream = None;
                }
                Action::Up | Action::HubInterestCleared => {}
            }
        }
        self.flush_output();
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 16 << 10];
        match stream.read(&mut chunk) {
            Ok(0) => {
                self.log.push("EOF".into());
                self.stream = None;
                self.link.disconnected(Instant::now());
                return;
            }
            Ok(n) => self.input.extend_from_slice(&chunk[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => panic!("read: {error}"),
        }
        self.consume_input();
        self.flush_output();
    }

    fn consume_input(&mut self) {
        let input = std::mem::take(&mut self.input);
        let mut at = 0;
        loop {
            match self.link.read(&input[at..], Instant::now()) {
                LinkRead::Partial => break,
                LinkRead::Closed => {
                    at = input.len();
                    break;
                }
                LinkRead::Op { consumed, event } => {
                    if &input[at..at + consumed] == b"PONG\r\n" {
                        self.pongs += 1;
                    }
                    match event {
                        Some(Event::Deliver(msg)) => self.delivered.push(HubMsg {
                            subject: String::from_utf8_lossy(msg.subject).into_owned(),
                            reply: msg.reply.map(|r| String::from_utf8_lossy(r).into_owned()),
                            headers: msg.headers.map(<[u8]>::to_vec),
                            payload: msg.payload.to_vec(),
                        }),
                        Some(event) => self.log.push(describe(&event)),
                        None => {}
                    }
                    at += consumed;
                }
            }
        }
        self.input = input[at..].to_vec();
    }

    fn flush_output(&mut self) {
        let output = std::mem::take(self.link.output());
        if let (Some(stream), false) = (self.stream.as_mut(), output.is_empty()) {
            stream.write_all(&output).unwrap();
        }
    }

    /// Writes PING past the link and runs until the hub's PONG: the hub has
    /// handled everything the link wrote before.
    fn sync(&mut self) {
        self.flush_output();
        let seen = self.pongs;
        self.stream
            .as_mut()
            .expect("connected")
            .write_all(b"PING\r\n")
            .unwrap();
        self.run_until("our PONG", |d| d.pongs > seen);
    }

    fn logged(&self, entry: &str) -> bool {
        self.log.iter().any(|line| line == entry)
    }
}

/// A hub-interest event as `+subject`, `+subject queue weight`, `~...`
/// (weight changed) or `-subject [queue]`.
fn describe(event: &Event<'_>) -> String {
    let Event::HubInterest {
        subject,
        queue,
        change,
    } = event
    else {
        return format!("{event:?}");
    };
    let sign = match change {
        InterestChange::Added => '+',
        InterestChange::Updated => '~',
        InterestChange::Removed => '-',
    };
    let subject = String::from_utf8_lossy(subject);
    match queue {
        Some(queue) if *change == InterestChange::Removed => {
            format!("{sign}{subject} {}", String::from_utf8_lossy(queue.name))
        }
        Some(queue) => format!(
            "{sign}{subject} {} {}",
            String::from_utf8_lossy(queue.name),
            queue.weight
        ),
        None => format!("{sign}{subject}"),
    }
}

fn up(hub: &Hub, credentials: Credentials) -> Driver {
    let mut driver = Driver::new(hub, "blipmq-test-leaf", credentials, 1);
    driver.run_until("the handshake", |d| d.link.is_up());
    driver
}

// ---- the tests ---------------------------------------------------------------

#[test]
fn leaf_link_against_nats_server() {
    let Some(hub) = Hub::start("plain", None) else {
        return;
    };
    let mut leaf = up(&hub, Credentials::None);
    let info = leaf.link.hub_info().expect("the hub's INFO").clone();
    eprintln!("nats-server INFO on its leafnode port: {info:?}");
    assert_eq!(info.name, "hub-plain");
    assert!(info.headers && info.info_on_connect);

    // (a) The hub lists the leaf, with our loop-detection subscription
    // (v2.9.10's /leafz shows no leaf name; later versions add `name`).
    leaf.sync();
    let leafz = hub.monitor("/leafz?subs=1");
    assert_eq!(leafz["leafnodes"], 1, "{leafz}");
    assert_eq!(leafz["leafs"][0]["account"], "$G", "{leafz}");
    let loop_subject = String::from_utf8_lossy(leaf.link.loop_subject()).into_owned();
    assert_eq!(
        leafz["leafs"][0]["subscriptions_list"][0],
        loop_subject.as_str(),
        "{leafz}"
    );

    // (b) Local interest sent as LS+ brings a hub client's PUB as LMSG ...
    leaf.link.add_interest(b"orders.*", None);
    leaf.link.add_interest(b"marker", None);
    leaf.sync();
    let mut publisher = Client::connect(&hub);
    publisher.send("PUB orders.1 _INBOX.r1 5\r\nfirst\r\n");
    publisher.flush();
    leaf.run_until("orders.1", |d| !d.delivered.is_empty());
    assert_eq!(
        leaf.delivered.remove(0),
        HubMsg {
            subject: "orders.1".into(),
            reply: Some("_INBOX.r1".into()),
            headers: None,
            payload: b"first".to_vec()
        }
    );
    // ... and LS- stops it: the message after it on another subject
    // arrives alone.
    leaf.link.remove_interest(b"orders.*", None);
    leaf.sync();
    publisher.send("PUB orders.2 3\r\ntwo\r\nPUB marker 1\r\nm\r\n");
    publisher.flush();
    leaf.run_until("the marker", |d| !d.delivered.is_empty());
    let subjects: Vec<_> = leaf.delivered.drain(..).map(|m| m.subject).collect();
    assert_eq!(subjects, ["marker"]);

    // (c) A hub client's SUB arrives as LS+, a queue SUB with its weight,
    // and UNSUBs as LS- (a group's weight first goes down).
    let mut subscriber = Client::connect(&hub);
    subscriber.send("SUB to.hub 1\r\nSUB jobs.* workers 2\r\nSUB jobs.* workers 3\r\n");
    subscriber.flush();
    leaf.run_until("hub interest", |d| d.logged("~jobs.* workers 2"));
    assert!(leaf.logged("+to.hub"), "{:?}", leaf.log);
    assert!(leaf.logged("+jobs.* workers 1"), "{:?}", leaf.log);
    assert!(leaf.link.hub_wants(b"to.hub"));
    assert_eq!(leaf.link.hub_group_weight(b"jobs.*", b"workers"), Some(2));

    // (d) An LMSG from the link reaches the hub subscriber with its reply
    // subject; with headers as HMSG; and a queue group only when named.
    let sent = leaf.link.forward(
        &Outgoing {
            subject: b"to.hub",
            reply: Some(b"_INBOX.leaf.1"),
            headers: None,
            payload: b"hello hub",
        },
        [],
        Origin::Local,
    );
    assert_eq!(sent, Forwarded::Sent);
    let headers = b"NATS/1.0\r\nX-From: leaf\r\n\r\n";
    let sent = leaf.link.forward(
        &Outgoing {
            subject: b"to.hub",
            reply: None,
            headers: Some(headers),
            payload: b"with headers",
        },
        [],
        Origin::Local,
    );
    assert_eq!(sent, Forwarded::Sent);
    let groups: [&[u8]; 1] = [b"workers"];
    let job = Outgoing {
        subject: b"jobs.7",
        reply: None,
        headers: None,
        payload: b"job",
    };
    // Not naming the group: nothing for the hub (no plain interest).
    assert_eq!(
        leaf.link.forward(&job, [], Origin::Local),
        Forwarded::NoInterest
    );
    assert_eq!(
        leaf.link.forward(&job, groups, Origin::Local),
        Forwarded::Sent
    );
    leaf.sync();
    assert_eq!(
        subscriber.next_msg(),
        HubMsg {
            subject: "to.hub".into(),
            reply: Some("_INBOX.leaf.1".into()),
            headers: None,
            payload: b"hello hub".to_vec()
        }
    );
    let with_headers = subscriber.next_msg();
    assert_eq!(with_headers.headers.as_deref(), Some(&headers[..]));
    assert_eq!(with_headers.payload, b"with headers");
    assert_eq!(subscriber.next_msg().subject, "jobs.7");
    // What the module docs say of nats-server: a leaf's LMSG without queue
    // names reaches no queue subscriber. Written past the link on purpose.
    leaf.stream
        .as_mut()
        .unwrap()
        .write_all(b"LMSG jobs.8 1\r\nx\r\n")
        .unwrap();
    leaf.link.forward(
        &Outgoing {
            subject: b"to.hub",
            reply: None,
            headers: None,
            payload: b"after",
        },
        [],
        Origin::Local,
    );
    leaf.sync();
    assert_eq!(
        subscriber.next_msg().payload,
        b"after",
        "jobs.8 must not arrive"
    );

    subscriber.send("UNSUB 2\r\nUNSUB 3\r\nUNSUB 1\r\n");
    subscriber.flush();
    leaf.run_until("LS- to.hub", |d| d.logged("-to.hub"));
    assert!(leaf.logged("~jobs.* workers 1"), "{:?}", leaf.log);
    assert!(leaf.logged("-jobs.* workers"), "{:?}", leaf.log);
    assert!(!leaf.link.hub_wants(b"to.hub") && !leaf.link.hub_wants(b"jobs.1"));

    // A message from the hub is never offered back.
    let echo = Outgoing {
        subject: b"marker",
        reply: None,
        headers: None,
        payload: b"m",
    };
    assert_eq!(leaf.link.forward(&echo, [], Origin::Hub), Forwarded::Loop);
}

#[test]
fn credentials_on_the_leafnode_port() {
    let Some(hub) = Hub::start("auth", Some(("edge", "right-pw"))) else {
        return;
    };
    // (e) Wrong credentials: -ERR, the link closes cleanly and waits.
    let mut wrong = Driver::new(
        &hub,
        "blipmq-test-leaf",
        Credentials::UserPassword {
            user: "edge".into(),
            password: "wrong-pw".into(),
        },
        2,
    );
    let refused = format!(
        "{:?}",
        Action::Close(CloseReason::HubError("Authorization Violation".into()))
    );
    wrong.run_until("the refusal", |d| d.logged(&refused));
    assert!(!wrong.link.is_up());
    assert_eq!(wrong.link.stats().connects, 0);
    assert_eq!(hub.monitor("/leafz")["leafnodes"], 0);

    // Right ones work.
    let right = up(
        &hub,
        Credentials::UserPassword {
            user: "edge".into(),
            password: "right-pw".into(),
        },
    );
    assert_eq!(right.link.stats().connects, 1);
    assert_eq!(hub.monitor("/leafz")["leafnodes"], 1);
}

#[test]
fn the_same_loop_subject_twice_is_a_loop() {
    let Some(hub) = Hub::start("loop", None) else {
        return;
    };
    // Two links with one seed share a `$LDS.` subject, as a broker whose
    // interest came back to it through the cluster would: the hub hands
    // the first one's LS+ to the second, which must see a loop. (Under
    // one name the hub would instead close the older link as a duplicate.)
    let mut first = up(&hub, Credentials::None);
    first.sync();
    let mut second = Driver::new(&hub, "another-leaf", Credentials::None, 1);
    let looped = format!("{:?}", Action::Close(CloseReason::LoopDetected));
    second.run_until("the loop", |d| d.logged(&looped));
    first.sync();
    assert!(first.link.is_up());
}

/// Until the workers run the link, a broker configured to join a hub does
/// not start, rather than run without it.
#[test]
fn blipmqd_refuses_remotes_until_the_workers_run_the_link() {
    let config = blipmq_dataplane::config::Config::from_toml_str(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[leafnode.remotes]]\nurls = [\"nats-leaf://127.0.0.1:7422\"]\n",
    )
    .expect("a valid config");
    let error = match blipmq_dataplane::server::Server::start(&config) {
        Ok(_) => panic!("blipmqd started with leafnode.remotes"),
        Err(error) => error,
    };
    assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
    assert!(error.to_string().contains("leafnode.remotes"), "{error}");
}
