//! What a person takes home from enrolment: a PKCS#12 bundle for browsers and keychains under a
//! one-time passphrase, and a TOTP secret as an `otpauth://` URI and a QR code to scan.

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};

use super::EmployeesError;
use super::authority::{Issued, random};

/// The issuer name authenticator apps show beside the account.
const TOTP_ISSUER: &str = "Portcullis";

/// 120 random bits in base32, in groups of four: easy to read out and type, once.
pub(super) fn passphrase() -> Result<String, EmployeesError> {
    let mut bytes = [0u8; 15];
    random(&mut bytes)?;
    let text = base32(&bytes);
    let groups: Vec<&str> = text
        .as_bytes()
        .chunks(4)
        .filter_map(|chunk| std::str::from_utf8(chunk).ok())
        .collect();
    Ok(groups.join("-"))
}

/// The certificate, its key and the CA in one PKCS#12 file, encrypted with PBES2 (AES-256,
/// PBKDF2-HMAC-SHA256) and MACed with HMAC-SHA256: what OpenSSL 3, curl, browsers and
/// keychains read without legacy algorithms.
pub(super) fn pkcs12(
    name: &str,
    issued: &Issued,
    ca: &[u8],
    passphrase: &str,
) -> Result<Vec<u8>, EmployeesError> {
    let bundle = |e: p12_keystore::error::Error| EmployeesError::Bundle(e.to_string());
    let chain = [
        Certificate::from_der(&issued.cert_der).map_err(bundle)?,
        Certificate::from_der(ca).map_err(bundle)?,
    ];
    let key = PrivateKey::from_der(&issued.key_der).map_err(bundle)?;
    let key_id = hex::decode(&issued.fingerprint).unwrap_or_default();
    let mut store = KeyStore::new();
    store.add_entry(
        name,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(key_id, key, chain)),
    );
    store.writer(passphrase).write().map_err(bundle)
}

/// A new RFC 6238 secret: 160 bits (RFC 4226 4, R6), base32 as the secret files hold it.
pub(super) fn totp_secret() -> Result<String, EmployeesError> {
    let mut bytes = [0u8; 20];
    random(&mut bytes)?;
    Ok(base32(&bytes))
}

/// The `otpauth://` URI authenticator apps import, for `name` with `secret` (base32), with
/// the parameters the gateway checks codes with (totp-rs's defaults: SHA-1, 6 digits, 30 s).
pub(super) fn otpauth_uri(name: &str, secret: &str) -> Result<String, EmployeesError> {
    let totp_error = |e: &dyn std::fmt::Display| EmployeesError::Totp(e.to_string());
    let secret = totp_rs::Secret::try_from_base32(secret).map_err(|e| totp_error(&e))?;
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_issuer(Some(TOTP_ISSUER))
        .with_account_name(name)
        .build()
        .map_err(|e| totp_error(&e))?
        .to_url()
        .map_err(|e| totp_error(&e))
}

/// `uri` as a QR code of half-height blocks, to scan from a terminal.
pub(super) fn qr(uri: &str) -> Result<String, EmployeesError> {
    let code =
        qrcode::QrCode::new(uri.as_bytes()).map_err(|e| EmployeesError::Totp(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

fn base32(bytes: &[u8]) -> String {
    totp_rs::Secret::from(bytes).to_base32()
}
