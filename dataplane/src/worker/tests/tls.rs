//! TLS in the core, sans-IO: a rustls client and a core exchange bytes
//! through memory, so the handshake, INFO's place, plaintext refusal and
//! failures are checked without sockets.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::*;
use crate::tls::{TlsServer, TlsSettings};

/// A self-signed certificate for `localhost`, written to a fresh directory.
pub(super) struct Certs {
    pub(super) dir: PathBuf,
    cert: CertificateDer<'static>,
}

impl Certs {
    pub(super) fn new(name: &str) -> Certs {
        let dir =
            std::env::temp_dir().join(format!("blipmq-core-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), key.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.key_pair.serialize_pem()).unwrap();
        Certs {
            dir,
            cert: key.cert.der().clone(),
        }
    }

    pub(super) fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert_file: self.dir.join("cert.pem"),
            key_file: self.dir.join("key.pem"),
            ca_file: None,
            required: true,
            handshake_first: false,
        }
    }

    pub(super) fn client(&self) -> ClientConnection {
        self.client_with(|builder| builder.with_no_client_auth())
    }

    /// A client trusting the server's certificate, its authentication
    /// (none, or a certificate) chosen by `auth`.
    pub(super) fn client_with(
        &self,
        auth: impl FnOnce(
            rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
        ) -> ClientConfig,
    ) -> ClientConnection {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = auth(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots),
        );
        ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_cluster(certs: &Certs, settings: TlsSettings) -> Cluster {
    let _ = certs;
    let tls = Arc::new(TlsServer::load(settings).unwrap());
    Cluster::with_config(
        1,
        1 << 16,
        CoreConfig {
            tls: Some(tls),
            ..core_config()
        },
    )
}

/// Moves bytes both ways until neither side has any; returns the
/// plaintext the client received.
pub(super) fn pump(cluster: &mut Cluster, cid: ConnId, client: &mut ClientConnection) -> Vec<u8> {
    let mut plaintext = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        while client.wants_write() {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            cluster.send(0, cid, &wire);
            moved = true;
        }
        let wire = drain(cluster, cid);
        let mut rest = wire.as_slice();
        while !rest.is_empty() {
            client.read_tls(&mut rest).unwrap();
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut plaintext);
            moved = true;
        }
        if !moved {
            return plaintext;
        }
    }
    panic!("the TLS exchange did not settle");
}

/// What the core has for the transport.
pub(super) fn drain(cluster: &mut Cluster, cid: ConnId) -> Vec<u8> {
    let mut wire = Vec::new();
    loop {
        let run = cluster.cores[0].output(cid).to_vec();
        if run.is_empty() {
            return wire;
        }
        cluster.cores[0].on_output_written(cid, run.len(), cluster.now);
        wire.extend(run);
    }
}

pub(super) fn frames(bytes: &[u8]) -> Vec<ServerFrame<'_>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((raw, len)) = decode_frame(&bytes[at..], u32::MAX).unwrap() {
        frames.push(ServerFrame::parse(raw).unwrap());
        at += len;
    }
    frames
}

#[test]
fn binary_clients_get_info_only_inside_tls_and_talk_through_it() {
    let certs = Certs::new("binary");
    let mut cluster = tls_cluster(&certs, certs.settings());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Binary);
    // Nothing in the clear: the client speaks first.
    assert!(drain(&mut cluster, cid).is_empty());
    let mut client = certs.client();
    let plaintext = pump(&mut cluster, cid, &mut client);
    let got = frames(&plaintext);
    assert!(
        matches!(got.as_slice(), [ServerFrame::Info { .. }]),
        "{got:?}"
    );
    let ServerFrame::Info { json } = &got[0] else {
        unreachable!()
    };
    assert!(String::from_utf8_lossy(json).contains(r#""tls_required":true"#));

    let mut request = Vec::new();
    encode::put_connect(&mut request, br#"{"protocol":1}"#);
    encode::put_subscribe(&mut request, b"x", 1, None, true);
    encode::put_publish(&mut request, b"x", None, b"over tls", false);
    encode::put_ping(&mut request);
    client.writer().write_all(&request).unwrap();
    let plaintext = pump(&mut cluster, cid, &mut client);
    let got = frames(&plaintext);
    assert!(
        matches!(
            got.as_slice(),
            [
                ServerFrame::Ok,
                ServerFrame::Ok,
                ServerFrame::Message {
                    payload: b"over tls",
                    ..
                },
                ServerFrame::Pong
            ]
        ),
        "{got:?}"
    );
    assert_eq!(cluster.cores[0].stats.get(Counter::TlsHandshakes), 1);
}

#[test]
fn plaintext_where_tls_is_required_is_told_so_in_the_clear_and_closed() {
    let certs = Certs::new("plaintext");
    let mut cluster = tls_cluster(&certs, certs.settings());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Binary);
    let mut connect = Vec::new();
    encode::put_connect(&mut connect, br#"{"protocol":1}"#);
    cluster.send(0, cid, &connect);
    let wire = drain(&mut cluster, cid);
    let got = frames(&wire);
    assert!(
        matches!(
            got.as_slice(),
            [ServerFrame::Error {
                code: 400,
                reason: b"TLS required"
            }]
        ),
        "{got:?}"
    );
    assert!(cluster.cores[0].should_close(cid, cluster.now));
    assert_eq!(cluster.cores[0].stats.get(Counter::TlsFailures), 1);
}

#[test]
fn nats_clients_get_info_in_the_clear_then_upgrade() {
    let certs = Certs::new("nats");
    let mut cluster = tls_cluster(&certs, certs.settings());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Nats);
    let info = drain(&mut cluster, cid);
    let text = String::from_utf8(info).unwrap();
    assert!(
        text.starts_with("INFO {") && text.contains(r#""tls_required":true"#),
        "{text}"
    );
    let mut client = certs.client();
    pump(&mut cluster, cid, &mut client);
    client
        .writer()
        .write_all(b"CONNECT {\"verbose\":false}\r\nSUB x 1\r\nPUB x 2\r\nhi\r\nPING\r\n")
        .unwrap();
    let plaintext = pump(&mut cluster, cid, &mut client);
    assert_eq!(plaintext, b"MSG x 1 2\r\nhi\r\nPONG\r\n");
}

#[test]
fn nats_plaintext_is_refused_with_nats_servers_error_unless_allowed() {
    let certs = Certs::new("nats-plain");
    let mut cluster = tls_cluster(&certs, certs.settings());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Nats);
    drain(&mut cluster, cid);
    cluster.send(0, cid, b"CONNECT {}\r\nPING\r\n");
    assert_eq!(
        drain(&mut cluster, cid),
        b"-ERR 'Secure Connection - TLS Required'\r\n"
    );
    assert!(cluster.cores[0].should_close(cid, cluster.now));

    let mut cluster = tls_cluster(
        &certs,
        TlsSettings {
            required: false,
            ..certs.settings()
        },
    );
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Nats);
    let text = String::from_utf8(drain(&mut cluster, cid)).unwrap();
    assert!(
        text.contains(r#""tls_available":true"#) && !text.contains("tls_required"),
        "{text}"
    );
    cluster.send(0, cid, b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    assert_eq!(drain(&mut cluster, cid), b"PONG\r\n");
}

#[test]
fn nats_handshake_first_sends_info_inside_tls() {
    let certs = Certs::new("nats-first");
    let mut cluster = tls_cluster(
        &certs,
        TlsSettings {
            handshake_first: true,
            ..certs.settings()
        },
    );
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Nats);
    assert!(drain(&mut cluster, cid).is_empty());
    let mut client = certs.client();
    let plaintext = String::from_utf8(pump(&mut cluster, cid, &mut client)).unwrap();
    assert!(plaintext.starts_with("INFO {"), "{plaintext}");
}

#[test]
fn garbage_after_the_handshake_closes_with_an_alert() {
    let certs = Certs::new("garbage");
    let mut cluster = tls_cluster(&certs, certs.settings());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Binary);
    let mut client = certs.client();
    pump(&mut cluster, cid, &mut client);
    // A record header that claims application data, then junk.
    cluster.send(0, cid, &[0x17, 0x03, 0x03, 0x00, 0x20]);
    cluster.send(0, cid, &[0xAB; 32]);
    let alert = drain(&mut cluster, cid);
    client.read_tls(&mut alert.as_slice()).unwrap();
    let error = client.process_new_packets().unwrap_err();
    assert!(
        matches!(error, rustls::Error::AlertReceived(_)),
        "the client is told why: {error:?}"
    );
    assert!(cluster.cores[0].should_close(cid, cluster.now));
    assert_eq!(cluster.cores[0].stats.get(Counter::TlsFailures), 1);
}

#[test]
fn large_output_is_sealed_in_bounded_steps_and_arrives_whole() {
    let certs = Certs::new("large");
    let mut cluster = tls_cluster(&certs, certs.settings());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Binary);
    let mut client = certs.client();
    pump(&mut cluster, cid, &mut client);
    let mut request = Vec::new();
    encode::put_connect(&mut request, br#"{"protocol":1}"#);
    encode::put_subscribe(&mut request, b"x", 1, None, false);
    let payload = vec![7u8; 60_000];
    for _ in 0..20 {
        encode::put_publish(&mut request, b"x", None, &payload, false);
    }
    // The client's TLS takes a bounded amount at a time.
    let mut plaintext = Vec::new();
    let mut rest = request.as_slice();
    while !rest.is_empty() {
        let taken = client.writer().write(rest).unwrap();
        rest = &rest[taken..];
        plaintext.extend(pump(&mut cluster, cid, &mut client));
    }
    let messages = frames(&plaintext)
        .into_iter()
        .filter(|f| matches!(f, ServerFrame::Message { payload: p, .. } if p.len() == 60_000))
        .count();
    assert_eq!(messages, 20);
}

#[test]
fn a_clients_close_notify_is_answered_with_ours_and_the_connection_closes() {
    let certs = Certs::new("close-notify");
    let mut cluster = tls_cluster(&certs, certs.settings());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Binary);
    let mut client = certs.client();
    pump(&mut cluster, cid, &mut client);
    client.send_close_notify();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    cluster.send(0, cid, &wire);
    let answer = drain(&mut cluster, cid);
    client.read_tls(&mut answer.as_slice()).unwrap();
    let state = client.process_new_packets().unwrap();
    assert!(
        state.peer_has_closed(),
        "the broker's close_notify came back"
    );
    assert!(cluster.cores[0].should_close(cid, cluster.now));
}

#[test]
fn the_tls_handshake_counts_toward_the_handshake_timeout() {
    let certs = Certs::new("timeout");
    let tls = Arc::new(TlsServer::load(certs.settings()).unwrap());
    let timeout = Duration::from_secs(2);
    let limits = ConnectionLimits {
        handshake_timeout: timeout,
        ..ConnectionLimits::default()
    };
    let config = CoreConfig {
        tls: Some(tls),
        limits,
        ..core_config()
    };
    let mut cluster = Cluster::with_config(1, 1 << 16, config);
    let start = cluster.now;
    // One stops after its ClientHello, in the middle of the TLS handshake.
    let stalled = cluster.cores[0].accept(start, Dialect::Binary);
    let mut hello = Vec::new();
    certs.client().write_tls(&mut hello).unwrap();
    cluster.send(0, stalled, &hello);
    assert!(!drain(&mut cluster, stalled).is_empty(), "no ServerHello");
    // One completes TLS and gets INFO, but sends no CONNECT.
    let silent = cluster.cores[0].accept(start, Dialect::Binary);
    let mut client = certs.client();
    assert!(matches!(
        frames(&pump(&mut cluster, silent, &mut client)).as_slice(),
        [ServerFrame::Info { .. }]
    ));
    cluster.cores[0].on_tick(start + timeout - Duration::from_millis(1));
    assert!(!cluster.cores[0].is_closing(stalled) && !cluster.cores[0].is_closing(silent));
    cluster.now = start + timeout;
    cluster.cores[0].on_tick(cluster.now);
    // Nothing can go to the stalled one outside TLS: it just closes.
    assert!(cluster.cores[0].should_close(stalled, cluster.now));
    let plaintext = pump(&mut cluster, silent, &mut client);
    let got = frames(&plaintext);
    assert!(
        matches!(got.as_slice(), [ServerFrame::Error { code: 401, .. }]),
        "{got:?}"
    );
    assert!(cluster.cores[0].should_close(silent, cluster.now));
}
