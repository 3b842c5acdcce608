//! What the CA is shown to prove we hold a name, and where: the answers one order makes
//! ([`Answer`]), the challenges this instance serves ([`Board`]: TLS-ALPN-01 certificates on
//! the HTTPS listener, HTTP-01 key authorizations on the plain one), and [`Publish`], which
//! puts an answer where the CA will look (this board, the shared store, a DNS zone).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls_acme::acme::Account;

use super::failure::OrderError;

/// One name's answer to one challenge.
#[derive(Debug, Clone)]
pub enum Answer {
    /// RFC 8737: a self-signed certificate for `domain`, key and certificate as PEM.
    TlsAlpn { domain: String, pem: String },
    /// RFC 8555 8.3: `key_authorization` served at `/.well-known/acme-challenge/{token}`.
    Http {
        token: String,
        key_authorization: String,
    },
    /// RFC 8555 8.4: a TXT record `value` at `_acme-challenge.{domain}`.
    Dns { domain: String, value: String },
}

impl Answer {
    /// The answer to a `kind` challenge for `domain` with `token`, by `account`.
    pub fn new(
        kind: crate::config::Challenge,
        account: &Account,
        token: &str,
        domain: &str,
    ) -> Result<Self, OrderError> {
        use crate::config::Challenge;
        let key_authorization = format!("{token}.{}", thumbprint(account));
        Ok(match kind {
            Challenge::TlsAlpn01 => Self::TlsAlpn {
                domain: domain.to_owned(),
                pem: challenge_certificate(&key_authorization, domain)?,
            },
            Challenge::Http01 => Self::Http {
                token: token.to_owned(),
                key_authorization,
            },
            Challenge::Dns01 => Self::Dns {
                domain: domain.to_owned(),
                value: URL_SAFE_NO_PAD.encode(sha256(key_authorization.as_bytes())),
            },
        })
    }
}

/// Puts answers where the CA looks, and takes them away once it has looked.
#[async_trait]
pub trait Publish: Send + Sync {
    /// Shows `answer`; returns once the CA can find it.
    async fn show(&self, answer: &Answer) -> Result<(), OrderError>;
    /// Takes `answer` away, whatever the validation's outcome.
    async fn withdraw(&self, answer: &Answer) -> Result<(), OrderError>;
}

/// The challenges this instance answers now.
#[derive(Debug, Default)]
pub struct Board {
    /// TLS-ALPN-01 certificates by name, lowercase.
    tls_alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations by token.
    http: ArcSwap<HashMap<String, Arc<str>>>,
}

impl Board {
    /// The TLS-ALPN-01 certificate for `name`.
    pub fn tls_alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn.load().get(name).cloned()
    }

    /// The key authorization for an HTTP-01 `token`.
    pub fn http(&self, token: &str) -> Option<Arc<str>> {
        self.http.load().get(token).cloned()
    }

    /// Replaces every challenge at once, as read from the shared store.
    pub fn replace(
        &self,
        tls_alpn: HashMap<String, Arc<CertifiedKey>>,
        http: HashMap<String, Arc<str>>,
    ) {
        self.tls_alpn.store(Arc::new(tls_alpn));
        self.http.store(Arc::new(http));
    }
}

/// This instance alone: the answer goes on its own board.
#[async_trait]
impl Publish for Board {
    async fn show(&self, answer: &Answer) -> Result<(), OrderError> {
        match answer {
            Answer::TlsAlpn { domain, pem } => {
                let key = challenge_key(pem.as_bytes())
                    .ok_or_else(|| OrderError::failed("unusable challenge certificate"))?;
                let key = Arc::new(key);
                edit(&self.tls_alpn, |map| {
                    map.insert(domain.to_ascii_lowercase(), key.clone());
                });
            }
            Answer::Http {
                token,
                key_authorization,
            } => {
                let value: Arc<str> = Arc::from(key_authorization.as_str());
                edit(&self.http, |map| {
                    map.insert(token.clone(), value.clone());
                });
            }
            Answer::Dns { .. } => return Err(OrderError::failed("DNS-01 needs [tls.acme.dns]")),
        }
        Ok(())
    }

    async fn withdraw(&self, answer: &Answer) -> Result<(), OrderError> {
        match answer {
            Answer::TlsAlpn { domain, .. } => {
                let domain = domain.to_ascii_lowercase();
                edit(&self.tls_alpn, |map| {
                    map.remove(&domain);
                });
            }
            Answer::Http { token, .. } => edit(&self.http, |map| {
                map.remove(token);
            }),
            Answer::Dns { .. } => {}
        }
        Ok(())
    }
}

/// Changes one of the board's maps for every reader at once.
fn edit<V: Clone>(map: &ArcSwap<HashMap<String, V>>, change: impl Fn(&mut HashMap<String, V>)) {
    map.rcu(|old| {
        let mut new = HashMap::clone(old);
        change(&mut new);
        new
    });
}

/// A TLS-ALPN-01 challenge key and certificate, shown only to clients offering `acme-tls/1`.
/// Not checked as a certificate is: its critical acmeIdentifier extension (RFC 8737 3) is one
/// that rustls, rightly, will not parse for a served certificate.
pub fn challenge_key(pem: &[u8]) -> Option<CertifiedKey> {
    let key = PrivateKeyDer::from_pem_slice(pem).ok()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .ok()?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).ok()?;
    Some(CertifiedKey::new(chain, signer))
}

/// The self-signed certificate a TLS-ALPN-01 validation must be shown (RFC 8737 3): the name,
/// and the SHA-256 of the key authorization in a critical acmeIdentifier extension. Its key
/// and certificate as PEM, key first.
fn challenge_certificate(key_authorization: &str, domain: &str) -> Result<String, OrderError> {
    let digest = sha256(key_authorization.as_bytes());
    let mut params = CertificateParams::new(vec![domain.to_owned()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(&digest)];
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok(format!("{}{}", key.serialize_pem(), certificate.pem()))
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// The account key's JWK thumbprint (RFC 7638): P-256, so the public key is `04 || x || y`.
fn thumbprint(account: &Account) -> String {
    let point = account.key_pair.public_key().as_ref();
    let (x, y) = point
        .get(1..)
        .unwrap_or_default()
        .split_at(point.len().saturating_sub(1) / 2);
    let jwk = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(x),
        URL_SAFE_NO_PAD.encode(y)
    );
    URL_SAFE_NO_PAD.encode(sha256(jwk.as_bytes()))
}
