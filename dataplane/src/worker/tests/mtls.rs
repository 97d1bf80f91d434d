//! Client certificates as users (`tls.verify_and_map`), sans-IO: rustls
//! clients presenting certificates a test CA signed, driven against a core
//! that requires them. The certificate's names pick the user; CONNECT's
//! credentials are not looked at.

use std::io::Write;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ClientConnection;

use super::tls::{drain, frames, pump, Certs};
use super::*;
use crate::auth::UserTable;
use crate::config::{PermissionsConfig, SubjectRulesConfig, UserConfig};
use crate::control::protocol::ConnectionInfo;
use crate::tls::{TlsServer, TlsSettings};

/// The server's certificate and a CA whose client certificates it requires.
struct Mtls {
    certs: Certs,
    ca: Certificate,
    ca_key: KeyPair,
}

impl Mtls {
    fn new(name: &str) -> Mtls {
        let certs = Certs::new(&format!("mtls-{name}"));
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "client CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(certs.dir.join("ca.pem"), ca.pem()).unwrap();
        Mtls { certs, ca, ca_key }
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings {
            ca_file: Some(self.certs.dir.join("ca.pem")),
            ..self.certs.settings()
        }
    }

    /// A client presenting a certificate with subject `O=Example` and
    /// `common_name`, and `sans`.
    fn client(&self, common_name: &str, sans: Vec<SanType>) -> ClientConnection {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        self.certs
            .client_with(|builder| builder.with_client_auth_cert(chain, key).unwrap())
    }

    /// A core requiring this CA's certificates and mapping them to `users`.
    fn cluster(&self, users: &[UserConfig]) -> Cluster {
        self.cluster_with(self.settings(), users)
    }

    fn cluster_with(&self, settings: TlsSettings, users: &[UserConfig]) -> Cluster {
        let session = SessionConfig {
            users: Arc::new(UserTable::new(users).mapping_certificates(true)),
            ..session_config()
        };
        Cluster::with_config(
            1,
            1 << 16,
            CoreConfig {
                session: Arc::new(session),
                tls: Some(Arc::new(TlsServer::load(settings).unwrap())),
                ..core_config()
            },
        )
    }
}

fn email(address: &str) -> SanType {
    SanType::Rfc822Name(address.try_into().unwrap())
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

/// A user without password or token, publishing only to `publish`.
fn certificate_user(name: &str, publish: &[&str]) -> UserConfig {
    UserConfig {
        user: name.into(),
        password: None,
        token: None,
        permissions: PermissionsConfig {
            publish: Some(SubjectRulesConfig::Allow(
                publish.iter().map(|s| s.to_string()).collect(),
            )),
            ..PermissionsConfig::default()
        },
    }
}

fn users() -> Vec<UserConfig> {
    vec![
        certificate_user("alice@example.com", &["orders.>"]),
        certificate_user("CN=bob,O=Example", &["bob.>"]),
        // A DNS name of alice's certificate too: the email is tried first.
        certificate_user("alice.example.com", &[">"]),
    ]
}

/// Completes the handshake and sends `request` inside TLS; the plaintext
/// the client received (INFO first, for the binary protocol).
fn exchange(
    cluster: &mut Cluster,
    cid: ConnId,
    client: &mut ClientConnection,
    request: &[u8],
) -> Vec<u8> {
    let mut plaintext = pump(cluster, cid, client);
    client.writer().write_all(request).unwrap();
    plaintext.extend(pump(cluster, cid, client));
    plaintext
}

/// A NATS connection (its INFO in the clear, unread) that upgrades and
/// sends `request` inside TLS; the connection and what the client got.
fn nats_exchange(
    cluster: &mut Cluster,
    client: &mut ClientConnection,
    request: &[u8],
) -> (ConnId, String) {
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Nats);
    drain(cluster, cid);
    let plaintext = exchange(cluster, cid, client, request);
    (cid, String::from_utf8(plaintext).unwrap())
}

fn binary_session(credentials: &str) -> Vec<u8> {
    let mut request = Vec::new();
    encode::put_connect(&mut request, credentials.as_bytes());
    encode::put_publish(&mut request, b"orders.new", None, b"1", true);
    encode::put_publish(&mut request, b"admin.x", None, b"2", true);
    request
}

#[test]
fn an_email_san_names_the_user_whatever_connect_says_and_its_permissions_apply() {
    let mtls = Mtls::new("email");
    let mut cluster = mtls.cluster(&users());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Binary);
    let mut client = mtls.client(
        "alice",
        vec![dns("alice.example.com"), email("alice@example.com")],
    );
    // Credentials of no user: ignored, as nats-server ignores them.
    let request = binary_session(r#"{"protocol":1,"user":"mallory","pass":"guess"}"#);
    let plaintext = exchange(&mut cluster, cid, &mut client, &request);
    let got = frames(&plaintext);
    assert!(
        matches!(
            got.as_slice(),
            [
                ServerFrame::Info { .. },
                ServerFrame::Ok,
                ServerFrame::Ok,
                ServerFrame::Error {
                    code: 403,
                    reason: b"Permissions Violation for Publish to \"admin.x\""
                },
            ]
        ),
        "alice@example.com's permissions, not alice.example.com's: {got:?}"
    );
    assert!(!cluster.cores[0].is_closing(cid));
    // `blipmqctl conns` and `/connz` show it.
    let listed = cluster.ask(0, WorkerRequest::Connections);
    let listed: Vec<ConnectionInfo> = serde_json::from_slice(&listed).unwrap();
    assert_eq!(listed[0].user.as_deref(), Some("alice@example.com"));
}

#[test]
fn the_subject_names_the_user_in_rfc_2253_form_when_no_san_does() {
    let mtls = Mtls::new("subject");
    let mut cluster = mtls.cluster(&users());
    let mut client = mtls.client("bob", vec![dns("unknown.example.com")]);
    let (_, got) = nats_exchange(
        &mut cluster,
        &mut client,
        b"CONNECT {\"verbose\":false}\r\nSUB bob.x 1\r\nPUB bob.x 2\r\nhi\r\nPUB other 1\r\nx\r\nPING\r\n",
    );
    assert_eq!(
        got,
        "MSG bob.x 1 2\r\nhi\r\n-ERR 'Permissions Violation for Publish to \"other\"'\r\nPONG\r\n"
    );
}

#[test]
fn a_certificate_that_names_no_user_is_refused_in_both_dialects() {
    let mtls = Mtls::new("nobody");
    let mut cluster = mtls.cluster(&users());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Binary);
    let mut client = mtls.client("mallory", vec![email("mallory@example.com")]);
    let request = binary_session(r#"{"protocol":1,"user":"alice@example.com"}"#);
    let got_bytes = exchange(&mut cluster, cid, &mut client, &request);
    let got = frames(&got_bytes);
    assert!(
        matches!(
            got.as_slice(),
            [
                ServerFrame::Info { .. },
                ServerFrame::Error { code: 401, .. }
            ]
        ),
        "{got:?}"
    );
    assert!(cluster.cores[0].should_close(cid, cluster.now));

    let mut client = mtls.client("mallory", vec![]);
    let (cid, got) = nats_exchange(
        &mut cluster,
        &mut client,
        b"CONNECT {\"verbose\":false,\"user\":\"CN=bob,O=Example\"}\r\nPING\r\n",
    );
    assert_eq!(got, "-ERR 'Authorization Violation'\r\n");
    assert!(cluster.cores[0].should_close(cid, cluster.now));
    assert_eq!(cluster.cores[0].stats.get(Counter::FramesOutError), 2);
}

#[test]
fn a_reload_gives_a_mapped_connection_its_users_new_permissions_or_closes_it() {
    let mtls = Mtls::new("reload");
    let mut cluster = mtls.cluster(&users());
    let mut client = mtls.client("alice", vec![email("alice@example.com")]);
    let (cid, got) = nats_exchange(
        &mut cluster,
        &mut client,
        b"CONNECT {\"verbose\":false}\r\nPUB admin.x 1\r\nx\r\nPING\r\n",
    );
    assert!(got.starts_with("-ERR 'Permissions Violation"), "{got}");

    let reload = |users: Vec<UserConfig>, map_certificates: bool| ReloadSettings {
        users,
        map_certificates,
        ..reload_settings(1 << 20, ConnectionLimits::default())
    };
    let mut widened = users();
    widened[0] = certificate_user("alice@example.com", &["admin.>"]);
    cluster.reload_with(0, reload(widened, true));
    client
        .writer()
        .write_all(b"SUB admin.x 1\r\nPUB admin.x 1\r\nx\r\nPING\r\n")
        .unwrap();
    assert_eq!(
        pump(&mut cluster, cid, &mut client),
        b"MSG admin.x 1 1\r\nx\r\nPONG\r\n"
    );

    // Its user gone: closed as a password user would be.
    cluster.reload_with(0, reload(users()[1..].to_vec(), true));
    assert_eq!(
        pump(&mut cluster, cid, &mut client),
        b"-ERR 'Authorization Violation'\r\n"
    );
    assert!(cluster.cores[0].should_close(cid, cluster.now));

    // Mapping turned off: the certificate no longer vouches for anyone.
    let mut client = mtls.client("bob", vec![]);
    let (cid, _) = nats_exchange(
        &mut cluster,
        &mut client,
        b"CONNECT {\"verbose\":false}\r\n",
    );
    let mut with_password = certificate_user("CN=bob,O=Example", &[">"]);
    with_password.password = Some(crate::config::Secret::new("b-pass"));
    cluster.reload_with(0, reload(vec![with_password], false));
    assert_eq!(
        pump(&mut cluster, cid, &mut client),
        b"-ERR 'Authorization Violation'\r\n"
    );
}

#[test]
fn a_nats_client_that_stays_in_plaintext_has_no_certificate_and_no_user() {
    let mtls = Mtls::new("plaintext");
    let settings = TlsSettings {
        required: false,
        ..mtls.settings()
    };
    let mut cluster = mtls.cluster_with(settings, &users());
    let cid = cluster.cores[0].accept(cluster.now, Dialect::Nats);
    drain(&mut cluster, cid);
    cluster.send(
        0,
        cid,
        b"CONNECT {\"verbose\":false,\"user\":\"alice@example.com\"}\r\nPING\r\n",
    );
    assert_eq!(
        drain(&mut cluster, cid),
        b"-ERR 'Authorization Violation'\r\n"
    );
    assert!(cluster.cores[0].should_close(cid, cluster.now));
}
