//! The employee CA: made once by `init`, then loaded from its certificate and key to sign
//! people's certificates and the revocation list. Only `portcullis employees` reads the key;
//! the serving process needs the certificate alone.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::EmployeesError;

/// How long the CA itself is valid: people's certificates are short-lived, not the CA.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Clocks of laptops run a little behind: a certificate is valid from a few minutes ago.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A new CA, as (certificate PEM, key PEM).
pub(super) fn create(now: SystemTime) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = common_name("Portcullis employees CA");
    // Only people's certificates below it, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // rustls-webpki checks a CRL's signer for cRLSign when the CA names its key usages.
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Fills `bytes` from the system's CSPRNG.
pub(super) fn random(bytes: &mut [u8]) -> Result<(), EmployeesError> {
    aws_lc_rs::rand::fill(bytes).map_err(|_| EmployeesError::Random)
}

/// One line of a revocation list.
pub(super) struct Revoked {
    /// Hex.
    pub(super) serial: String,
    pub(super) at: SystemTime,
}

/// A loaded CA: what signs.
pub(super) struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

/// A certificate just issued for one person.
pub(super) struct Issued {
    pub(super) cert_pem: String,
    pub(super) cert_der: Vec<u8>,
    pub(super) key_pem: String,
    pub(super) key_der: Vec<u8>,
    /// Hex, as the register and the audit trail write it.
    pub(super) serial: String,
    pub(super) not_after: SystemTime,
    /// SHA-256 of the certificate, hex, as the gateway's audit lines write it.
    pub(super) fingerprint: String,
}

impl Authority {
    /// The CA at `cert` with its key at `key`, which only its owner may read and which must be
    /// the certificate's.
    pub(super) fn load(cert: &Path, key: &Path) -> Result<Self, EmployeesError> {
        let bad = |reason: String| EmployeesError::Authority {
            path: key.to_owned(),
            reason,
        };
        crate::secrets::require_private(key).map_err(|e| bad(e.to_string()))?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| bad(e.to_string()))?;
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| bad(e.to_string()))?;
        let cert_der =
            CertificateDer::from_pem_file(cert).map_err(|e| EmployeesError::Authority {
                path: cert.to_owned(),
                reason: e.to_string(),
            })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| {
            EmployeesError::Authority {
                path: cert.to_owned(),
                reason: e.to_string(),
            }
        })?;
        if *parsed.public_key().subject_public_key.data != *key_pair.public_key_raw() {
            return Err(bad(format!("it is not the key of {}", cert.display())));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key_pair).map_err(|e| {
            EmployeesError::Authority {
                path: cert.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            issuer,
            cert: cert_der,
        })
    }

    /// The CA's own certificate, DER.
    pub(super) fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    /// A client certificate for `name`, valid from now for `validity`, with a fresh key.
    pub(super) fn issue(
        &self,
        name: &str,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Issued, EmployeesError> {
        let serial = random_serial()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = common_name(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = (now - BACKDATE).into();
        let not_after = now + validity;
        params.not_after = not_after.into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            serial: hex::encode(serial),
            // rcgen writes whole seconds.
            not_after: whole_seconds(not_after),
            fingerprint: hex::encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                cert.der(),
            )),
        })
    }

    /// A revocation list of `revoked`, numbered `number`, next updated `validity` from now.
    pub(super) fn crl(
        &self,
        revoked: &[Revoked],
        number: u64,
        now: SystemTime,
        validity: Duration,
    ) -> Result<String, EmployeesError> {
        let revoked_certs = revoked
            .iter()
            .map(|entry| {
                let serial = hex::decode(&entry.serial)
                    .map_err(|_| EmployeesError::Serial(entry.serial.clone()))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: entry.at.into(),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, EmployeesError>>()?;
        let params = CertificateRevocationListParams {
            this_update: now.into(),
            next_update: (now + validity).into(),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// 128 random bits, positive (RFC 5280 4.1.2.2 allows 20 octets; the top bit clear keeps the
/// DER integer at 16).
fn random_serial() -> Result<[u8; 16], EmployeesError> {
    let mut serial = [0u8; 16];
    random(&mut serial)?;
    // Positive, and never a leading zero octet: always 16 octets of DER.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

fn whole_seconds(at: SystemTime) -> SystemTime {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}
