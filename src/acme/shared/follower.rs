//! What every instance does with the store: loads the certificate and the challenges' answers
//! published there ([`Follower`]), and, as the lease holder, publishes them ([`StoreBoard`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::super::Served;
use super::super::bucket::{Bucket, Read, StoreError};
use super::super::challenge::{Answer, Publish, challenge_key};
use super::super::failure::OrderError;
use super::super::order::CHALLENGES;
use crate::certs::{CertError, certificate_from_pem};
use crate::metrics::{Metrics, Source};

/// Where HTTP-01 key authorizations are published, by token.
const HTTP_CHALLENGES: &str = "challenges/http-01/";

/// Loads what the store holds into what this instance serves.
pub struct Follower {
    served: Arc<Served>,
    bucket: Bucket,
    object: String,
    /// The names the certificate must cover.
    domains: Vec<String>,
    metrics: Arc<Metrics>,
    /// The version of the certificate in service.
    etag: Option<String>,
    /// The version last refused, so that it is reported once.
    refused: Option<Option<String>>,
}

impl Follower {
    pub fn new(
        served: Arc<Served>,
        bucket: Bucket,
        object: String,
        domains: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            served,
            bucket,
            object,
            domains,
            metrics,
            etag: None,
            refused: None,
        }
    }

    /// One look at the store; what cannot be read now is looked for again next time.
    pub async fn look(&mut self) {
        if let Err(e) = self.certificate().await {
            super::unreachable_store(&e);
        }
        if let Err(e) = self.challenges().await {
            super::unreachable_store(&e);
        }
    }

    async fn certificate(&mut self) -> Result<(), StoreError> {
        // One known version at a time: the etag of what is in service.
        let known = self.etag.as_deref();
        let Read::Changed(object) = self.bucket.get_if_changed(&self.object, known).await? else {
            return Ok(());
        };
        let etag = object.version.e_tag;
        match certificate_from_pem(&object.bytes, &self.domains) {
            Ok(entry) => {
                let names = entry.names.iter().map(ToString::to_string).collect();
                self.metrics
                    .certificates(Source::Acme, &[(names, entry.not_after)]);
                self.served.certificate.store(Some(entry.key));
                self.metrics.acme("deployed stored certificate");
                tracing::info!("ACME: deployed the certificate from the store");
                self.etag = etag;
            }
            Err(reason) => {
                if self.refused.as_ref() != Some(&etag) {
                    self.metrics.acme("refused stored certificate");
                    tracing::warn!(object = %self.object, "ACME store: refused the stored certificate, keeping the one in service: {reason}");
                }
                // One not valid yet will be: looked at again at the next poll.
                if !matches!(reason, CertError::NotYetValid(_)) {
                    self.etag = etag.clone();
                }
                self.refused = Some(etag);
            }
        }
        Ok(())
    }

    async fn challenges(&self) -> Result<(), StoreError> {
        let ours = |name: &str| {
            let name = name.to_ascii_lowercase();
            self.domains.contains(&name)
        };
        let (mut tls_alpn, mut http) = (HashMap::new(), HashMap::new());
        for name in self.bucket.list(CHALLENGES).await? {
            if let Some(token) = name.strip_prefix(HTTP_CHALLENGES) {
                if base64url(token)
                    && let Some(object) = self.bucket.get(&name).await?
                    && let Some(value) = key_authorization(token, &object.bytes)
                {
                    http.insert(token.to_owned(), Arc::from(value));
                }
                continue;
            }
            let Some(domain) = name
                .strip_prefix(CHALLENGES)
                .and_then(|n| n.strip_suffix(".pem"))
            else {
                continue;
            };
            // Only for our names: nothing else is validated through us.
            if !ours(domain) {
                continue;
            }
            if let Some(object) = self.bucket.get(&name).await?
                && let Some(key) = challenge_key(&object.bytes)
            {
                tls_alpn.insert(domain.to_ascii_lowercase(), Arc::new(key));
            }
        }
        self.served.board.replace(tls_alpn, http);
        Ok(())
    }
}

/// A token or thumbprint: base64url (RFC 8555 8.1), never a path.
fn base64url(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the plain listener may serve for `token`: its key authorization (RFC 8555 8.1,
/// `token.thumbprint`, the thumbprint a SHA-256 in base64url), and nothing else an object in
/// the store might hold, so that no page or script is ever served from our names.
fn key_authorization<'a>(token: &str, bytes: &'a [u8]) -> Option<&'a str> {
    let value = std::str::from_utf8(bytes).ok()?;
    let (head, thumbprint) = value.split_once('.')?;
    (head == token && thumbprint.len() == 43 && base64url(thumbprint)).then_some(value)
}

/// Answers published in the store for every instance, which each has `wait` to load.
pub struct StoreBoard<'a> {
    bucket: &'a Bucket,
    wait: Duration,
}

impl<'a> StoreBoard<'a> {
    pub fn new(bucket: &'a Bucket, wait: Duration) -> Self {
        Self { bucket, wait }
    }

    fn object(answer: &Answer) -> Option<String> {
        match answer {
            Answer::TlsAlpn { domain, .. } => Some(format!("{CHALLENGES}{domain}.pem")),
            Answer::Http { token, .. } => Some(format!("{HTTP_CHALLENGES}{token}")),
            Answer::Dns { .. } => None,
        }
    }
}

#[async_trait]
impl Publish for StoreBoard<'_> {
    async fn show(&self, answer: &Answer) -> Result<(), OrderError> {
        let (Some(name), bytes) = (
            Self::object(answer),
            match answer {
                Answer::TlsAlpn { pem, .. } => pem.clone().into_bytes(),
                Answer::Http {
                    key_authorization, ..
                } => key_authorization.clone().into_bytes(),
                Answer::Dns { .. } => Vec::new(),
            },
        ) else {
            return Err(OrderError::failed("DNS-01 needs [tls.acme.dns]"));
        };
        self.bucket.put(&name, bytes).await?;
        tokio::time::sleep(self.wait).await;
        Ok(())
    }

    async fn withdraw(&self, answer: &Answer) -> Result<(), OrderError> {
        if let Some(name) = Self::object(answer) {
            self.bucket.delete(&name).await?;
        }
        Ok(())
    }
}
