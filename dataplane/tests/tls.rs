//! TLS on both listeners, on every backend, with real certificates (a CA
//! made per test) and real clients: async-nats for NATS, a rustls client
//! carrying binary frames for BlipMQ's protocol. Refusals (wrong CA, no
//! client certificate under mTLS, plaintext where TLS is required) and a
//! certificate reload that keeps live connections; client certificates
//! naming their users (`verify_and_map`).

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blipmq_protocol::encode;
use common::pki::Pki;
use common::{as_client_of, Backend, Broker, Raw};
use futures_util::StreamExt;
use rcgen::{DnType, SanType};

/// Bounds every wait of a test.
const WITHIN: Duration = Duration::from_secs(10);

/// The `[nats]` listener, as nats_clients.rs has it: any free port on the
/// kernel backend, a fixed one of its own address on a user-space one.
fn listeners(backend: Backend) -> &'static str {
    match backend {
        Backend::Kernel => "[nats]\nlisten = \"127.0.0.1:0\"\n",
        _ => "[nats]\nlisten = \"0.0.0.0:4222\"\n",
    }
}

/// A broker with TLS on both listeners (and `extra` in `[tls]`), and the
/// PKI it was given.
fn tls_broker(backend: Backend, workers: usize, name: &str, extra: &str) -> (Broker, Pki) {
    tls_broker_with(backend, workers, name, |pki| pki.tls_config(extra))
}

/// A broker with both listeners and the configuration `config` makes with
/// the PKI it is given.
fn tls_broker_with(
    backend: Backend,
    workers: usize,
    name: &str,
    config: impl FnOnce(&Pki) -> String,
) -> (Broker, Pki) {
    let mut pki = None;
    let broker = Broker::start_for(backend, workers, |ip| {
        let made = Pki::new(name, ip);
        let config = format!("{}{}", listeners(backend), config(&made));
        pki = Some(made);
        config
    });
    (broker, pki.expect("the certificates were made"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `test` where the broker's clients live, bounded in time.
fn as_nats_client<T: Send + 'static>(
    addr: SocketAddr,
    test: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    as_client_of(addr, move || {
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(60), test)
                .await
                .expect("the test finished within 60 s")
        })
    })
}

fn nats_tls(ca: std::path::PathBuf) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca)
        .connection_timeout(WITHIN)
}

async fn connect_nats(
    options: async_nats::ConnectOptions,
    addr: SocketAddr,
) -> Result<async_nats::Client, String> {
    // One attempt: a refused handshake must fail, not retry.
    let options = options.max_reconnects(Some(0));
    match tokio::time::timeout(WITHIN, options.connect(format!("tls://{addr}"))).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(WITHIN, sub.next())
        .await
        .expect("a message within 10 s")
        .expect("the subscription is open")
}

fn nats_and_binary_clients_talk_over_tls(backend: Backend, workers: usize) {
    let (mut broker, pki) =
        tls_broker(backend, workers, &format!("talk-{backend:?}-{workers}"), "");
    let (addr, nats_addr) = (broker.addr(), broker.nats_addr());

    let mut binary = Raw::connect_tls(addr, &pki.ca(), None).expect("a TLS client with the CA");
    assert!(binary.info.tls_required, "INFO says TLS: {:?}", binary.info);
    binary.do_connect(r#"{"protocol":1}"#);
    binary.send_frame(|o| encode::put_subscribe(o, b"tls.to_binary", 1, None, true));
    binary.expect_ok();

    // One runtime for the NATS client; the binary client's calls block
    // only while the NATS side has nothing in flight.
    let ca = pki.ca();
    as_nats_client(nats_addr, async move {
        let nats = connect_nats(nats_tls(ca), nats_addr)
            .await
            .expect("async-nats over TLS");
        nats.publish("tls.to_binary", "from nats".into())
            .await
            .unwrap();
        nats.flush().await.unwrap();
        let (subject, _, _, payload) = binary.expect_message();
        assert_eq!(
            (subject.as_str(), &payload[..]),
            ("tls.to_binary", &b"from nats"[..])
        );

        // The other way: a NATS subscriber, a binary publisher. async-nats
        // may send its flush's PING before the SUB, so publish until the
        // subscription is seen.
        let mut sub = nats.subscribe("tls.to_nats").await.unwrap();
        nats.flush().await.unwrap();
        let deadline = Instant::now() + WITHIN;
        loop {
            assert!(
                Instant::now() < deadline,
                "nothing reached the NATS subscriber"
            );
            binary.send_frame(|o| {
                encode::put_publish(o, b"tls.to_nats", None, b"from binary", false)
            });
            let got = tokio::time::timeout(Duration::from_millis(50), sub.next()).await;
            if let Ok(Some(message)) = got {
                assert_eq!(&message.payload[..], b"from binary");
                break;
            }
        }
    });
    broker.assert_alive();
}

fn clients_with_a_wrong_ca_or_in_plaintext_are_refused() {
    let (mut broker, _pki) = tls_broker(Backend::Kernel, 1, "refused", "");
    let other = Pki::other("refused", "127.0.0.1".parse().unwrap());
    let (addr, nats_addr) = (broker.addr(), broker.nats_addr());

    let error = Raw::connect_tls(addr, &other.ca(), None)
        .err()
        .expect("a client that does not trust the broker's CA is refused");
    assert!(
        error.contains("UnknownIssuer") || error.contains("certificate"),
        "{error}"
    );

    let ca = other.ca();
    let error = as_nats_client(nats_addr, async move {
        connect_nats(nats_tls(ca), nats_addr).await.err()
    })
    .expect("async-nats that does not trust the broker's CA is refused");
    assert!(!error.is_empty());

    // Plaintext NATS where TLS is required: nats-server's error, then close.
    let mut plain = common::tcp_connect(nats_addr, WITHIN).unwrap();
    let info = read_line(&mut plain);
    assert!(
        info.starts_with("INFO ") && info.contains(r#""tls_required":true"#),
        "{info}"
    );
    use std::io::Write;
    plain.write_all(b"CONNECT {}\r\nPING\r\n").unwrap();
    assert_eq!(
        read_line(&mut plain),
        "-ERR 'Secure Connection - TLS Required'\r\n"
    );

    // Plaintext binary: the frame is answered in the clear, then closed.
    let mut raw = Raw::connect_no_info(addr);
    raw.send(&common::connect_bytes(r#"{"protocol":1}"#));
    let reason = raw.expect_error_and_close(400);
    assert!(reason.contains("TLS required"), "{reason}");
    broker.assert_alive();
}

fn read_line(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(WITHIN)).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!(
                "line cut short ({other:?}): {:?}",
                String::from_utf8_lossy(&line)
            ),
        }
    }
    String::from_utf8(line).unwrap()
}

/// A broker on the kernel backend requiring client certificates of its
/// PKI's CA (and `tls_extra` in `[tls]`), with `rest` after `[tls]`.
fn mtls_broker(name: &str, tls_extra: &str, rest: &str) -> (Broker, Pki) {
    tls_broker_with(Backend::Kernel, 1, name, |pki| {
        let tls = pki.tls_config(&format!("ca_file = {:?}\n{tls_extra}", pki.ca()));
        format!("{tls}{rest}")
    })
}

fn mutual_tls_needs_a_client_certificate_signed_by_the_ca() {
    let (mut broker, pki) = mtls_broker("mtls", "", "");
    let (addr, nats_addr) = (broker.addr(), broker.nats_addr());

    let error = Raw::connect_tls(addr, &pki.ca(), None)
        .err()
        .expect("a binary client without a certificate is refused");
    assert!(error.contains("no INFO"), "{error}");
    let mut raw = Raw::connect_tls(
        addr,
        &pki.ca(),
        Some((&pki.path("client.pem"), &pki.path("client-key.pem"))),
    )
    .expect("a binary client with a certificate the CA signed");
    assert!(raw.info.tls_required);
    raw.do_connect(r#"{"protocol":1}"#);

    let (ca, cert, key) = (pki.ca(), pki.path("client.pem"), pki.path("client-key.pem"));
    let (without, with) = as_nats_client(nats_addr, async move {
        let without = connect_nats(nats_tls(ca.clone()), nats_addr).await;
        let with = connect_nats(nats_tls(ca).add_client_certificate(cert, key), nats_addr).await;
        let with = match with {
            Ok(client) => {
                client.publish("m", "x".into()).await.unwrap();
                client.flush().await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        (without.map(|_| ()), with)
    });
    assert!(
        without.is_err(),
        "async-nats without a certificate is refused"
    );
    with.expect("async-nats with a certificate the CA signed");
    broker.assert_alive();
}

fn client_certificates_name_their_users_in_both_protocols() {
    let users = r#"
[[auth.users]]
user = "alice@example.com"
permissions.publish = ["orders.>"]

[[auth.users]]
user = "CN=bob,O=Example"
"#;
    let (mut broker, pki) = mtls_broker("map", "verify_and_map = true", users);
    let email = |address: &str| SanType::Rfc822Name(address.try_into().unwrap());
    let alice = [(DnType::CommonName, "alice")];
    pki.issue_client("alice", &alice, vec![email("alice@example.com")]);
    let bob = [
        (DnType::OrganizationName, "Example"),
        (DnType::CommonName, "bob"),
    ];
    pki.issue_client("bob", &bob, Vec::new());
    let mallory = [(DnType::CommonName, "mallory")];
    pki.issue_client("mallory", &mallory, vec![email("mallory@example.com")]);
    let cert = |name: &str| {
        (
            pki.path(&format!("{name}.pem")),
            pki.path(&format!("{name}-key.pem")),
        )
    };
    let (addr, nats_addr) = (broker.addr(), broker.nats_addr());

    // alice by her email SAN, whatever CONNECT says; her permissions apply.
    let (alice_cert, alice_key) = cert("alice");
    let mut alice = Raw::connect_tls(addr, &pki.ca(), Some((&alice_cert, &alice_key)))
        .expect("alice's certificate is accepted");
    alice.do_connect(r#"{"protocol":1,"user":"CN=bob,O=Example"}"#);
    alice.publish_ack("orders.new", b"1");
    alice.send_frame(|b| encode::put_publish(b, b"admin.x", None, b"2", true));
    let reason = alice.expect_error(403);
    assert!(reason.contains("Permissions Violation"), "{reason}");
    // mallory's certificate is valid but names no user.
    let (mallory_cert, mallory_key) = cert("mallory");
    let mut refused = Raw::connect_tls(addr, &pki.ca(), Some((&mallory_cert, &mallory_key)))
        .expect("the CA signed mallory's certificate");
    refused.send(&common::connect_bytes(r#"{"protocol":1}"#));
    assert_eq!(refused.expect_error_and_close(401), "authorization failed");

    let ca = pki.ca();
    let (bob_cert, bob_key) = cert("bob");
    let (got, refused) = as_nats_client(nats_addr, async move {
        let bob = nats_tls(ca.clone()).add_client_certificate(bob_cert, bob_key);
        let bob = connect_nats(bob, nats_addr)
            .await
            .expect("bob by his subject");
        let mut sub = bob.subscribe("bob.x").await.unwrap();
        bob.publish("bob.x", "hi".into()).await.unwrap();
        bob.flush().await.unwrap();
        let got = next(&mut sub).await.payload;
        let mallory = nats_tls(ca).add_client_certificate(mallory_cert, mallory_key);
        (got, connect_nats(mallory, nats_addr).await.map(|_| ()))
    });
    assert_eq!(&got[..], b"hi");
    let error = refused.expect_err("mallory's certificate names no user");
    assert!(error.contains("authorization violation"), "{error}");
    alice.ping_pong();
    broker.assert_alive();
}

fn nats_handshake_first_works_with_a_client_that_asks_for_it() {
    let (mut broker, pki) = tls_broker(Backend::Kernel, 1, "first", "handshake_first = true");
    let nats_addr = broker.nats_addr();
    let ca = pki.ca();
    as_nats_client(nats_addr, async move {
        let client = connect_nats(nats_tls(ca).tls_first(), nats_addr)
            .await
            .expect("async-nats with tls_first");
        let mut sub = client.subscribe("first").await.unwrap();
        client.publish("first", "hello".into()).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(&next(&mut sub).await.payload[..], b"hello");
    });
    broker.assert_alive();
}

fn certificates_reload_on_sighup_and_live_connections_stay() {
    let (mut broker, pki) = tls_broker(Backend::Kernel, 1, "reload", "");
    let addr = broker.addr();
    let mut live = Raw::connect_tls(addr, &pki.ca(), None).unwrap();
    live.do_connect(r#"{"protocol":1}"#);

    // A new CA's server certificate replaces the files; SIGHUP reloads.
    let next = Pki::new("reload-next", "127.0.0.1".parse().unwrap());
    pki.install_server_of(&next);
    broker.signal(libc::SIGHUP);
    let deadline = Instant::now() + WITHIN;
    while Raw::connect_tls(addr, &next.ca(), None).is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate not served within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        Raw::connect_tls(addr, &pki.ca(), None).is_err(),
        "the old certificate is no longer served"
    );
    // The connection made before the reload goes on.
    live.send_frame(encode::put_ping);
    live.expect_pong();
    broker.assert_alive();
}

fn garbage_and_truncated_records_close_only_their_connection() {
    use std::io::{Read, Write};
    let (mut broker, pki) = tls_broker(Backend::Kernel, 1, "garbage", "");
    let addr = broker.addr();
    let closes_within = |stream: &mut std::net::TcpStream| {
        stream.set_read_timeout(Some(WITHIN)).unwrap();
        let mut sink = [0u8; 4096];
        let deadline = Instant::now() + WITHIN;
        loop {
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => return,
                Ok(_) => assert!(Instant::now() < deadline, "still open after 10 s"),
            }
        }
    };
    // A handshake record holding junk.
    let mut junk = common::tcp_connect(addr, WITHIN).unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    closes_within(&mut junk);
    // A record cut short by the client's close.
    let mut cut = common::tcp_connect(addr, WITHIN).unwrap();
    cut.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 1, 2, 3])
        .unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    closes_within(&mut cut);
    // A record longer than TLS allows.
    let mut huge = common::tcp_connect(addr, WITHIN).unwrap();
    huge.write_all(&[0x16, 0x03, 0x03, 0xff, 0xff]).unwrap();
    closes_within(&mut huge);

    let mut good = Raw::connect_tls(addr, &pki.ca(), None).expect("a good client still gets in");
    good.do_connect(r#"{"protocol":1}"#);
    broker.assert_alive();
}

for_backends! {
    workers: [nats_and_binary_clients_talk_over_tls],
    two_workers: [],
}

#[test]
fn wrong_ca_and_plaintext_are_refused() {
    clients_with_a_wrong_ca_or_in_plaintext_are_refused();
}

#[test]
fn mutual_tls() {
    mutual_tls_needs_a_client_certificate_signed_by_the_ca();
}

#[test]
fn client_certificates_as_users() {
    client_certificates_name_their_users_in_both_protocols();
}

#[test]
fn nats_handshake_first() {
    nats_handshake_first_works_with_a_client_that_asks_for_it();
}

#[test]
fn garbage_and_truncated_records() {
    garbage_and_truncated_records_close_only_their_connection();
}

#[test]
fn certificate_reload() {
    certificates_reload_on_sighup_and_live_connections_stay();
}
