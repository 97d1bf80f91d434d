//! The names a verified client certificate offers as a user
//! (`tls.verify_and_map`), in the order nats-server tries them: email SANs,
//! DNS SANs, URI SANs, then the subject as an RFC 2253 string
//! (`CN=alice,O=Example`: the last RDN first, as Go's `pkix.Name.String`
//! and `openssl x509 -noout -subject -nameopt RFC2253` write it).
//!
//! Read once per connection, when its handshake completes.

use std::fmt::Write;

use x509_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// Attribute types RFC 2253 (and Go) write by keyword; others are written
/// as their dotted OID.
const KEYWORDS: [(&str, &str); 11] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("2.5.4.17", "POSTALCODE"),
];

/// The candidate user names of a client certificate (DER), best first;
/// empty when it cannot be parsed (rustls verified it, so that is rare).
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(sans)) = cert.subject_alternative_name() {
        let mut ranked: Vec<_> = sans
            .value
            .general_names
            .iter()
            .filter_map(san_rank)
            .collect();
        // Stable: each kind keeps the certificate's order.
        ranked.sort_by_key(|(rank, _)| *rank);
        names.extend(ranked.into_iter().map(|(_, name)| name.to_owned()));
    }
    let subject = rfc2253(cert.subject());
    if !subject.is_empty() {
        names.push(subject);
    }
    names
}

/// Where a SAN is tried: emails, then DNS names, then URIs.
fn san_rank<'a>(name: &GeneralName<'a>) -> Option<(u8, &'a str)> {
    match name {
        GeneralName::RFC822Name(email) => Some((0, email)),
        GeneralName::DNSName(dns) => Some((1, dns)),
        GeneralName::URI(uri) => Some((2, uri)),
        _ => None,
    }
}

/// `name` as RFC 2253 writes it: RDNs last first, joined by `,`; the
/// attributes of a multi-valued RDN joined by `+`.
fn rfc2253(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (index, rdn) in rdns.iter().rev().enumerate() {
        if index > 0 {
            out.push(',');
        }
        for (index, attribute) in rdn.iter().enumerate() {
            if index > 0 {
                out.push('+');
            }
            let oid = attribute.attr_type().to_id_string();
            match KEYWORDS.iter().find(|(dotted, _)| *dotted == oid) {
                Some((_, keyword)) => out.push_str(keyword),
                None => out.push_str(&oid),
            }
            out.push('=');
            write_value(&mut out, attribute.attr_value());
        }
    }
    out
}

/// A string value escaped as RFC 2253 section 2.4 says; any other value
/// as `#` and the hex of its DER encoding.
fn write_value(out: &mut String, value: &Any<'_>) {
    let text = match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(value.data).ok()
        }
        _ => None,
    };
    let Some(text) = text else {
        out.push('#');
        for byte in value.to_der_vec().unwrap_or_default() {
            let _ = write!(out, "{byte:02x}");
        }
        return;
    };
    let last = text.chars().count().saturating_sub(1);
    for (index, ch) in text.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (ch == ' ' && (index == 0 || index == last))
            || (ch == '#' && index == 0);
        if special {
            out.push('\\');
        }
        out.push(ch);
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    use super::certificate_names;

    fn names(subject: &[(DnType, &str)], sans: Vec<SanType>) -> Vec<String> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.subject_alt_names = sans;
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        certificate_names(cert.der())
    }

    #[test]
    fn sans_come_first_by_kind_then_the_subject_last_rdn_first() {
        let got = names(
            &[
                (DnType::CountryName, "US"),
                (DnType::OrganizationName, "Example"),
                (DnType::CommonName, "alice"),
            ],
            vec![
                SanType::URI("spiffe://example/alice".try_into().unwrap()),
                SanType::DnsName("alice.example.com".try_into().unwrap()),
                SanType::Rfc822Name("alice@example.com".try_into().unwrap()),
                SanType::DnsName("a.example.com".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
        );
        assert_eq!(
            got,
            [
                "alice@example.com",
                "alice.example.com",
                "a.example.com",
                "spiffe://example/alice",
                "CN=alice,O=Example,C=US",
            ]
        );
    }

    #[test]
    fn subject_values_are_escaped_as_rfc_2253_says() {
        let got = names(
            &[
                (
                    DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
                    "example",
                ),
                (DnType::OrganizationalUnitName, "#ops, \"east\""),
                (DnType::CommonName, " a+b<c>;d\\ "),
            ],
            vec![],
        );
        assert_eq!(
            got,
            [r#"CN=\ a\+b\<c\>\;d\\\ ,OU=\#ops\, \"east\",DC=example"#]
        );
    }

    #[test]
    fn bytes_that_are_no_certificate_offer_no_name() {
        assert!(certificate_names(b"not a certificate").is_empty());
        assert!(certificate_names(&[]).is_empty());
    }
}
