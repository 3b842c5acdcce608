//! One ACME order by the lease holder, with rustls-acme's ACME client (`rustls_acme::acme`):
//! the account key from the store, TLS-ALPN-01 challenge certificates published to the store
//! so that whichever instance the validation reaches answers it, and the new certificate
//! returned for the store.
//!
//! rustls-acme's own order loop keeps its challenge keys in one process's memory, which is what
//! a balancer in front of several instances defeats; its client does the protocol.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use rustls_acme::acme::{
    Account, AcmeError, AuthStatus, ChallengeType, Directory, Identifier, OrderStatus,
};

use super::bucket::{Bucket, StoreError};
use super::problem::Problem;
use crate::config::AcmeSettings;

/// The account key object: PKCS#8, PEM.
pub const ACCOUNT_KEY: &str = "account.key";
/// Where challenge certificates are published, one object per name.
pub const CHALLENGES: &str = "challenges/";
/// Pauses between looks at an order or authorization in progress, and how many to make.
const STATUS_PAUSE: Duration = Duration::from_secs(1);
const STATUS_LOOKS: u32 = 120;

/// Why an order failed; the next attempt backs off.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The ACME server refused or failed a request.
    #[error("ACME: {0}")]
    Acme(#[from] AcmeError),
    /// The store could not be read or written.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A key or certificate could not be made.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The stored account key is not a P-256 PKCS#8 key.
    #[error("the stored account key is unusable")]
    AccountKey,
    /// The order or an authorization ended invalid, or never settled.
    #[error("{what}")]
    Failed {
        /// What ended how.
        what: String,
        /// What the CA said about it, when it said something.
        problem: Option<Problem>,
    },
}

impl OrderError {
    /// Ended without the CA saying why.
    pub fn failed(what: impl Into<String>) -> Self {
        Self::Failed {
            what: what.into(),
            problem: None,
        }
    }

    /// The CA's problem document, when the failure carries one.
    pub fn problem(&self) -> Option<Problem> {
        match self {
            Self::Acme(e) => Problem::of_acme(e),
            Self::Failed { problem, .. } => problem.clone(),
            Self::Store(_) | Self::Rcgen(_) | Self::AccountKey => None,
        }
    }
}

/// Orders a certificate for `settings.domains`; returns the private key and chain as PEM, in
/// the format rustls-acme's caches use (key first).
pub async fn order(
    client: &Arc<rustls::ClientConfig>,
    settings: &AcmeSettings,
    bucket: &Bucket,
    publish_wait: Duration,
) -> Result<String, OrderError> {
    let key = account_key(bucket).await?;
    let directory = Directory::discover(client, &settings.directory).await?;
    // With a key it already knows, the server returns the existing account (RFC 8555 7.3.1).
    let account = Account::create_with_keypair(client, directory, &settings.contact, &key).await?;
    let (url, mut order) = account.new_order(client, settings.domains.clone()).await?;
    for _ in 0..STATUS_LOOKS {
        match &order.status {
            OrderStatus::Pending => {
                for authorization in &order.authorizations {
                    authorize(client, &account, authorization, bucket, publish_wait).await?;
                }
            }
            OrderStatus::Ready => {
                let (csr, key) = request(&settings.domains)?;
                account.finalize(client, &order.finalize, &csr).await?;
                return finish(client, &account, &url, key).await;
            }
            OrderStatus::Processing => tokio::time::sleep(STATUS_PAUSE).await,
            OrderStatus::Valid { .. } | OrderStatus::Invalid => {
                return Err(OrderError::Failed {
                    what: format!("order ended {:?}", order.status),
                    problem: Problem::of_order(&order),
                });
            }
        }
        order = account.order(client, &url).await?;
    }
    Err(OrderError::failed("order never became ready"))
}

/// Waits for a finalized order to become valid, then fetches its chain.
async fn finish(
    client: &Arc<rustls::ClientConfig>,
    account: &Account,
    url: &str,
    key: String,
) -> Result<String, OrderError> {
    for _ in 0..STATUS_LOOKS {
        let order = account.order(client, url).await?;
        match &order.status {
            OrderStatus::Valid { certificate } => {
                let chain = account.certificate(client, certificate).await?;
                return Ok(format!("{key}{chain}"));
            }
            OrderStatus::Processing | OrderStatus::Ready => tokio::time::sleep(STATUS_PAUSE).await,
            status => {
                return Err(OrderError::Failed {
                    what: format!("order ended {status:?}"),
                    problem: Problem::of_order(&order),
                });
            }
        }
    }
    Err(OrderError::failed("order never became valid"))
}

/// Answers one authorization with TLS-ALPN-01: the challenge certificate goes to the store,
/// every instance has `publish_wait` to load it, then the server is told to validate.
async fn authorize(
    client: &Arc<rustls::ClientConfig>,
    account: &Account,
    url: &str,
    bucket: &Bucket,
    publish_wait: Duration,
) -> Result<(), OrderError> {
    let auth = account.auth(client, url).await?;
    let domain = match (&auth.status, &auth.identifier) {
        (AuthStatus::Valid, _) => return Ok(()),
        (AuthStatus::Pending, Identifier::Dns(domain)) => domain.clone(),
        (status, _) => {
            return Err(OrderError::Failed {
                what: format!("authorization {status:?}"),
                problem: Problem::of_auth(&auth),
            });
        }
    };
    let challenge = auth
        .challenges
        .iter()
        .find(|c| matches!(c.typ, ChallengeType::TlsAlpn01))
        .ok_or(AcmeError::NoTlsAlpn01Challenge)?;
    let name = format!("{CHALLENGES}{domain}.pem");
    bucket
        .put(
            &name,
            challenge_certificate(account, &challenge.token, &domain)?.into_bytes(),
        )
        .await?;
    tokio::time::sleep(publish_wait).await;
    account.challenge(client, &challenge.url).await?;
    let outcome = settle(client, account, url).await;
    // Whatever happened, the challenge is not served again.
    bucket.delete(&name).await?;
    outcome
}

async fn settle(
    client: &Arc<rustls::ClientConfig>,
    account: &Account,
    url: &str,
) -> Result<(), OrderError> {
    for _ in 0..STATUS_LOOKS {
        let auth = account.auth(client, url).await?;
        match &auth.status {
            AuthStatus::Valid => return Ok(()),
            AuthStatus::Pending => tokio::time::sleep(STATUS_PAUSE).await,
            status => {
                return Err(OrderError::Failed {
                    what: format!("authorization ended {status:?}"),
                    problem: Problem::of_auth(&auth),
                });
            }
        }
    }
    Err(OrderError::failed("validation never completed"))
}

/// The account key from the store, or a new one put there: if two holders ever raced, the
/// conditional create lets one key win and the other reads it.
async fn account_key(bucket: &Bucket) -> Result<Vec<u8>, OrderError> {
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject;
    let pem = match bucket.get(ACCOUNT_KEY).await? {
        Some(stored) => stored.bytes.to_vec(),
        None => {
            let pem = KeyPair::generate()?.serialize_pem().into_bytes();
            let create = object_store::PutMode::Create;
            if bucket.put_mode(ACCOUNT_KEY, pem.clone(), create).await? {
                pem
            } else {
                let stored = bucket.get(ACCOUNT_KEY).await?;
                stored.ok_or(OrderError::AccountKey)?.bytes.to_vec()
            }
        }
    };
    PrivatePkcs8KeyDer::from_pem_slice(&pem)
        .map(|key| key.secret_pkcs8_der().to_vec())
        .map_err(|_| OrderError::AccountKey)
}

/// The self-signed certificate a TLS-ALPN-01 validation must be shown (RFC 8737 3): the name,
/// and the SHA-256 of the key authorization in a critical acmeIdentifier extension. Its key
/// and certificate as PEM, key first.
fn challenge_certificate(
    account: &Account,
    token: &str,
    domain: &str,
) -> Result<String, OrderError> {
    let authorization = format!("{token}.{}", thumbprint(account));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, authorization.as_bytes());
    let mut params = CertificateParams::new(vec![domain.to_owned()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok(format!("{}{}", key.serialize_pem(), certificate.pem()))
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
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        jwk.as_bytes(),
    ))
}

/// A certificate signing request for `domains` with a fresh key; the DER and the key as PEM.
fn request(domains: &[String]) -> Result<(Vec<u8>, String), OrderError> {
    let mut params = CertificateParams::new(domains.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    let key = KeyPair::generate()?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}
