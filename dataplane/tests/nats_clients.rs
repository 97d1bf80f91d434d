//! The NATS listener against a real NATS client (the `async-nats` crate) and
//! against raw NATS text, on every backend the conformance suite runs on:
//! pub/sub, wildcards, queue groups, request/reply, no-responders, headers,
//! no_echo, auto-unsubscribe, large payloads, nats-server's errors, and NATS
//! and BlipMQ clients on one subject space.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{as_client_of, nats_config, tcp_connect, users_toml, Backend, Broker, Raw};
use futures_util::StreamExt;

/// Bounds every wait of a test.
const WITHIN: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `test` on a broker with a NATS listener on `backend`, bounded in
/// time, where its clients live (a user-space broker's lab: the client
/// namespace).
fn with_nats<F, Fut>(backend: Backend, workers: usize, test: F)
where
    F: FnOnce(Broker) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Broker>,
{
    let broker = Broker::start_on(backend, workers, &nats_config(backend));
    let addr = broker.nats_addr();
    let mut broker = as_client_of(addr, move || {
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(60), test(broker))
                .await
                .expect("the test finished within 60 s")
        })
    });
    broker.assert_alive();
}

async fn connect(addr: SocketAddr) -> async_nats::Client {
    tokio::time::timeout(WITHIN, async_nats::connect(addr.to_string()))
        .await
        .expect("connected within 10 s")
        .expect("async-nats connects")
}

/// Waits until messages from `publisher` reach the subscriptions
/// `subscriber` made so far. A flush does not prove that: async-nats may
/// write its PING before SUBs still queued. A probe subscription made after
/// them does, once a probe from `publisher` reaches it: a connection's ops
/// are applied in order, and interest reaches each worker in order.
async fn await_subscriptions(subscriber: &async_nats::Client, publisher: &async_nats::Client) {
    let probe = subscriber.new_inbox();
    let mut probes = subscriber.subscribe(probe.clone()).await.unwrap();
    let deadline = Instant::now() + WITHIN;
    loop {
        assert!(
            Instant::now() < deadline,
            "subscriptions not applied within 10 s"
        );
        publisher
            .publish(probe.clone(), "probe".into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), probes.next()).await {
            break;
        }
    }
    probes.unsubscribe().await.unwrap();
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(WITHIN, sub.next())
        .await
        .expect("a message within 10 s")
        .expect("the subscription is open")
}

fn async_nats_publishes_and_subscribes_with_wildcards(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let addr = broker.nats_addr();
        let subscriber = connect(addr).await;
        let publisher = connect(addr).await;
        let mut one_token = subscriber.subscribe("orders.*").await.unwrap();
        let mut tail = subscriber.subscribe("orders.>").await.unwrap();
        let mut exact = subscriber.subscribe("orders.eu.new").await.unwrap();
        await_subscriptions(&subscriber, &publisher).await;

        publisher.publish("orders.us", "a".into()).await.unwrap();
        publisher
            .publish("orders.eu.new", "b".into())
            .await
            .unwrap();
        publisher.publish("other", "c".into()).await.unwrap();
        publisher.flush().await.unwrap();

        let got = next(&mut one_token).await;
        assert_eq!(
            (got.subject.as_str(), &got.payload[..]),
            ("orders.us", &b"a"[..])
        );
        let got = next(&mut tail).await;
        assert_eq!(got.subject.as_str(), "orders.us");
        let got = next(&mut tail).await;
        assert_eq!(
            (got.subject.as_str(), &got.payload[..]),
            ("orders.eu.new", &b"b"[..])
        );
        let got = next(&mut exact).await;
        assert_eq!(&got.payload[..], b"b");
        broker
    });
}

fn async_nats_messages_arrive_in_order_across_workers(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let addr = broker.nats_addr();
        let subscriber = connect(addr).await;
        let mut sub = subscriber.subscribe("seq").await.unwrap();
        subscriber.flush().await.unwrap();
        // Several publishers, some on the other worker; each one's order holds.
        let mut publishers = Vec::new();
        for _ in 0..4 {
            let publisher = connect(addr).await;
            await_subscriptions(&subscriber, &publisher).await;
            publishers.push(publisher);
        }
        for n in 0..500u32 {
            for (p, publisher) in publishers.iter().enumerate() {
                let payload = format!("{p}:{n}");
                publisher.publish("seq", payload.into()).await.unwrap();
            }
        }
        for publisher in &publishers {
            publisher.flush().await.unwrap();
        }
        let mut next_of = [0u32; 4];
        for _ in 0..2000 {
            let got = next(&mut sub).await;
            let text = std::str::from_utf8(&got.payload).unwrap();
            let (p, n) = text.split_once(':').unwrap();
            let p: usize = p.parse().unwrap();
            assert_eq!(
                n.parse::<u32>().unwrap(),
                next_of[p],
                "publisher {p} out of order"
            );
            next_of[p] += 1;
        }
        broker
    });
}

fn async_nats_queue_group_delivers_each_message_once(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let addr = broker.nats_addr();
        let publisher = connect(addr).await;
        let mut members = Vec::new();
        for _ in 0..3 {
            let client = connect(addr).await;
            let sub = client
                .queue_subscribe("jobs", "workers".into())
                .await
                .unwrap();
            await_subscriptions(&client, &publisher).await;
            members.push((client, sub));
        }
        for n in 0..300u32 {
            publisher
                .publish("jobs", n.to_string().into())
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        let mut seen = vec![0u32; 300];
        let mut total = 0;
        let deadline = Instant::now() + WITHIN;
        while total < 300 && Instant::now() < deadline {
            for (_, sub) in &mut members {
                if let Ok(Some(got)) =
                    tokio::time::timeout(Duration::from_millis(20), sub.next()).await
                {
                    let n: usize = std::str::from_utf8(&got.payload).unwrap().parse().unwrap();
                    seen[n] += 1;
                    total += 1;
                }
            }
        }
        assert!(
            seen.iter().all(|&count| count == 1),
            "not exactly once: {seen:?}"
        );
        broker
    });
}

fn async_nats_request_reply(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let addr = broker.nats_addr();
        let responder = connect(addr).await;
        let mut requests = responder.subscribe("svc.upper").await.unwrap();
        let requester = connect(addr).await;
        await_subscriptions(&responder, &requester).await;
        let serve = tokio::spawn(async move {
            for _ in 0..3 {
                let request = next(&mut requests).await;
                let reply = request.reply.expect("a reply subject");
                let upper = request.payload.to_ascii_uppercase();
                responder.publish(reply, upper.into()).await.unwrap();
            }
            responder.flush().await.unwrap();
        });
        for word in ["one", "two", "three"] {
            let response =
                tokio::time::timeout(WITHIN, requester.request("svc.upper", word.into()))
                    .await
                    .expect("a response within 10 s")
                    .expect("the request succeeds");
            assert_eq!(response.payload, Bytes::from(word.to_uppercase()));
        }
        serve.await.unwrap();
        broker
    });
}

fn async_nats_unsubscribe_after_ends_the_subscription(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let addr = broker.nats_addr();
        let client = connect(addr).await;
        let mut sub = client.subscribe("limited").await.unwrap();
        sub.unsubscribe_after(3).await.unwrap();
        await_subscriptions(&client, &client).await;
        for n in 0..10u32 {
            client
                .publish("limited", n.to_string().into())
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
        for n in 0..3u32 {
            assert_eq!(next(&mut sub).await.payload, Bytes::from(n.to_string()));
        }
        let end = tokio::time::timeout(WITHIN, sub.next())
            .await
            .expect("the end within 10 s");
        assert!(end.is_none(), "a message after max_msgs: {end:?}");
        broker
    });
}

fn async_nats_large_payload_up_to_max_payload(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let addr = broker.nats_addr();
        let client = connect(addr).await;
        let info = client.server_info();
        assert_eq!(
            (info.host.as_str(), info.port),
            (addr.ip().to_string().as_str(), addr.port())
        );
        let max = info.max_payload;
        assert_eq!(max, 1 << 20);
        let mut sub = client.subscribe("big").await.unwrap();
        await_subscriptions(&client, &client).await;
        let payload: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
        client.publish("big", payload.clone().into()).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(next(&mut sub).await.payload, Bytes::from(payload));
        // The client refuses more than the server's max_payload itself.
        let over = client.publish("big", vec![0; max + 1].into()).await;
        assert!(over.is_err(), "published past max_payload");
        broker
    });
}

fn nats_and_blipmq_clients_share_one_subject_space(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let nats = connect(broker.nats_addr()).await;
        let mut nats_sub = nats.subscribe("mixed.*").await.unwrap();
        await_subscriptions(&nats, &nats).await;
        let addr = broker.addr();
        // BlipMQ's binary protocol on the other listener, off the runtime.
        let (blipmq_got, blipmq) = tokio::task::spawn_blocking(move || {
            let mut blipmq = Raw::handshake(addr);
            blipmq.subscribe("mixed.>", 9);
            blipmq.publish("mixed.from_blipmq", b"binary");
            (blipmq.expect_msg(), blipmq)
        })
        .await
        .unwrap();
        // Its own message (it subscribed to its subject too).
        assert_eq!(blipmq_got.payload, b"binary");
        let got = next(&mut nats_sub).await;
        assert_eq!(
            (got.subject.as_str(), &got.payload[..]),
            ("mixed.from_blipmq", &b"binary"[..])
        );

        nats.publish("mixed.from_nats", "text".into())
            .await
            .unwrap();
        nats.flush().await.unwrap();
        let blipmq_got = tokio::task::spawn_blocking(move || {
            let mut blipmq = blipmq;
            blipmq.expect_msg()
        })
        .await
        .unwrap();
        assert_eq!(blipmq_got.subject, "mixed.from_nats");
        assert_eq!(blipmq_got.sid, 9);
        assert_eq!(blipmq_got.payload, b"text");
        assert_eq!(next(&mut nats_sub).await.payload, Bytes::from("text"));
        broker
    });
}

/// A NATS connection speaking raw text, with bounded reads.
struct Text {
    stream: TcpStream,
    got: Vec<u8>,
}

impl Text {
    fn connect(addr: SocketAddr) -> Text {
        let stream = tcp_connect(addr, WITHIN).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut text = Text {
            stream,
            got: Vec::new(),
        };
        text.expect_prefix("INFO {");
        text.got.clear();
        text
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads until `got` holds `wanted` (within 10 s); returns and forgets
    /// everything up to its end.
    fn expect(&mut self, wanted: &str) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            let text = String::from_utf8_lossy(&self.got).into_owned();
            if let Some(at) = text.find(wanted) {
                self.got.drain(..at + wanted.len());
                return text[..at + wanted.len()].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {wanted:?} within 10 s; got {text:?}"
            );
            let mut buf = [0; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("closed before {wanted:?}; got {text:?}"),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn expect_prefix(&mut self, prefix: &str) {
        let got = self.expect("\r\n");
        assert!(got.starts_with(prefix), "{got:?}");
    }

    /// Reads until the broker closes (within 10 s); returns what came.
    fn expect_closed(&mut self) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            assert!(Instant::now() < deadline, "not closed within 10 s");
            let mut buf = [0; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return String::from_utf8_lossy(&self.got).into_owned(),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return String::from_utf8_lossy(&self.got).into_owned(),
            }
        }
    }
}

fn raw_text_case_tabs_splits_and_verbose_answers(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, &nats_config(backend));
    let mut c = Text::connect(broker.nats_addr());
    // Lower-case ops, tabs between arguments, verbose +OK for each op.
    c.send(b"connect {\"verbose\":true}\r\nsub\ttabs.*\t\t1\r\n");
    c.expect("+OK\r\n+OK\r\n");
    // One PUB split at every byte; its own subscription gets it.
    for byte in b"pUb tabs.x  reply.to 5\r\nhello\r\n" {
        c.send(&[*byte]);
    }
    let got = c.expect("+OK\r\n");
    assert_eq!(got, "MSG tabs.x 1 reply.to 5\r\nhello\r\n+OK\r\n");
    c.send(b"PING\r\n");
    c.expect("PONG\r\n");
    // UNSUB of an unknown sid is ignored (still +OK when verbose).
    c.send(b"UNSUB 77\r\nUNSUB 1\r\nPUB tabs.y 1\r\nx\r\nPING\r\n");
    let got = c.expect("PONG\r\n");
    assert_eq!(
        got, "+OK\r\n+OK\r\n+OK\r\nPONG\r\n",
        "a message after UNSUB"
    );
}

fn raw_text_errors_are_nats_servers(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, &nats_config(backend));
    // Errors that keep the connection open.
    let mut c = Text::connect(broker.nats_addr());
    c.send(b"CONNECT {\"verbose\":false}\r\nSUB a..b 1\r\nPUB a.* 1\r\nx\r\nPING\r\n");
    let got = c.expect("PONG\r\n");
    assert_eq!(
        got,
        "-ERR 'Invalid Subject'\r\n-ERR 'Invalid Publish Subject'\r\nPONG\r\n"
    );

    // Errors that close it.
    let mut c = Text::connect(broker.nats_addr());
    c.send(b"CONNECT {\"verbose\":false}\r\nFOO bar\r\n");
    assert_eq!(c.expect_closed(), "-ERR 'Unknown Protocol Operation'\r\n");
    let mut c = Text::connect(broker.nats_addr());
    c.send(b"CONNECT {\"verbose\":false}\r\nPUB big 2000000\r\n");
    assert_eq!(c.expect_closed(), "-ERR 'Maximum Payload Violation'\r\n");
    let mut c = Text::connect(broker.nats_addr());
    c.send(b"PUB early 1\r\nx\r\n");
    assert_eq!(c.expect_closed(), "-ERR 'Authorization Violation'\r\n");
    // HPUB from a client that did not ask for headers: closed, silently.
    let mut c = Text::connect(broker.nats_addr());
    c.send(b"CONNECT {\"verbose\":false}\r\nHPUB h 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    assert_eq!(c.expect_closed(), "");
}

fn nats_clients_need_the_token_when_one_is_set(backend: Backend, workers: usize) {
    let config = format!("{}[auth]\ntoken = \"s3cret\"\n", nats_config(backend));
    let broker = Broker::start_on(backend, workers, &config);
    let mut c = Text::connect(broker.nats_addr());
    c.send(b"CONNECT {\"auth_token\":\"wrong\"}\r\n");
    assert_eq!(c.expect_closed(), "-ERR 'Authorization Violation'\r\n");
    let url = format!("nats://{}", broker.nats_addr());
    as_client_of(broker.nats_addr(), move || {
        runtime().block_on(async {
            let client = tokio::time::timeout(
                WITHIN,
                async_nats::ConnectOptions::with_token("s3cret".into()).connect(url),
            )
            .await
            .expect("connected within 10 s")
            .expect("the token is accepted");
            assert!(client.server_info().auth_required);
            client.flush().await.unwrap();
        })
    });
}

/// Users over NATS: nats-server's texts for bad credentials and refused
/// publishes and subscriptions; a refusal leaves the connection open.
fn nats_users_and_permissions_as_nats_server(backend: Backend, workers: usize) {
    let config = format!("{}{}", nats_config(backend), users_toml());
    let broker = Broker::start_on(backend, workers, &config);
    for connect in [
        &b"CONNECT {\"user\":\"alice\",\"pass\":\"wrong\"}\r\n"[..],
        b"CONNECT {\"auth_token\":\"a-pass\"}\r\n",
        b"CONNECT {}\r\n",
    ] {
        let mut c = Text::connect(broker.nats_addr());
        c.send(connect);
        assert_eq!(c.expect_closed(), "-ERR 'Authorization Violation'\r\n");
    }
    let mut alice = Text::connect(broker.nats_addr());
    alice.send(b"CONNECT {\"verbose\":false,\"user\":\"alice\",\"pass\":\"a-pass\"}\r\n");
    alice.send(b"PUB orders.secret 1\r\nx\r\nPING\r\n");
    alice.expect("-ERR 'Permissions Violation for Publish to \"orders.secret\"'\r\nPONG\r\n");
    alice.send(b"SUB admin.> 1\r\nSUB updates.* q 2\r\nSUB other q 3\r\nPING\r\n");
    alice.expect(concat!(
        "-ERR 'Permissions Violation for Subscription to \"admin.>\"'\r\n",
        "-ERR 'Permissions Violation for Subscription to \"other\" using queue \"q\"'\r\n",
        "PONG\r\n"
    ));
    // Still open, and the allowed subscription works.
    alice.send(b"PUB orders.ok 1\r\nx\r\n");
    let mut svc = Text::connect(broker.nats_addr());
    svc.send(b"CONNECT {\"verbose\":false,\"auth_token\":\"svc-token\"}\r\nPUB updates.x 2\r\nhi\r\nPING\r\n");
    svc.expect("-ERR 'Permissions Violation for Publish to \"updates.x\"'\r\nPONG\r\n");
    let mut open = Text::connect(broker.nats_addr());
    open.send(b"CONNECT {\"verbose\":false,\"user\":\"hashed\",\"pass\":\"h-pass\"}\r\n");
    open.send(b"PUB updates.x 2\r\nhi\r\nPING\r\n");
    open.expect("PONG\r\n");
    alice.send(b"PING\r\n");
    assert_eq!(
        alice.expect("PONG\r\n"),
        "MSG updates.x 2 2\r\nhi\r\nPONG\r\n"
    );

    // async-nats with a user and password; a violation arrives as a server
    // error event, and the connection goes on.
    let url = format!("nats://{}", broker.nats_addr());
    as_client_of(broker.nats_addr(), move || {
        runtime().block_on(async {
            let (errors, mut error_events) = tokio::sync::mpsc::unbounded_channel();
            let client = tokio::time::timeout(
                WITHIN,
                async_nats::ConnectOptions::with_user_and_password("alice".into(), "a-pass".into())
                    .event_callback(move |event| {
                        let errors = errors.clone();
                        async move {
                            if let async_nats::Event::ServerError(error) = event {
                                let _ = errors.send(error.to_string());
                            }
                        }
                    })
                    .connect(url.clone()),
            )
            .await
            .expect("connected within 10 s")
            .expect("alice's password is accepted");
            assert!(client.server_info().auth_required);
            let mut updates = client.subscribe("updates.*").await.unwrap();
            client.publish("orders.secret", "no".into()).await.unwrap();
            let error = tokio::time::timeout(WITHIN, error_events.recv())
                .await
                .expect("the violation within 10 s")
                .unwrap();
            assert!(
                error.contains(r#"Permissions Violation for Publish to "orders.secret""#),
                "{error}"
            );
            // Still connected: a message from another user arrives.
            let open = tokio::time::timeout(
                WITHIN,
                async_nats::ConnectOptions::with_user_and_password(
                    "hashed".into(),
                    "h-pass".into(),
                )
                .connect(url.clone()),
            )
            .await
            .expect("connected within 10 s")
            .expect("the bcrypt password is accepted");
            await_subscriptions(&client, &open).await;
            open.publish("updates.a", "to alice".into()).await.unwrap();
            assert_eq!(next(&mut updates).await.payload, Bytes::from("to alice"));

            let wrong =
                async_nats::ConnectOptions::with_user_and_password("alice".into(), "wrong".into())
                    .connect(url);
            let refused = tokio::time::timeout(WITHIN, wrong)
                .await
                .expect("refused within 10 s")
                .expect_err("a wrong password does not connect");
            assert_eq!(
                refused.kind(),
                async_nats::ConnectErrorKind::AuthorizationViolation
            );
        })
    });
}

fn async_nats_headers_reach_nats_subscribers_and_binary_ones_get_the_payload(
    backend: Backend,
    workers: usize,
) {
    with_nats(backend, workers, |broker| async move {
        let addr = broker.nats_addr();
        let subscriber = connect(addr).await;
        let mut sub = subscriber.subscribe("hdr.x").await.unwrap();
        let publisher = connect(addr).await;
        await_subscriptions(&subscriber, &publisher).await;
        let binary_addr = broker.addr();
        let mut binary = tokio::task::spawn_blocking(move || {
            let mut binary = Raw::handshake(binary_addr);
            binary.subscribe("hdr.x", 4);
            binary
        })
        .await
        .unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Trace-Id", "abc-123");
        headers.append("Multi", "one");
        headers.append("Multi", "two");
        publisher
            .publish_with_headers("hdr.x", headers, "body".into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let got = next(&mut sub).await;
        assert_eq!(&got.payload[..], b"body");
        let got_headers = got.headers.expect("the headers passed through");
        assert_eq!(
            got_headers.get("Trace-Id").map(|v| v.as_str()),
            Some("abc-123")
        );
        let multi: Vec<_> = got_headers
            .get_all("Multi")
            .map(|v| v.as_str().to_string())
            .collect();
        assert_eq!(multi, ["one", "two"]);
        let binary_got = tokio::task::spawn_blocking(move || binary.expect_msg())
            .await
            .unwrap();
        assert_eq!(
            binary_got.payload, b"body",
            "the header block is the NATS clients' own"
        );
        broker
    });
}

fn async_nats_request_to_nobody_fails_at_once_with_no_responders(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let client = connect(broker.nats_addr()).await;
        let started = Instant::now();
        let error = tokio::time::timeout(WITHIN, client.request("nobody.home", "?".into()))
            .await
            .expect("an answer within 10 s")
            .expect_err("nobody answers");
        assert_eq!(
            error.kind(),
            async_nats::RequestErrorKind::NoResponders,
            "{error}"
        );
        // Not the client's request timeout (10 s): the 503 status came.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        broker
    });
}

fn async_nats_no_echo_keeps_a_clients_own_messages_from_it(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let addr = broker.nats_addr();
        let quiet = tokio::time::timeout(
            WITHIN,
            async_nats::ConnectOptions::new()
                .no_echo()
                .connect(addr.to_string()),
        )
        .await
        .expect("connected within 10 s")
        .expect("connects");
        let mut own = quiet.subscribe("echo.x").await.unwrap();
        let other = connect(addr).await;
        await_subscriptions(&quiet, &other).await;
        quiet.publish("echo.x", "mine".into()).await.unwrap();
        quiet.flush().await.unwrap();
        other.publish("echo.x", "theirs".into()).await.unwrap();
        other.flush().await.unwrap();
        // Its own message never came: the first one is the other client's.
        assert_eq!(next(&mut own).await.payload, Bytes::from("theirs"));
        broker
    });
}

fn queue_groups_and_requests_span_both_protocols(backend: Backend, workers: usize) {
    with_nats(backend, workers, |broker| async move {
        let nats = connect(broker.nats_addr()).await;
        let mut nats_member = nats.queue_subscribe("work", "g".into()).await.unwrap();
        await_subscriptions(&nats, &nats).await;
        let addr = broker.addr();
        // A BlipMQ member of the same group, and a BlipMQ responder.
        let (binary_member, mut responder) = tokio::task::spawn_blocking(move || {
            let mut member = Raw::handshake(addr);
            member.subscribe_queue("work", 1, "g");
            let mut responder = Raw::handshake(addr);
            responder.subscribe("svc.binary", 2);
            (member, responder)
        })
        .await
        .unwrap();
        for n in 0..200u32 {
            nats.publish("work", n.to_string().into()).await.unwrap();
        }
        nats.flush().await.unwrap();
        // Each side reads until a quiet spell; together they got each
        // message once.
        let binary_got = tokio::task::spawn_blocking(move || {
            let mut member = binary_member;
            let mut got = Vec::new();
            while let common::Next::Frame(frame) = member.next_frame(Duration::from_millis(500)) {
                let msg = common::as_msg(&frame).expect("a message");
                got.push(String::from_utf8(msg.payload).unwrap());
            }
            got
        });
        let mut all = Vec::new();
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(500), nats_member.next()).await
        {
            all.push(String::from_utf8(msg.payload.to_vec()).unwrap());
        }
        let nats_count = all.len();
        let binary = binary_got.await.unwrap();
        let binary_count = binary.len();
        all.extend(binary);
        all.sort_by_key(|n| n.parse::<u32>().unwrap());
        let expected: Vec<String> = (0..200u32).map(|n| n.to_string()).collect();
        assert_eq!(all, expected, "not each message exactly once");
        assert!(
            nats_count > 0 && binary_count > 0,
            "{nats_count} / {binary_count}"
        );

        // A NATS request answered by a BlipMQ-protocol responder.
        let serve = tokio::task::spawn_blocking(move || {
            let request = responder.expect_msg();
            let reply = request.reply.expect("a reply subject");
            responder.publish(&reply, &request.payload.to_ascii_uppercase());
            responder.ping_pong();
        });
        let response = tokio::time::timeout(WITHIN, nats.request("svc.binary", "hello".into()))
            .await
            .expect("an answer within 10 s")
            .expect("the request succeeds");
        assert_eq!(response.payload, Bytes::from("HELLO"));
        serve.await.unwrap();
        broker
    });
}

/// async-nats reconnects to a broker restarted on the same address, and
/// its subscriptions are made again: messages flow as before.
#[test]
fn async_nats_reconnects_after_a_broker_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let config = format!("[nats]\nlisten = \"127.0.0.1:{port}\"\n");
    let broker = Broker::start(2, &config);
    let addr = broker.nats_addr();
    let rt = runtime();
    let (client, mut sub) = rt.block_on(async {
        let client = connect(addr).await;
        let mut sub = client.subscribe("restart.x").await.unwrap();
        await_subscriptions(&client, &client).await;
        client.publish("restart.x", "before".into()).await.unwrap();
        assert_eq!(next(&mut sub).await.payload, Bytes::from("before"));
        (client, sub)
    });
    drop(broker); // SIGKILL: the client sees its connection go.
    let mut broker = Broker::start(2, &config);
    assert_eq!(broker.nats_addr(), addr);
    rt.block_on(async {
        // Until the client is back and has subscribed again, messages go
        // nowhere: publish until one arrives.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "no message 30 s after the restart"
            );
            if client.publish("restart.x", "after".into()).await.is_ok() {
                let _ = client.flush().await;
            }
            if let Ok(Some(msg)) =
                tokio::time::timeout(Duration::from_millis(200), sub.next()).await
            {
                assert_eq!(msg.payload, Bytes::from("after"));
                break;
            }
        }
    });
    broker.assert_alive();
}

for_backends! {
    workers: [
        queue_groups_and_requests_span_both_protocols,
        async_nats_publishes_and_subscribes_with_wildcards,
        async_nats_messages_arrive_in_order_across_workers,
        async_nats_queue_group_delivers_each_message_once,
        async_nats_request_reply,
        async_nats_unsubscribe_after_ends_the_subscription,
        async_nats_large_payload_up_to_max_payload,
        nats_and_blipmq_clients_share_one_subject_space,
        async_nats_headers_reach_nats_subscribers_and_binary_ones_get_the_payload,
        async_nats_request_to_nobody_fails_at_once_with_no_responders,
        async_nats_no_echo_keeps_a_clients_own_messages_from_it,
        raw_text_case_tabs_splits_and_verbose_answers,
        raw_text_errors_are_nats_servers,
        nats_clients_need_the_token_when_one_is_set,
        nats_users_and_permissions_as_nats_server,
    ],
    two_workers: [],
}
