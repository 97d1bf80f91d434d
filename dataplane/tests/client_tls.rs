//! The Rust client (`blipmq-client`) over TLS against the real blipmqd with
//! `[tls]`: pub/sub/request through TLS, a broker whose CA the client does
//! not trust, mutual TLS with and without a client certificate, and a
//! plaintext client against a TLS broker, with the certificates of
//! `common::pki` (a CA per test, and another for the untrusted case).

#[macro_use]
mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blipmq_client::{Client, Error, Options, TlsOptions};
use common::pki::Pki;
use common::Broker;

/// Bounds every wait of a test.
const WITHIN: Duration = Duration::from_secs(5);

/// Payloads up to 256 KiB: a message spans many TLS records.
const LIMITS: &str = "[limits]\nmax_payload = 262144\n";

/// A broker with `[tls]` serving `pki`'s server certificate, and `extra`
/// `[tls]` lines.
fn tls_broker(pki: &Pki, extra: &str) -> Broker {
    Broker::start(1, &format!("{LIMITS}\n{}", pki.tls_config(extra)))
}

/// `[tls]` lines that make clients present a certificate of `pki`'s CA.
fn mutual(pki: &Pki) -> String {
    format!("ca_file = {:?}", pki.ca())
}

fn test_pki(name: &str) -> Pki {
    Pki::new(&format!("client-{name}"), IpAddr::from([127, 0, 0, 1]))
}

/// Client options trusting the CA file `ca`, presenting `client`'s
/// certificate if given.
fn options(ca: PathBuf, client: Option<&Pki>) -> Options {
    Options {
        connect_timeout: WITHIN,
        request_timeout: WITHIN,
        tls: Some(TlsOptions {
            ca_file: Some(ca),
            cert_file: client.map(|pki| pki.path("client.pem")),
            key_file: client.map(|pki| pki.path("client-key.pem")),
            ..TlsOptions::default()
        }),
        ..Options::default()
    }
}

/// Publish, subscribe and request/reply through `client`.
fn exchange(client: &Client) {
    let sub = client.subscribe("tls.>").unwrap();
    client.publish("tls.one", b"through TLS").unwrap();
    let msg = sub.recv_timeout(WITHIN).unwrap();
    assert_eq!(msg.subject, "tls.one");
    assert_eq!(&msg.payload[..], b"through TLS");

    // Larger than a TLS record (16 KiB): split across records both ways.
    let big: Vec<u8> = (0..40_000u32).flat_map(|n| n.to_le_bytes()).collect();
    client.publish("tls.big", &big).unwrap();
    assert_eq!(&sub.recv_timeout(WITHIN).unwrap().payload[..], &big[..]);

    let service = client.subscribe("tls.time").unwrap();
    let responder = client.clone();
    let answering = std::thread::spawn(move || {
        let request = service.recv_timeout(WITHIN).unwrap();
        responder
            .publish(request.reply.as_deref().unwrap(), b"noon")
            .unwrap();
    });
    let answer = client.request("tls.time", b"", WITHIN).unwrap();
    assert_eq!(&answer.payload[..], b"noon");
    answering.join().unwrap();
    client.flush().unwrap();
}

#[test]
fn publish_subscribe_and_request_over_tls() {
    let pki = test_pki("pubsub");
    let mut broker = tls_broker(&pki, "");
    let client = Client::connect_with(broker.addr(), options(pki.ca(), None)).unwrap();
    exchange(&client);

    // A second client on its own TLS connection sees the first's messages.
    let other = Client::connect_with(broker.addr(), options(pki.ca(), None)).unwrap();
    let sub = other.subscribe("tls.cross").unwrap();
    client.publish("tls.cross", b"across").unwrap();
    assert_eq!(&sub.recv_timeout(WITHIN).unwrap().payload[..], b"across");
    client.close().unwrap();
    other.close().unwrap();
    broker.assert_alive();
}

#[test]
fn one_connection_reads_and_writes_at_once() {
    // The reader thread decrypts deliveries while the writer thread
    // encrypts publishes, on the one rustls connection they share.
    let pki = test_pki("duplex");
    let mut broker = tls_broker(&pki, "");
    let client = Client::connect_with(broker.addr(), options(pki.ca(), None)).unwrap();
    let sub = client.subscribe("duplex").unwrap();
    const COUNT: u32 = 5000;
    let publisher = client.clone();
    let publishing = std::thread::spawn(move || {
        let mut payload = vec![0u8; 2048];
        for n in 0..COUNT {
            payload[..4].copy_from_slice(&n.to_le_bytes());
            publisher.publish("duplex", &payload).unwrap();
        }
    });
    for n in 0..COUNT {
        let msg = sub.recv_timeout(WITHIN).unwrap();
        assert_eq!(msg.payload.len(), 2048);
        assert_eq!(&msg.payload[..4], &n.to_le_bytes());
    }
    publishing.join().unwrap();
    client.close().unwrap();
    broker.assert_alive();
}

#[test]
fn server_name_override_is_checked_against_the_certificate() {
    let pki = test_pki("name");
    let broker = tls_broker(&pki, "");
    let trusting = options(pki.ca(), None);
    let named = |name: &str| {
        let mut named = trusting.clone();
        if let Some(tls) = named.tls.as_mut() {
            tls.server_name = Some(name.into());
        }
        named
    };
    let client = Client::connect_with(broker.addr(), named("localhost")).unwrap();
    client.close().unwrap();
    match Client::connect_with(broker.addr(), named("elsewhere.example")) {
        Err(Error::Tls(message)) => assert!(
            message.contains("not valid for name") && message.contains("server_name"),
            "{message}"
        ),
        other => panic!("expected Error::Tls for a wrong name, got {other:?}"),
    }
}

#[test]
fn broker_signed_by_an_untrusted_ca_is_refused() {
    let pki = test_pki("untrusted");
    let mut broker = tls_broker(&pki, "");
    let stranger = Pki::other("client-untrusted", IpAddr::from([127, 0, 0, 1]));
    match Client::connect_with(broker.addr(), options(stranger.ca(), None)) {
        // The other CA has the same name as the broker's: BadSignature
        // (UnknownIssuer for a CA of another name).
        Err(Error::Tls(message)) => assert!(
            message.starts_with("TLS handshake with the broker failed: invalid peer certificate"),
            "{message}"
        ),
        other => panic!("expected Error::Tls, got {other:?}"),
    }
    // A missing CA file is named.
    let mut missing = options(pki.ca(), None);
    missing.tls.as_mut().unwrap().ca_file = Some(pki.path("missing.pem"));
    match Client::connect_with(broker.addr(), missing) {
        Err(Error::Tls(message)) => assert!(message.contains("missing.pem"), "{message}"),
        other => panic!("expected Error::Tls for a missing file, got {other:?}"),
    }
    broker.assert_alive();
}

#[test]
fn mutual_tls_needs_a_client_certificate() {
    let pki = test_pki("mutual");
    let mut broker = tls_broker(&pki, &mutual(&pki));
    // TLS 1.3: the client finishes its handshake before the broker checks
    // the (absent) certificate; the broker's alert comes instead of INFO.
    match Client::connect_with(broker.addr(), options(pki.ca(), None)) {
        Err(Error::Tls(message)) => assert!(message.contains("CertificateRequired"), "{message}"),
        other => panic!("expected Error::Tls without a certificate, got {other:?}"),
    }
    let client = Client::connect_with(broker.addr(), options(pki.ca(), Some(&pki))).unwrap();
    exchange(&client);
    client.close().unwrap();
    broker.assert_alive();
}

#[test]
fn plaintext_client_against_a_tls_broker_times_out_waiting_for_info() {
    let pki = test_pki("plaintext");
    let mut broker = tls_broker(&pki, "");
    let options = Options {
        connect_timeout: Duration::from_millis(500),
        ..Options::default()
    };
    let started = Instant::now();
    let result = Client::connect_with(broker.addr(), options);
    // The broker waits for a ClientHello and sends nothing in the clear:
    // the client's connect timeout ends the wait for INFO, unless the
    // broker's handshake timeout closes the connection first.
    assert!(
        matches!(result, Err(Error::Timeout | Error::Closed)),
        "{result:?}"
    );
    assert!(started.elapsed() < WITHIN, "{:?}", started.elapsed());
    broker.assert_alive();
}

#[test]
fn tls_client_against_a_plaintext_broker_says_so() {
    let pki = test_pki("cleartext-broker");
    let mut broker = Broker::start(1, LIMITS);
    match Client::connect_with(broker.addr(), options(pki.ca(), None)) {
        Err(Error::Tls(message)) => assert!(message.contains("speak TLS"), "{message}"),
        other => panic!("expected Error::Tls against a plaintext broker, got {other:?}"),
    }
    broker.assert_alive();
}
