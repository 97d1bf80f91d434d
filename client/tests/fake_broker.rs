//! The client against a fake broker: a std TcpListener on 127.0.0.1:0 in a
//! thread that speaks the protocol with blipmq-protocol. Every blocking call
//! is bounded: the fake broker's socket has a read timeout, the client's
//! calls have timeouts, and ordering between the threads uses channels.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use blipmq_client::{Client, Error, Options};
use blipmq_protocol::{decode_frame, encode, flags, Connect, ErrorCode, Info, Op, Request};

/// Bound on every wait in these tests.
const T: Duration = Duration::from_secs(5);

fn info() -> Info {
    // From JSON, so that optional fields added to INFO later default.
    serde_json::from_value(serde_json::json!({
        "server_id": "fake",
        "version": "0.0.0",
        "protocol": 1,
        "max_payload": 1 << 20,
        "max_topic_length": 255,
        "auth_required": false,
        "tls_required": false,
    }))
    .unwrap()
}

/// One frame as the fake broker read it, with its exact bytes.
#[derive(Debug, Clone)]
struct Frame {
    op: u8,
    flags: u8,
    topic: Vec<u8>,
    body: Vec<u8>,
    raw: Vec<u8>,
}

impl Frame {
    fn is(&self, op: Op) -> bool {
        self.op == op as u8
    }

    fn acked(&self) -> bool {
        self.flags & flags::ACK != 0
    }
}

/// The broker's side of one connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn bytes_of(encode_frame: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out);
    out
}

impl Conn {
    /// The next frame, or `None` once the client closed the connection.
    fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) =
                decode_frame(&self.buf, u32::MAX).expect("client sent a malformed frame")
            {
                let frame = Frame {
                    op: frame.op,
                    flags: frame.flags,
                    topic: frame.topic.to_vec(),
                    body: frame.body.to_vec(),
                    raw: self.buf[..used].to_vec(),
                };
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(err) => panic!("fake broker read failed (timeout?): {err}"),
            }
        }
    }

    fn read(&mut self) -> Frame {
        self.next()
            .expect("client closed the connection unexpectedly")
    }

    fn read_op(&mut self, op: Op) -> Frame {
        let frame = self.read();
        assert_eq!(frame.op, op as u8, "expected {}, got {frame:?}", op.name());
        frame
    }

    fn send(&mut self, encode_frame: impl FnOnce(&mut Vec<u8>)) {
        self.stream
            .write_all(&bytes_of(encode_frame))
            .expect("fake broker write failed");
    }

    fn ok(&mut self) {
        self.send(encode::put_ok);
    }

    fn pong(&mut self) {
        self.send(encode::put_pong);
    }

    fn error(&mut self, code: ErrorCode, reason: &str) {
        self.send(|b| encode::put_error(b, code, reason));
    }

    fn message(&mut self, subject: &str, sid: u32, reply: Option<&str>, payload: &[u8]) {
        self.send(|b| {
            encode::put_message(
                b,
                subject.as_bytes(),
                sid,
                reply.map(str::as_bytes),
                payload,
            )
        });
    }

    /// Reads CONNECT, answers OK, returns it.
    fn accept_connect(&mut self) -> Connect {
        let frame = self.read_op(Op::Connect);
        let connect = Connect::parse(&frame.body).expect("bad CONNECT body");
        self.ok();
        connect
    }

    /// Reads an acked frame and the PING after it; answers `error` or OK,
    /// then PONG. Returns the acked frame.
    fn answer_acked(&mut self, error: Option<(ErrorCode, &str)>) -> Frame {
        let frame = self.read();
        assert!(frame.acked(), "expected an acked frame, got {frame:?}");
        self.read_op(Op::Ping);
        match error {
            Some((code, reason)) => self.error(code, reason),
            None => self.ok(),
        }
        self.pong();
        frame
    }

    /// Answers like a well-behaved broker until DISCONNECT or the end of the
    /// connection: OK for acked frames, PONG for PINGs. Returns what it read.
    fn serve(&mut self) -> Vec<Frame> {
        let mut seen = Vec::new();
        while let Some(frame) = self.next() {
            if frame.acked() {
                self.ok();
            }
            if frame.is(Op::Ping) {
                self.pong();
            }
            let done = frame.is(Op::Disconnect);
            seen.push(frame);
            if done {
                break;
            }
        }
        seen
    }
}

/// Starts a fake broker for one connection: it accepts, sends `info`, and
/// runs `script`. Join the handle to surface the script's assertion failures.
fn fake_broker(
    info: Info,
    script: impl FnOnce(Conn) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + T;
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no client connected");
                    thread::sleep(Duration::from_millis(2));
                }
                Err(err) => panic!("accept failed: {err}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
        };
        let json = serde_json::to_vec(&info).unwrap();
        conn.send(|b| encode::put_info(b, &json));
        script(conn);
    });
    (addr, handle)
}

/// A broker that handshakes and then serves until the client disconnects.
fn serving_broker(info: Info) -> (SocketAddr, JoinHandle<()>) {
    fake_broker(info, |mut conn| {
        conn.accept_connect();
        conn.serve();
    })
}

fn options() -> Options {
    Options {
        connect_timeout: T,
        request_timeout: T,
        ..Options::default()
    }
}

fn connect(addr: SocketAddr) -> Client {
    Client::connect_with(addr, options()).expect("connect")
}

fn server_code(result: Result<impl std::fmt::Debug, Error>) -> u16 {
    match result {
        Err(Error::Server { code, .. }) => code,
        other => panic!("expected Error::Server, got {other:?}"),
    }
}

#[test]
fn handshake_sends_connect_with_name_and_token() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        let connect = conn.accept_connect();
        assert_eq!(connect.protocol, 1);
        assert_eq!(connect.name.as_deref(), Some("tester"));
        assert_eq!(connect.token.as_deref(), Some("s3cret"));
        assert!(!connect.verbose);
        conn.serve();
    });
    let client = Client::connect_with(
        addr,
        Options {
            name: Some("tester".into()),
            token: Some("s3cret".into()),
            ..options()
        },
    )
    .unwrap();
    assert_eq!(client.server_info(), &info());
    assert!(!client.is_closed());
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn connect_error_401_is_a_server_error() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.read_op(Op::Connect);
        conn.error(ErrorCode::Unauthorized, "bad token");
    });
    match Client::connect_with(addr, options()) {
        Err(Error::Server { code, reason }) => {
            assert_eq!(code, 401);
            assert_eq!(reason, "bad token");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    broker.join().unwrap();
}

#[test]
fn connect_to_a_silent_broker_times_out() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.read_op(Op::Connect);
        // Never answers; the client gives up, which ends the connection.
        assert!(conn.next().is_none());
    });
    let started = Instant::now();
    let result = Client::connect_with(
        addr,
        Options {
            connect_timeout: Duration::from_millis(200),
            ..options()
        },
    );
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(started.elapsed() < T);
    broker.join().unwrap();
}

#[test]
fn publish_bytes_are_exactly_the_protocol_encoding() {
    let (done_tx, done_rx) = mpsc::channel();
    let (addr, broker) = fake_broker(info(), move |mut conn| {
        conn.accept_connect();
        let frames = conn.serve();
        done_tx.send(frames).unwrap();
    });
    let client = connect(addr);
    let sub = client.subscribe("a.*").unwrap();
    client.publish("a.b", b"hi").unwrap();
    client.publish_with_reply("a.b", "r.1", b"x").unwrap();
    client
        .queue_subscribe("q.>", "workers")
        .unwrap()
        .unsubscribe()
        .unwrap();
    client.flush().unwrap();
    drop(sub);
    client.close().unwrap();
    broker.join().unwrap();
    let frames = done_rx.recv_timeout(T).unwrap();
    let raw: Vec<&[u8]> = frames.iter().map(|f| f.raw.as_slice()).collect();
    let ping = bytes_of(encode::put_ping);
    let expected: Vec<Vec<u8>> = vec![
        // protocol.md's example, with sid 1 and flag ACK.
        vec![
            0, 0, 0, 0x0b, 0x03, 0, 3, 0x01, b'a', b'.', b'*', 0, 0, 0, 1,
        ],
        ping.clone(),
        // protocol.md's example, byte for byte.
        vec![0, 0, 0, 0x09, 0x02, 0, 3, 0, b'a', b'.', b'b', b'h', b'i'],
        bytes_of(|b| encode::put_publish(b, b"a.b", Some(b"r.1"), b"x", false)),
        bytes_of(|b| encode::put_subscribe(b, b"q.>", 2, Some(b"workers"), true)),
        ping.clone(),
        bytes_of(|b| encode::put_unsubscribe(b, 2, 0, true)),
        ping.clone(),
        ping.clone(),
        // The dropped subscription: non-acked UNSUBSCRIBE.
        bytes_of(|b| encode::put_unsubscribe(b, 1, 0, false)),
        ping.clone(),
        bytes_of(|b| encode::put_disconnect(b, "")),
    ];
    let expected: Vec<&[u8]> = expected.iter().map(Vec::as_slice).collect();
    assert_eq!(raw, expected);
    // And the broker's own parser agrees.
    let frame = &frames[3];
    let request = Request::parse(blipmq_protocol::RawFrame {
        op: frame.op,
        flags: frame.flags,
        topic: &frame.topic,
        body: &frame.body,
    })
    .unwrap();
    assert_eq!(
        request,
        Request::Publish {
            subject: b"a.b",
            reply: Some(b"r.1"),
            payload: b"x",
            ack: false
        }
    );
}

#[test]
fn subscribe_waits_for_ok() {
    let (got_tx, got_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (addr, broker) = fake_broker(info(), move |mut conn| {
        conn.accept_connect();
        let frame = conn.read_op(Op::Subscribe);
        assert!(frame.acked());
        assert_eq!(frame.topic, b"orders.*");
        conn.read_op(Op::Ping);
        got_tx.send(()).unwrap();
        go_rx.recv_timeout(T).unwrap();
        conn.ok();
        conn.pong();
        conn.serve();
    });
    let client = connect(addr);
    let (done_tx, done_rx) = mpsc::channel();
    let subscriber = client.clone();
    let worker = thread::spawn(move || done_tx.send(subscriber.subscribe("orders.*")).unwrap());
    got_rx.recv_timeout(T).unwrap();
    // The broker holds its OK back: subscribe cannot have returned.
    assert!(matches!(done_rx.try_recv(), Err(mpsc::TryRecvError::Empty)));
    go_tx.send(()).unwrap();
    let sub = done_rx.recv_timeout(T).unwrap().unwrap();
    assert_eq!(sub.sid(), 1);
    worker.join().unwrap();
    drop(sub);
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn messages_are_dispatched_by_sid() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        conn.answer_acked(None);
        conn.answer_acked(None);
        conn.message("a.x", 1, None, b"one");
        conn.message("b.y.z", 2, Some("reply.here"), b"two");
        conn.message("nobody", 99, None, b"ignored");
        conn.message("a.y", 1, None, b"three");
        conn.serve();
    });
    let client = connect(addr);
    let a = client.subscribe("a.*").unwrap();
    let b = client.subscribe("b.>").unwrap();
    assert_eq!((a.sid(), b.sid()), (1, 2));
    let m1 = a.recv_timeout(T).unwrap();
    assert_eq!(
        (
            m1.subject.as_str(),
            m1.reply.as_deref(),
            &m1.payload[..],
            m1.sid
        ),
        ("a.x", None, &b"one"[..], 1)
    );
    let m2 = b.recv_timeout(T).unwrap();
    assert_eq!(
        (
            m2.subject.as_str(),
            m2.reply.as_deref(),
            &m2.payload[..],
            m2.sid
        ),
        ("b.y.z", Some("reply.here"), &b"two"[..], 2)
    );
    let m3 = a.recv_timeout(T).unwrap();
    assert_eq!(&m3.payload[..], b"three");
    assert!(a.try_recv().is_none());
    assert!(b.try_recv().is_none());
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn acked_publish_gets_ok_and_error_maps_to_server_error() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        let frame = conn.answer_acked(None);
        assert_eq!(
            frame.raw,
            bytes_of(|b| encode::put_publish(b, b"ok.subject", None, b"p", true))
        );
        conn.answer_acked(Some((ErrorCode::Forbidden, "not permitted")));
        conn.serve();
    });
    let client = connect(addr);
    client.publish_acked("ok.subject", b"p").unwrap();
    match client.publish_acked("secret.subject", b"p") {
        Err(Error::Server { code, reason }) => {
            assert_eq!((code, reason.as_str()), (403, "not permitted"))
        }
        other => panic!("expected 403, got {other:?}"),
    }
    // The connection stays usable, and the error was an answer, not a stray.
    client.flush().unwrap();
    assert!(client.last_error().is_none());
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn error_for_a_non_acked_frame_is_not_taken_for_the_next_answer() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        conn.read_op(Op::Publish);
        let acked = conn.read_op(Op::Publish);
        assert!(acked.acked());
        conn.read_op(Op::Ping);
        conn.error(ErrorCode::Forbidden, "publish to secret denied");
        conn.ok();
        conn.pong();
        conn.serve();
    });
    let client = connect(addr);
    client.publish("secret", b"x").unwrap();
    client.publish_acked("public", b"y").unwrap();
    assert_eq!(server_code(client.last_error().map_or(Ok(()), Err)), 403);
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn flush_waits_for_pong() {
    let (got_tx, got_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (addr, broker) = fake_broker(info(), move |mut conn| {
        conn.accept_connect();
        conn.read_op(Op::Publish);
        conn.read_op(Op::Ping);
        got_tx.send(()).unwrap();
        go_rx.recv_timeout(T).unwrap();
        conn.pong();
        conn.serve();
    });
    let client = connect(addr);
    client.publish("a", b"1").unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let flusher = client.clone();
    let worker = thread::spawn(move || done_tx.send(flusher.flush()).unwrap());
    got_rx.recv_timeout(T).unwrap();
    assert!(matches!(done_rx.try_recv(), Err(mpsc::TryRecvError::Empty)));
    go_tx.send(()).unwrap();
    done_rx.recv_timeout(T).unwrap().unwrap();
    worker.join().unwrap();
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn request_reply_round_trip() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        let sub = conn.answer_acked(None);
        assert!(sub.is(Op::Subscribe));
        let filter = String::from_utf8(sub.topic.clone()).unwrap();
        let prefix = filter
            .strip_suffix(".*")
            .expect("inbox filter ends in .*")
            .to_owned();
        assert!(prefix.starts_with("_INBOX.") && prefix.len() > "_INBOX.".len());
        let inbox_sid = u32::from_be_bytes(sub.body[..4].try_into().unwrap());
        let mut replies = Vec::new();
        for answer in [&b"noon"[..], b"one o'clock"] {
            let publish = conn.read_op(Op::Publish);
            assert_eq!(publish.topic, b"svc.time");
            assert_eq!(publish.flags, flags::REPLY);
            let reply_len = u16::from_be_bytes([publish.body[0], publish.body[1]]) as usize;
            let reply = String::from_utf8(publish.body[2..2 + reply_len].to_vec()).unwrap();
            assert!(reply.starts_with(&format!("{prefix}.")), "{reply}");
            assert_eq!(&publish.body[2 + reply_len..], b"what time?");
            // A stray answer to an unknown request is dropped.
            conn.message(&format!("{prefix}.999999"), inbox_sid, None, b"stray");
            conn.message(&reply, inbox_sid, None, answer);
            replies.push(reply);
        }
        assert_ne!(replies[0], replies[1]);
        // The third request gets no answer.
        conn.read_op(Op::Publish);
        conn.serve();
    });
    let client = connect(addr);
    let answer = client.request("svc.time", b"what time?", T).unwrap();
    assert_eq!(&answer.payload[..], b"noon");
    let answer = client.request("svc.time", b"what time?", T).unwrap();
    assert_eq!(&answer.payload[..], b"one o'clock");
    let result = client.request("svc.time", b"anyone?", Duration::from_millis(100));
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn broker_ping_is_answered_with_pong() {
    let (got_tx, got_rx) = mpsc::channel();
    let (addr, broker) = fake_broker(info(), move |mut conn| {
        conn.accept_connect();
        conn.send(encode::put_ping);
        let frame = conn.read();
        assert_eq!(frame.raw, bytes_of(encode::put_pong));
        got_tx.send(()).unwrap();
        conn.serve();
    });
    let client = connect(addr);
    got_rx.recv_timeout(T).unwrap();
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn broker_disconnect_ends_subscriptions_with_disconnected() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        conn.answer_acked(None);
        conn.message("news", 1, None, b"last words");
        conn.send(|b| encode::put_disconnect(b, "draining"));
        // Closes the connection on return.
    });
    let client = connect(addr);
    let sub = client.subscribe("news").unwrap();
    assert_eq!(&sub.recv_timeout(T).unwrap().payload[..], b"last words");
    match sub.recv_timeout(T) {
        Err(Error::Disconnected { reason }) => assert_eq!(reason, "draining"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(client.is_closed());
    assert!(matches!(
        client.publish("x", b""),
        Err(Error::Disconnected { .. })
    ));
    assert!(matches!(client.flush(), Err(Error::Disconnected { .. })));
    broker.join().unwrap();
}

#[test]
fn error_then_close_fails_waiters_and_subscriptions_with_that_error() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        conn.answer_acked(None);
        conn.read_op(Op::Ping);
        conn.error(ErrorCode::Unavailable, "slow consumer");
    });
    let client = connect(addr);
    let sub = client.subscribe("firehose").unwrap();
    match client.flush() {
        Err(Error::Server { code, reason }) => {
            assert_eq!((code, reason.as_str()), (503, "slow consumer"))
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(server_code(sub.recv_timeout(T)), 503);
    assert!(client.is_closed());
    broker.join().unwrap();
}

#[test]
fn invalid_subjects_are_rejected_locally() {
    let (done_tx, done_rx) = mpsc::channel();
    let (addr, broker) = fake_broker(
        Info {
            max_topic_length: 16,
            ..info()
        },
        move |mut conn| {
            conn.accept_connect();
            done_tx.send(conn.serve()).unwrap();
        },
    );
    let client = connect(addr);
    let invalid = |result: Result<(), Error>| matches!(result, Err(Error::InvalidSubject(_)));
    assert!(invalid(client.publish("a.*", b"")));
    assert!(invalid(client.publish("a.>", b"")));
    assert!(invalid(client.publish("a..b", b"")));
    assert!(invalid(client.publish("", b"")));
    assert!(invalid(client.publish("white space", b"")));
    assert!(invalid(client.publish("seventeen.bytes.x", b"")));
    assert!(invalid(client.publish_with_reply("a", "r.*", b"")));
    assert!(invalid(client.publish_acked("a.*", b"")));
    assert!(invalid(client.subscribe("a.>.b").map(drop)));
    assert!(invalid(client.subscribe("a..b").map(drop)));
    assert!(invalid(client.queue_subscribe("a", "g.h").map(drop)));
    assert!(invalid(client.request("a.*", b"", T).map(drop)));
    client.close().unwrap();
    broker.join().unwrap();
    let frames = done_rx.recv_timeout(T).unwrap();
    let ops: Vec<u8> = frames.iter().map(|f| f.op).collect();
    assert_eq!(
        ops,
        [Op::Ping as u8, Op::Disconnect as u8],
        "nothing but close's frames"
    );
}

#[test]
fn payload_too_large_is_rejected_locally() {
    let (done_tx, done_rx) = mpsc::channel();
    let (addr, broker) = fake_broker(
        Info {
            max_payload: 16,
            ..info()
        },
        move |mut conn| {
            conn.accept_connect();
            done_tx.send(conn.serve()).unwrap();
        },
    );
    let client = connect(addr);
    let too_large = |result: Result<(), Error>| {
        matches!(result, Err(Error::PayloadTooLarge { len: 17, max: 16 }))
    };
    assert!(too_large(client.publish("a", &[0; 17])));
    assert!(too_large(client.publish_with_reply("a", "b", &[0; 17])));
    assert!(too_large(client.publish_acked("a", &[0; 17])));
    assert!(too_large(client.request("a", &[0; 17], T).map(drop)));
    client.publish("a", &[7; 16]).unwrap();
    client.close().unwrap();
    broker.join().unwrap();
    let frames = done_rx.recv_timeout(T).unwrap();
    let ops: Vec<u8> = frames.iter().map(|f| f.op).collect();
    assert_eq!(
        ops,
        [Op::Publish as u8, Op::Ping as u8, Op::Disconnect as u8]
    );
    assert_eq!(frames[0].body, [7; 16]);
}

#[test]
fn close_flushes_and_sends_disconnect() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        assert_eq!(conn.read_op(Op::Publish).body, b"before close");
        conn.read_op(Op::Ping);
        conn.pong();
        let frame = conn.read();
        assert_eq!(frame.raw, bytes_of(|b| encode::put_disconnect(b, "")));
        // The broker closes; nothing follows.
    });
    let client = connect(addr);
    let other = client.clone();
    client.publish("a", b"before close").unwrap();
    let started = Instant::now();
    client.close().unwrap();
    assert!(started.elapsed() < T);
    assert!(other.is_closed());
    assert!(matches!(other.publish("a", b""), Err(Error::Closed)));
    broker.join().unwrap();
}

#[test]
fn close_is_bounded_when_the_broker_keeps_the_connection_open() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        conn.read_op(Op::Ping);
        conn.pong();
        conn.read_op(Op::Disconnect);
        // Does not close: the client gives up waiting and closes.
        assert!(conn.next().is_none());
    });
    let client = Client::connect_with(
        addr,
        Options {
            request_timeout: Duration::from_millis(200),
            ..options()
        },
    )
    .unwrap();
    let started = Instant::now();
    client.close().unwrap();
    assert!(started.elapsed() < T);
    broker.join().unwrap();
}

#[test]
fn dropping_the_last_client_disconnects_gracefully() {
    let (done_tx, done_rx) = mpsc::channel();
    let (addr, broker) = fake_broker(info(), move |mut conn| {
        conn.accept_connect();
        done_tx.send(conn.serve()).unwrap();
    });
    let client = connect(addr);
    client.publish("a", b"buffered").unwrap();
    drop(client);
    broker.join().unwrap();
    let frames = done_rx.recv_timeout(T).unwrap();
    let ops: Vec<u8> = frames.iter().map(|f| f.op).collect();
    assert_eq!(ops, [Op::Publish as u8, Op::Disconnect as u8]);
}

#[test]
fn protocol_violation_closes_the_connection() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        conn.answer_acked(None);
        conn.read_op(Op::Ping);
        // Op 0x42 does not exist.
        conn.stream.write_all(&[0, 0, 0, 4, 0x42, 0, 0, 0]).unwrap();
        assert!(conn.next().is_none(), "the client closes the connection");
    });
    let client = connect(addr);
    let sub = client.subscribe("a").unwrap();
    assert!(matches!(client.flush(), Err(Error::Protocol(_))));
    assert!(matches!(sub.recv_timeout(T), Err(Error::Protocol(_))));
    assert!(client.is_closed());
    broker.join().unwrap();
}

#[test]
fn unsolicited_ok_is_a_protocol_violation() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        conn.answer_acked(None);
        // Nothing is pending: an OK answers nothing.
        conn.ok();
        assert!(conn.next().is_none(), "the client closes the connection");
    });
    let client = connect(addr);
    let sub = client.subscribe("a").unwrap();
    assert!(matches!(sub.recv_timeout(T), Err(Error::Protocol(_))));
    assert!(client.is_closed());
    broker.join().unwrap();
}

#[test]
fn oversized_frame_from_the_broker_is_a_protocol_violation() {
    let (addr, broker) = fake_broker(
        Info {
            max_payload: 100,
            ..info()
        },
        |mut conn| {
            conn.accept_connect();
            conn.answer_acked(None);
            // Only the header of a 1 MiB MESSAGE: refused before its body.
            conn.stream
                .write_all(&[0, 0x10, 0, 0, 0x10, 0, 1, 0])
                .unwrap();
            assert!(conn.next().is_none(), "the client closes the connection");
        },
    );
    let client = connect(addr);
    let sub = client.subscribe("a").unwrap();
    assert!(matches!(sub.recv_timeout(T), Err(Error::Protocol(_))));
    broker.join().unwrap();
}

#[test]
fn large_messages_grow_the_read_buffer() {
    let payload: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let (addr, broker) = fake_broker(info(), move |mut conn| {
        conn.accept_connect();
        conn.answer_acked(None);
        conn.message("big", 1, Some("r"), &sent);
        conn.message("small", 1, None, b"after");
        conn.serve();
    });
    let client = connect(addr);
    let sub = client.subscribe(">").unwrap();
    let big = sub.recv_timeout(T).unwrap();
    assert_eq!(big.payload.len(), payload.len());
    assert!(big.payload[..] == payload[..]);
    assert_eq!(&sub.recv_timeout(T).unwrap().payload[..], b"after");
    // Full-size publish goes out whole too.
    client.publish("big", &payload).unwrap();
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn unsubscribe_and_unsubscribe_after() {
    let (addr, broker) = fake_broker(info(), |mut conn| {
        conn.accept_connect();
        conn.answer_acked(None); // sid 1
        conn.answer_acked(None); // sid 2
        let unsub = conn.answer_acked(None);
        assert_eq!(
            unsub.raw,
            bytes_of(|b| encode::put_unsubscribe(b, 1, 0, true))
        );
        let unsub = conn.answer_acked(None);
        assert_eq!(
            unsub.raw,
            bytes_of(|b| encode::put_unsubscribe(b, 2, 2, true))
        );
        conn.message("b", 2, None, b"1");
        conn.message("b", 2, None, b"2");
        // Past the limit: a broker would not send it; the client drops it.
        conn.message("b", 2, None, b"3");
        conn.serve();
    });
    let client = connect(addr);
    let a = client.subscribe("a").unwrap();
    let b = client.subscribe("b").unwrap();
    a.unsubscribe().unwrap();
    b.unsubscribe_after(2).unwrap();
    assert_eq!(&b.recv_timeout(T).unwrap().payload[..], b"1");
    assert_eq!(&b.recv_timeout(T).unwrap().payload[..], b"2");
    assert!(matches!(b.recv_timeout(T), Err(Error::Closed)));
    // Already removed by the count: nothing to send.
    b.unsubscribe().unwrap();
    client.close().unwrap();
    broker.join().unwrap();
}

#[test]
fn timed_out_ack_keeps_later_answers_in_order() {
    let (got_tx, got_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (addr, broker) = fake_broker(info(), move |mut conn| {
        conn.accept_connect();
        conn.read_op(Op::Publish);
        conn.read_op(Op::Ping);
        got_tx.send(()).unwrap();
        go_rx.recv_timeout(T).unwrap();
        conn.error(ErrorCode::Forbidden, "late");
        conn.pong();
        conn.answer_acked(None);
        conn.serve();
    });
    let client = Client::connect_with(
        addr,
        Options {
            request_timeout: Duration::from_millis(100),
            ..options()
        },
    )
    .unwrap();
    assert!(matches!(
        client.publish_acked("a", b""),
        Err(Error::Timeout)
    ));
    got_rx.recv_timeout(T).unwrap();
    go_tx.send(()).unwrap();
    // The late ERROR went to the timed-out request, not to this one (a
    // loaded machine may time this one out too, but never give it 403).
    let result = client.publish_acked("b", b"");
    assert!(
        result.is_ok() || matches!(result, Err(Error::Timeout)),
        "{result:?}"
    );
    client.close().ok();
    broker.join().unwrap();
}

#[test]
fn many_publishes_are_batched_and_all_arrive() {
    const N: usize = 20_000;
    let (done_tx, done_rx) = mpsc::channel();
    let (addr, broker) = fake_broker(info(), move |mut conn| {
        conn.accept_connect();
        done_tx.send(conn.serve()).unwrap();
    });
    let client = connect(addr);
    let payload = [0xabu8; 512];
    for i in 0..N {
        client
            .publish(&format!("load.{}", i % 10), &payload)
            .unwrap();
    }
    client.flush().unwrap();
    client.close().unwrap();
    broker.join().unwrap();
    let frames = done_rx.recv_timeout(T).unwrap();
    let publishes: Vec<&Frame> = frames.iter().filter(|f| f.is(Op::Publish)).collect();
    assert_eq!(publishes.len(), N);
    for (i, frame) in publishes.iter().enumerate() {
        assert_eq!(frame.topic, format!("load.{}", i % 10).as_bytes());
    }
}

#[test]
fn concurrent_acked_requests_from_many_threads() {
    let (addr, broker) = serving_broker(info());
    let client = connect(addr);
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..100 {
                    client.publish(&format!("t{t}.plain"), b"x").unwrap();
                    client
                        .publish_acked(&format!("t{t}.acked.{i}"), b"y")
                        .unwrap();
                    if i % 10 == 0 {
                        client.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    client.close().unwrap();
    broker.join().unwrap();
}
