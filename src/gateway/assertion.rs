//! `Portcullis-Assertion`: who the gateway admitted, signed, so that an internal app verifies a
//! signature instead of trusting that nothing else on its network path can set a header (the
//! model of Google IAP's `x-goog-iap-jwt-assertion` and Cloudflare Access's JWT).
//!
//! A JWT (RFC 7519) signed with ES256 (RFC 7518 3.4), its public keys served as a JWKS at
//! `/.portcullis/jwks.json`. Keys rotate every [`ROTATION`] with overlap: the set holds the
//! previous, current and next key, so a token signed just before a rotation still verifies and
//! a set fetched just before one already holds the next key. A key is derived from a seed and
//! its period, so that every instance sharing `[shared] session_key_file` signs with the same
//! key and serves the same set; without it the seed is random and lives as long as the process.
//! The tokens are a few claims and one signature: JWS compact form is written here with
//! aws-lc, and a stock JWT library (PyJWT in the tests) is what verifies it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_lc_rs::hkdf;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use std::sync::Arc;

/// The header that carries the token: a `portcullis-` name, so a client's is always stripped.
pub static ASSERTION_HEADER: http::HeaderName =
    http::HeaderName::from_static("portcullis-assertion");
/// The path of the key set on every host of a gateway.
pub const JWKS_PATH: &str = "/.portcullis/jwks.json";
/// How long a token is good for: one request's trip to the app, with clock skew.
pub const LIFETIME: Duration = Duration::from_secs(60);
/// How long one signing key is used.
pub const ROTATION: Duration = Duration::from_secs(24 * 3600);

const ISSUER: &str = "portcullis";

/// The signing keys of this process (and of every instance sharing its seed).
pub struct Assertions {
    seed: hkdf::Prk,
    current: Mutex<Option<(u64, Arc<EcdsaKeyPair>)>>,
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Assertions")
    }
}

/// What a token says.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    /// The employee (the certificate's CN).
    pub sub: &'a str,
    /// Their groups.
    pub groups: &'a [String],
    /// The upstream the request goes to: a token for one app is refused by another.
    pub aud: &'a str,
    /// The route that admitted them.
    pub route: &'a str,
    /// The host asked for.
    pub host: &'a str,
    /// The request's id, as in the access log.
    pub jti: &'a str,
    /// SHA-256 of the client certificate (RFC 8705 3.1).
    pub cnf: Confirmation,
}

/// The certificate a token is bound to.
#[derive(Debug, Serialize)]
pub struct Confirmation {
    /// Base64url SHA-256 of the DER certificate.
    #[serde(rename = "x5t#S256")]
    pub thumbprint: String,
}

impl Confirmation {
    /// For the certificate with `fingerprint` (SHA-256).
    pub fn of(fingerprint: &[u8; 32]) -> Self {
        Self {
            thumbprint: URL_SAFE_NO_PAD.encode(fingerprint),
        }
    }
}

#[derive(Serialize)]
struct Signed<'a> {
    iss: &'static str,
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(flatten)]
    claims: &'a Claims<'a>,
}

impl Assertions {
    /// Keys derived from `session_key` (`[shared] session_key_file`), else from a fresh seed.
    pub fn new(session_key: Option<&[u8]>) -> Result<Self, aws_lc_rs::error::Unspecified> {
        let mut random = [0u8; 32];
        let input = match session_key {
            Some(key) => key,
            None => {
                aws_lc_rs::rand::fill(&mut random)?;
                &random
            }
        };
        let seed = hkdf::Salt::new(hkdf::HKDF_SHA256, b"portcullis assertion keys").extract(input);
        Ok(Self {
            seed,
            current: Mutex::new(None),
        })
    }

    /// A token for `claims`, valid from `now` for [`LIFETIME`]; `None` if signing failed.
    pub fn sign(&self, claims: &Claims<'_>, now: SystemTime) -> Option<String> {
        let iat = unix(now);
        let period = iat / ROTATION.as_secs();
        let key = self.key(period)?;
        let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{}"}}"#, kid(period));
        let body = serde_json::to_vec(&Signed {
            iss: ISSUER,
            iat,
            nbf: iat.saturating_sub(5),
            exp: iat + LIFETIME.as_secs(),
            claims,
        })
        .ok()?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(body));
        let signature = key.sign(&SystemRandom::new(), token.as_bytes()).ok()?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Some(token)
    }

    /// The JWKS (RFC 7517 5) of the previous, current and next keys at `now`.
    pub fn jwks(&self, now: SystemTime) -> String {
        let period = unix(now) / ROTATION.as_secs();
        let keys: Vec<serde_json::Value> = [period.saturating_sub(1), period, period + 1]
            .into_iter()
            .filter_map(|p| {
                let key = derive(&self.seed, p)?;
                // An uncompressed point: 0x04, then x and y of 32 octets each.
                let point = key.public_key().as_ref();
                let (x, y) = (point.get(1..33)?, point.get(33..65)?);
                Some(serde_json::json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "alg": "ES256",
                    "use": "sig",
                    "kid": kid(p),
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                }))
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn key(&self, period: u64) -> Option<Arc<EcdsaKeyPair>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((held, key)) = current.as_ref()
            && *held == period
        {
            return Some(key.clone());
        }
        let key = Arc::new(derive(&self.seed, period)?);
        *current = Some((period, key.clone()));
        Some(key)
    }
}

/// The key of `period`: a P-256 scalar expanded from the seed, as an RFC 5915 ECPrivateKey
/// (aws-lc computes the public point). A scalar out of range (chance 2^-32) takes the next
/// counter.
fn derive(seed: &hkdf::Prk, period: u64) -> Option<EcdsaKeyPair> {
    (0u8..4).find_map(|counter| {
        let info = [period.to_be_bytes().as_slice(), &[counter]].concat();
        let info = [info.as_slice()];
        let mut scalar = [0u8; 32];
        seed.expand(&info, Scalar).ok()?.fill(&mut scalar).ok()?;
        // SEQUENCE { INTEGER 1, OCTET STRING scalar }
        let der = [&[0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20][..], &scalar].concat();
        EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).ok()
    })
}

struct Scalar;

impl hkdf::KeyType for Scalar {
    fn len(&self) -> usize {
        32
    }
}

fn kid(period: u64) -> String {
    format!("portcullis-{period}")
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_with_one_seed_agree_and_rotation_keeps_an_overlap() {
        let day = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 100);
        let a = Assertions::new(Some(b"shared secret of thirty-two bytes")).unwrap();
        let b = Assertions::new(Some(b"shared secret of thirty-two bytes")).unwrap();
        let other = Assertions::new(None).unwrap();
        assert_eq!(a.jwks(day), b.jwks(day));
        assert_ne!(a.jwks(day), other.jwks(day));
        let keys = |at| -> Vec<String> {
            let set: serde_json::Value = serde_json::from_str(&a.jwks(at)).unwrap();
            set["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        let next_day = day + ROTATION;
        assert_eq!(keys(day)[1..], keys(next_day)[..2], "the overlap");
        let claims = Claims {
            sub: "alice",
            groups: &[],
            aud: "app",
            route: "r",
            host: "h",
            jti: "-",
            cnf: Confirmation::of(&[0; 32]),
        };
        let token = a.sign(&claims, day).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert!(keys(day).iter().any(|k| token.starts_with(
            &URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{k}"}}"#))
        )));
    }
}
