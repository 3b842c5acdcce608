//! Employees for gateway tests: an employee CA from rcgen, people's certificates (valid,
//! expired, from another CA), revocation lists, TOTP secrets and codes, and the gateway config
//! the gateway tests share.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
    date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::Setup;

/// An employee CA with its people.
pub struct Employees {
    pub dir: tempfile::TempDir,
    pub ca: CertifiedIssuer<'static, KeyPair>,
    pub secret: String,
}

pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl Employees {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Employees CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".to_owned();
        Self { dir, ca, secret }
    }

    pub fn person(
        &self,
        name: &str,
        serial: u64,
        expired: bool,
        issuer: &CertifiedIssuer<'static, KeyPair>,
    ) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// A valid certificate for `name` written as PEM files, as `portcullis connect` reads them.
    pub fn person_files(&self, name: &str, serial: u64) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_path = self.dir.path().join(format!("{name}-{serial}.crt"));
        let key_path = self.dir.path().join(format!("{name}-{serial}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        // `portcullis connect` refuses a key others can read, as ssh does.
        super::write_private(&key_path, key.serialize_pem());
        (cert_path, key_path)
    }

    pub fn valid(&self, name: &str, serial: u64) -> Identity {
        self.person(name, serial, false, &self.ca)
    }

    /// A certificate for `name` that expires `seconds` from now: the handshake must be done
    /// before then.
    pub fn expiring_in(&self, name: &str, serial: u64, seconds: i64) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::seconds(seconds);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    pub fn crl_revoking(&self, serial: u64) -> PathBuf {
        self.crl(&[serial], 2099)
    }

    /// Writes `employees.crl` (always the same path, so a reload picks up a new one) revoking
    /// `serials`, with its next update at the start of `next_update_year`.
    pub fn crl(&self, serials: &[u64], next_update_year: i32) -> PathBuf {
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(next_update_year, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .unwrap();
        let path = self.dir.path().join("employees.crl");
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    pub fn secret_file(&self, mode: u32) -> PathBuf {
        let path = self.dir.path().join(format!("alice-{mode:o}.totp"));
        std::fs::write(&path, &self.secret).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    pub fn code(&self, offset_steps: i64) -> String {
        let secret = totp_rs::Secret::try_from_base32(&self.secret).unwrap();
        let totp = totp_rs::Builder::new().with_secret(secret).build().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        totp.generate(now.saturating_add_signed(offset_steps * 30))
            .to_string()
    }
}

pub fn gateway_toml(setup: &Setup, employees: &Employees, revoked_serial: u64) -> String {
    let internal_cert = setup.pki.extra_certificate("corp", &["*.corp.test"]);
    format!(
        "{internal_cert}[gateway]\nclient_ca = \"{ca}\"\ncrls = [\"{crl}\"]\n\
         [gateway.users.alice]\ngroups = [\"dev\"]\ntotp_secret_file = \"{secret}\"\n\
         [gateway.users.bob]\ngroups = [\"ops\"]\n[gateway.users.carol]\ngroups = []\n[gateway.users.dave]\ngroups = [\"ops\"]\n\
         [[routes]]\nhost = \"tools.corp.test\"\nupstream = \"app\"\ninternal = true\nallow = [\"alice\", \"group:ops\"]\n\
         [[routes]]\nhost = \"mixed.corp.test\"\nupstream = \"app\"\n\
         [[routes]]\nhost = \"mixed.corp.test\"\npath_prefix = \"/admin\"\nupstream = \"app\"\ninternal = true\nallow = [\"alice\"]\n\
         [[routes]]\nhost = \"mfa.corp.test\"\nupstream = \"app\"\ninternal = true\nallow = [\"alice\"]\nmfa = true\n\
         [[routes]]\nhost = \"www.corp.test\"\nupstream = \"app\"\n",
        ca = employees.dir.path().join("ca.pem").display(),
        crl = employees.crl_revoking(revoked_serial).display(),
        secret = employees.secret_file(0o600).display(),
    )
}

pub fn client(setup: &Setup, identity: Option<Identity>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(setup.pki.ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
