//! One ACME order, with rustls-acme's ACME client (`rustls_acme::acme`): the challenge's
//! answers published where the CA will look (this instance's board, the shared store so that
//! whichever instance the validation reaches answers it, or a DNS zone), and the new
//! certificate returned for the cache or the store.
//!
//! rustls-acme's own order loop keeps its challenge keys in one process's memory, which is what
//! a balancer in front of several instances defeats, and knows neither DNS-01, profiles nor
//! renewal information (RFC 9773); its client does the protocol.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls_acme::acme::{
    Account, AcmeError, AuthStatus, ChallengeType, Identifier, Order as RawOrder, OrderStatus,
};

use super::bucket::Bucket;
use super::challenge::{Answer, Publish};
use super::directory::Ca;
use super::failure::OrderError;
use super::problem::Problem;
use super::schedule::Issued;
use crate::config::{AcmeSettings, Challenge};

/// The account key object: PKCS#8, PEM.
pub const ACCOUNT_KEY: &str = "account.key";
/// Where challenge answers are published: TLS-ALPN-01 certificates as `NAME.pem`, HTTP-01
/// key authorizations under `http-01/TOKEN`.
pub const CHALLENGES: &str = "challenges/";
/// Pauses between looks at an order or authorization in progress, and how many to make.
const STATUS_PAUSE: Duration = Duration::from_secs(1);
const STATUS_LOOKS: u32 = 120;
/// An order that has not finished in this long (an ACME server that stopped answering) is
/// abandoned and tried again later.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(600);

/// One order: who asks, for what, and where the answers go.
pub struct Order<'a> {
    pub client: &'a Arc<rustls::ClientConfig>,
    pub settings: &'a AcmeSettings,
    /// The CA's directory as last read; read again when there is none.
    pub ca: Option<&'a Ca>,
    /// The account key, PKCS#8 DER.
    pub account_key: &'a [u8],
    /// Where the CA is shown the answers.
    pub publish: &'a dyn Publish,
    /// The certificate in service, which the new one replaces (RFC 9773 5).
    pub current: Option<&'a Issued>,
}

impl Order<'_> {
    /// Orders a certificate for `settings.domains`; returns the private key and chain as
    /// PEM, in the format rustls-acme's caches use (key first).
    pub async fn run(&self) -> Result<String, OrderError> {
        let client = self.client;
        let ca = match self.ca {
            Some(ca) => ca.clone(),
            None => Ca::discover(client, &self.settings.directory).await?,
        };
        let account = Account::create_with_keypair(
            client,
            ca.directory.clone(),
            &self.settings.contact,
            self.account_key,
        )
        .await?;
        let (url, mut order) = self.new_order(&ca, &account).await?;
        for _ in 0..STATUS_LOOKS {
            match &order.status {
                OrderStatus::Pending => {
                    for authorization in &order.authorizations {
                        self.authorize(&account, authorization).await?;
                    }
                }
                OrderStatus::Ready => {
                    let (csr, key) = request(&self.settings.domains)?;
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

    /// newOrder with what rustls-acme's cannot say: the profile, and which certificate this
    /// one replaces.
    async fn new_order(
        &self,
        ca: &Ca,
        account: &Account,
    ) -> Result<(String, RawOrder), OrderError> {
        let identifiers: Vec<Identifier> = self
            .settings
            .domains
            .iter()
            .cloned()
            .map(Identifier::Dns)
            .collect();
        let mut payload = serde_json::json!({ "identifiers": identifiers });
        if let Some(profile) = &self.settings.profile {
            if !ca.profiles.contains(profile) {
                return Err(OrderError::failed(format!(
                    "the CA offers no profile {profile:?} (it offers {:?})",
                    ca.profiles
                )));
            }
            payload["profile"] = profile.as_str().into();
        }
        // Only to a CA that offers renewal information: another may refuse the field.
        let replaces = self.current.and_then(|issued| issued.cert_id.as_deref());
        if let Some(replaces) = replaces.filter(|_| ca.renewal_info.is_some()) {
            payload["replaces"] = replaces.into();
        }
        let payload = payload.to_string();
        let new_order = &ca.directory.new_order;
        let (url, body) = account.request(self.client, new_order, &payload).await?;
        let url = url.ok_or(AcmeError::MissingHeader("Location"))?;
        let order = serde_json::from_str(&body).map_err(AcmeError::from)?;
        Ok((url, order))
    }

    /// Answers one authorization with the configured challenge: the answer is published,
    /// the CA told to validate, and the answer withdrawn whatever the outcome.
    async fn authorize(&self, account: &Account, url: &str) -> Result<(), OrderError> {
        let client = self.client;
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
        let kind = self.settings.challenge;
        let wanted = match kind {
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::Dns01 => ChallengeType::Dns01,
        };
        let challenge = auth
            .challenges
            .iter()
            .find(|c| c.typ == wanted)
            .ok_or_else(|| {
                OrderError::failed(format!("the CA offers no {} challenge", kind.name()))
            })?;
        let answer = Answer::new(kind, account, &challenge.token, &domain)?;
        self.publish.show(&answer).await?;
        let outcome = match account.challenge(client, &challenge.url).await {
            Ok(()) => settle(client, account, url).await,
            Err(e) => Err(e.into()),
        };
        // Whatever happened, the answer is not shown again.
        self.publish.withdraw(&answer).await?;
        outcome
    }
}

/// `ordering`, abandoned after [`ORDER_TIMEOUT`].
pub async fn within_time(
    ordering: impl Future<Output = Result<String, OrderError>>,
) -> Result<String, OrderError> {
    tokio::time::timeout(ORDER_TIMEOUT, ordering)
        .await
        .map_err(|_| {
            OrderError::failed(format!(
                "not finished in {}",
                humantime::format_duration(ORDER_TIMEOUT)
            ))
        })?
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
pub async fn account_key(bucket: &Bucket) -> Result<Vec<u8>, OrderError> {
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

/// A certificate signing request for `domains` with a fresh key; the DER and the key as PEM.
fn request(domains: &[String]) -> Result<(Vec<u8>, String), OrderError> {
    let mut params = CertificateParams::new(domains.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    let key = KeyPair::generate()?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}
