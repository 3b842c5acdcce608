//! The test PKI: a CA from rcgen and leaf certificates written to a temp dir.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

/// A test CA and one leaf certificate written to a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: CertificateDer<'static>,
    /// The CA certificate as a PEM file, for tools such as curl.
    pub ca_pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A CA and a leaf for `names` (DNS names, wildcards and IPs).
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: OpenSSL takes a leaf whose issuer equals its subject as self-signed.
        ca_params.distinguished_name = distinguished_name("Portcullis test CA");
        let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, issuer.pem()).unwrap();
        let mut pki = Self {
            ca: issuer.der().clone(),
            ca_pem,
            dir,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            issuer,
        };
        (pki.cert, pki.key) = pki.leaf("leaf", names);
        pki
    }

    /// Another leaf from the same CA, written as `<stem>.crt` / `<stem>.key`.
    pub fn leaf(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key_pair = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = distinguished_name(stem);
        let leaf = params.signed_by(&key_pair, &self.issuer).unwrap();
        let cert = self.dir.path().join(format!("{stem}.crt"));
        let key = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert, leaf.pem()).unwrap();
        super::write_private(&key, key_pair.serialize_pem());
        (cert, key)
    }

    /// A leaf for `names`, valid from the start of `years.0` to the start of `years.1` when
    /// given, as (certificate PEM, key PEM).
    pub fn leaf_pem(&self, names: &[&str], years: Option<(i32, i32)>) -> (String, String) {
        let key_pair = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = distinguished_name(names.first().unwrap_or(&"leaf"));
        if let Some((from, until)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(until, 1, 1);
        }
        let leaf = params.signed_by(&key_pair, &self.issuer).unwrap();
        (leaf.pem(), key_pair.serialize_pem())
    }

    /// TOML for an extra `[[tls.certificates]]` entry covering `names`.
    pub fn extra_certificate(&self, stem: &str, names: &[&str]) -> String {
        let (cert, key) = self.leaf(stem, names);
        format!(
            "[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    }

    /// A rustls client trusting only this CA, offering `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn distinguished_name(common_name: &str) -> rcgen::DistinguishedName {
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, common_name);
    name
}

/// The names the default test certificate covers.
pub const CERT_NAMES: &[&str] = &[
    "localhost",
    "app.test",
    "*.wild.test",
    "127.0.0.1",
    "unrouted.test",
];
