//! The sans-IO leaf-node link (`blipmq_dataplane::leaf`) against a real hub:
//! Debian's nats-server (v2.9.10) with a `leafnodes { listen }` block,
//! started by the test. A tiny blocking driver runs the link over a plain
//! TCP socket; NATS clients on the hub's client port are written by hand.
//!
//! Skipped with a reason when nats-server is not in PATH, unless CI=true.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::nats_hub::{Client, Hub, HubMsg, WITHIN};

use blipmq_dataplane::leaf::{
    Action, CloseReason, Credentials, Event, Forwarded, InterestChange, LeafLink, LeafLinkConfig,
    Origin, Outgoing, Read as LinkRead,
};

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
                Action::Up | Action::HubInterestCleared | Action::StartTls => {}
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
    let mut publisher = Client::connect(hub.client_addr());
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
    let mut subscriber = Client::connect(hub.client_addr());
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
        0,
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
        0,
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
        leaf.link.forward(&job, [], Origin::Local, 0),
        Forwarded::NoInterest
    );
    assert_eq!(
        leaf.link.forward(&job, groups, Origin::Local, 0),
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
        0,
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
    assert_eq!(
        leaf.link.forward(&echo, [], Origin::Hub, 0),
        Forwarded::Loop
    );
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

/// A broker configured for what it cannot do with a hub does not start,
/// rather than run without joining it.
#[test]
fn blipmqd_refuses_remotes_it_cannot_honour() {
    let refused = [
        (
            "[[leafnode.remotes]]\nurls = [\"nats-leaf://127.0.0.1:7422\"]\n\n\
             [[leafnode.remotes]]\nurls = [\"nats-leaf://127.0.0.1:7423\"]\n",
            "one hub per broker",
        ),
        (
            "[[leafnode.remotes]]\nurls = [\"tls://127.0.0.1:7422\"]\n",
            "TLS to the hub",
        ),
    ];
    for (remotes, why) in refused {
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{remotes}");
        let config =
            blipmq_dataplane::config::Config::from_toml_str(&text).expect("a valid config");
        let error = match blipmq_dataplane::server::Server::start(&config) {
            Ok(_) => panic!("blipmqd started with {remotes}"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
        assert!(error.to_string().contains(why), "{error}");
    }
}
