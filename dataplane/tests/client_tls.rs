//! The Rust client (`blipmq-client`) over TLS against the real blipmqd with
//! `[tls]`: pub/sub/request through TLS, a broker whose CA the client does
//! not trust, mutual TLS with and without a client certificate, and a
//! plaintext client against a TLS broker. The certificates are made here:
//! a CA, a server certificate for 127.0.0.1 and localhost, a client
//! certificate, and a second CA that signed nothing the broker shows.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blipmq_client::{Client, Error, Options, TlsOptions};
use common::Broker;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// Bounds every wait of a test.
const WITHIN: Duration = Duration::from_secs(5);

/// Payloads up to 256 KiB: a message spans many TLS records.
const LIMITS: &str = "[limits]\nmax_payload = 262144\n";

/// A CA with its key, to sign leaf certificates.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `names`, used for `usage`: (certificate PEM, key PEM).
    fn sign(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of one test, in a fresh directory removed at the end.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(test: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("blipmq-client-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new("blipmq test CA");
        let (server_cert, server_key) = ca.sign(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            ca.sign(&["test-client"], ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = Ca::new("a CA nobody uses");
        for (name, text) in [
            ("ca.pem", ca.cert.pem()),
            ("server.pem", server_cert),
            ("server.key", server_key),
            ("client.pem", client_cert),
            ("client.key", client_key),
            ("other-ca.pem", stranger.cert.pem()),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `[tls]` with the server certificate; with `mutual`, clients must
    /// present a certificate of the CA.
    fn broker_config(&self, mutual: bool) -> String {
        let ca_file = if mutual {
            toml_path(&self.path("ca.pem"))
        } else {
            "\"\"".into()
        };
        format!(
            "{LIMITS}\n[tls]\ncert_file = {}\nkey_file = {}\nca_file = {ca_file}\n",
            toml_path(&self.path("server.pem")),
            toml_path(&self.path("server.key")),
        )
    }

    /// Client options trusting `ca` (a file name in the directory).
    fn options(&self, ca: &str, with_cert: bool) -> Options {
        Options {
            connect_timeout: WITHIN,
            request_timeout: WITHIN,
            tls: Some(TlsOptions {
                ca_file: Some(self.path(ca)),
                cert_file: with_cert.then(|| self.path("client.pem")),
                key_file: with_cert.then(|| self.path("client.key")),
                ..TlsOptions::default()
            }),
            ..Options::default()
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path as a TOML string (Debug quoting escapes as TOML wants).
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
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
    let pki = Pki::new("pubsub");
    let mut broker = Broker::start(1, &pki.broker_config(false));
    let client = Client::connect_with(broker.addr(), pki.options("ca.pem", false)).unwrap();
    exchange(&client);

    // A second client on its own TLS connection sees the first's messages.
    let other = Client::connect_with(broker.addr(), pki.options("ca.pem", false)).unwrap();
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
    let pki = Pki::new("duplex");
    let mut broker = Broker::start(1, &pki.broker_config(false));
    let client = Client::connect_with(broker.addr(), pki.options("ca.pem", false)).unwrap();
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
    let pki = Pki::new("name");
    let broker = Broker::start(1, &pki.broker_config(false));
    let options = pki.options("ca.pem", false);
    let named = |name: &str| {
        let mut options = options.clone();
        if let Some(tls) = options.tls.as_mut() {
            tls.server_name = Some(name.into());
        }
        options
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
    let pki = Pki::new("untrusted");
    let mut broker = Broker::start(1, &pki.broker_config(false));
    match Client::connect_with(broker.addr(), pki.options("other-ca.pem", false)) {
        Err(Error::Tls(message)) => {
            assert!(message.contains("UnknownIssuer"), "{message}");
            assert!(
                Error::Tls(message.clone())
                    .to_string()
                    .starts_with("TLS: TLS handshake with the broker failed"),
                "{message}"
            );
        }
        other => panic!("expected Error::Tls, got {other:?}"),
    }
    // A missing CA file is named.
    let mut options = pki.options("ca.pem", false);
    options.tls.as_mut().unwrap().ca_file = Some(pki.path("missing.pem"));
    match Client::connect_with(broker.addr(), options) {
        Err(Error::Tls(message)) => assert!(message.contains("missing.pem"), "{message}"),
        other => panic!("expected Error::Tls for a missing file, got {other:?}"),
    }
    broker.assert_alive();
}

#[test]
fn mutual_tls_needs_a_client_certificate() {
    let pki = Pki::new("mutual");
    let mut broker = Broker::start(1, &pki.broker_config(true));
    // TLS 1.3: the client finishes its handshake before the broker checks
    // the (absent) certificate; the broker's alert comes instead of INFO.
    match Client::connect_with(broker.addr(), pki.options("ca.pem", false)) {
        Err(Error::Tls(message)) => assert!(message.contains("CertificateRequired"), "{message}"),
        other => panic!("expected Error::Tls without a certificate, got {other:?}"),
    }
    let client = Client::connect_with(broker.addr(), pki.options("ca.pem", true)).unwrap();
    exchange(&client);
    client.close().unwrap();
    broker.assert_alive();
}

#[test]
fn plaintext_client_against_a_tls_broker_times_out_waiting_for_info() {
    let pki = Pki::new("plaintext");
    let mut broker = Broker::start(1, &pki.broker_config(false));
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
    let pki = Pki::new("cleartext-broker");
    let mut broker = Broker::start(1, LIMITS);
    match Client::connect_with(broker.addr(), pki.options("ca.pem", false)) {
        Err(Error::Tls(message)) => assert!(message.contains("speak TLS"), "{message}"),
        other => panic!("expected Error::Tls against a plaintext broker, got {other:?}"),
    }
    broker.assert_alive();
}
