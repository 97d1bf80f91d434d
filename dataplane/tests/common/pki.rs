//! Real certificates for the TLS tests, made per test with rcgen: a CA, a
//! server certificate it signed (for `localhost`, 127.0.0.1 and the
//! broker's address), and a client certificate it signed (more, with the
//! subject and SANs a test names, by [`Pki::issue_client`]), as PEM files
//! in a directory removed on drop.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

pub struct Pki {
    dir: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
}

impl Pki {
    /// A fresh CA and the certificates it signed, for a broker at
    /// `server_ip`.
    pub fn new(name: &str, server_ip: IpAddr) -> Pki {
        let dir = std::env::temp_dir().join(format!("blipmq-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the certificates");
        let (ca, ca_key) = authority("BlipMQ test CA");
        let pki = Pki { dir, ca, ca_key };
        pki.write("ca.pem", &pki.ca.pem());

        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "blipmqd");
        server.subject_alt_names.push(SanType::IpAddress(server_ip));
        if server_ip != IpAddr::from([127, 0, 0, 1]) {
            server
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
        }
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        pki.signed("server", server);

        pki.issue_client("client", &[(DnType::CommonName, "alice")], Vec::new());
        pki
    }

    /// A client certificate with `subject` (in this order) and `sans`, as
    /// `NAME.pem` and `NAME-key.pem`.
    pub fn issue_client(&self, name: &str, subject: &[(DnType, &str)], sans: Vec<SanType>) {
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name = DistinguishedName::new();
        for (kind, value) in subject {
            client.distinguished_name.push(kind.clone(), *value);
        }
        client.subject_alt_names = sans;
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.signed(name, client);
    }

    /// Another CA with its own server certificate: what a client that
    /// trusts only [`Pki::new`]'s CA must refuse.
    pub fn other(name: &str, server_ip: IpAddr) -> Pki {
        Pki::new(&format!("{name}-other"), server_ip)
    }

    fn signed(&self, name: &str, params: CertificateParams) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}-key.pem"), &key.serialize_pem());
    }

    fn write(&self, file: &str, pem: &str) {
        std::fs::write(self.dir.join(file), pem).expect("write a PEM file");
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// `[tls]` for the broker, with `extra` lines (e.g. `ca_file = ...`).
    pub fn tls_config(&self, extra: &str) -> String {
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n{extra}\n",
            self.path("server.pem"),
            self.path("server-key.pem")
        )
    }

    /// Replaces this PKI's server certificate and key with `other`'s.
    pub fn install_server_of(&self, other: &Pki) {
        for file in ["server.pem", "server-key.pem"] {
            std::fs::copy(other.path(file), self.path(file)).expect("copy a PEM file");
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn authority(name: &str) -> (Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}
