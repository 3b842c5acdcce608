//! Certificates shared by every instance through one object store (`[tls.acme.store]`), so that
//! exactly one instance orders and all of them serve.
//!
//! - **Follow** (every instance, every `poll`): load the certificate for our names and the
//!   published TLS-ALPN-01 challenge certificates from the store.
//! - **Lead** (every instance, every third of `lease`): take or keep the lease with a
//!   conditional write. The holder orders when the stored certificate is missing, names other
//!   names, or expires within `renew_before`; an order is abandoned the moment the lease is
//!   lost. A holder that stops renewing is replaced once its lease expires; one that shuts down
//!   hands it over at once.
//!
//! Whatever the store holds is checked before it is served, as a certificate file is: a key that
//! matches, a validity period that has begun and not ended, our names. Anything else is refused
//! (once a version, logged and counted) and the certificate in service kept; a certificate not
//! yet valid is looked at again at every poll.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_acme::is_tls_alpn_challenge;

use super::bucket::{Bucket, LeaseWatch, Read};
use super::order::{CHALLENGES, OrderError, order};
use crate::certs::{CertError, certificate_from_pem};
use crate::config::{AcmeSettings, AcmeStore};
use crate::lifecycle::Lifecycle;
use crate::logging::Throttle;
use crate::metrics::{Metrics, Source};

use super::Report;

/// The longest pause after failed orders.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// An order that has not finished in this long (an ACME server that stopped answering) is
/// abandoned and tried again later.
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a stopping holder tries to hand the lease over.
const RELEASE_WAIT: Duration = Duration::from_secs(2);
/// While the store cannot be reached, every instance would say so at every poll.
static STORE_FAILURES: Throttle = Throttle::new(Duration::from_secs(60));

/// The certificate and challenge certificates in service, as last read from the store.
#[derive(Debug)]
pub struct SharedAcme {
    certificate: ArcSwapOption<CertifiedKey>,
    challenges: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl SharedAcme {
    /// Starts following the store, and competing for the lease, in background tasks.
    pub fn start(
        settings: &AcmeSettings,
        store: &AcmeStore,
        client: Arc<rustls::ClientConfig>,
        metrics: Arc<Metrics>,
        report: Report,
        lifecycle: &Lifecycle,
    ) -> Result<Arc<Self>, super::bucket::StoreError> {
        let bucket = Bucket::open(store)?;
        let shared = Arc::new(Self {
            certificate: ArcSwapOption::empty(),
            challenges: ArcSwap::default(),
        });
        let object = certificate_object(settings);
        tracing::info!(domains = ?settings.domains, bucket = %store.bucket, %object, "ACME: certificates shared through the store");
        let stopping = lifecycle.draining.clone();
        let follower = Follower {
            shared: shared.clone(),
            bucket: bucket.clone(),
            object: object.clone(),
            domains: settings
                .domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            metrics: metrics.clone(),
            etag: None,
            refused: None,
        };
        let poll = store.poll;
        lifecycle.tracker.spawn({
            let stopping = stopping.clone();
            async move {
                let mut follower = follower;
                loop {
                    follower.look().await;
                    tokio::select! {
                        () = tokio::time::sleep(poll) => {}
                        () = stopping.cancelled() => return,
                    }
                }
            }
        });
        let leader = Leader {
            settings: settings.clone(),
            store: store.clone(),
            bucket,
            object,
            client,
            metrics,
            id: format!("{:016x}", fastrand::u64(..)),
            lease: LeaseWatch::default(),
            report,
        };
        lifecycle.tracker.spawn(async move {
            tokio::select! {
                () = leader.run() => {}
                () = stopping.cancelled() => {
                    // Handed over now rather than after `lease`: a rolling deploy stops holders.
                    let release = leader.bucket.release_lease(&leader.id);
                    match tokio::time::timeout(RELEASE_WAIT, release).await {
                        Ok(Ok(true)) => tracing::info!(instance = %leader.id, "ACME store: lease handed over"),
                        Ok(Err(e)) => unreachable_store(&e),
                        Ok(Ok(false)) | Err(_) => {}
                    }
                }
            }
        });
        Ok(shared)
    }
}

impl ResolvesServerCert for SharedAcme {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if is_tls_alpn_challenge(&client_hello) {
            let sni = client_hello.server_name()?.to_ascii_lowercase();
            return self.challenges.load().get(&sni).cloned();
        }
        self.certificate.load_full()
    }
}

/// Where the certificate for these names from this directory lives: a change of either is a
/// new object, never a certificate for other names.
fn certificate_object(settings: &AcmeSettings) -> String {
    let mut domains = settings.domains.clone();
    domains.sort();
    let identity = format!("{}\n{}", settings.directory, domains.join(","));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, identity.as_bytes());
    format!("certificates/{}.pem", hex::encode(&digest.as_ref()[..16]))
}

/// Loads what the store holds into [`SharedAcme`].
struct Follower {
    shared: Arc<SharedAcme>,
    bucket: Bucket,
    object: String,
    /// The names the certificate must cover, lowercase.
    domains: Vec<String>,
    metrics: Arc<Metrics>,
    /// The version of the certificate in service.
    etag: Option<String>,
    /// The version last refused, so that it is reported once.
    refused: Option<Option<String>>,
}

impl Follower {
    async fn look(&mut self) {
        if let Err(e) = self.certificate().await {
            unreachable_store(&e);
        }
        if let Err(e) = self.challenges().await {
            unreachable_store(&e);
        }
    }

    async fn certificate(&mut self) -> Result<(), super::bucket::StoreError> {
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
                self.shared.certificate.store(Some(entry.key));
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

    async fn challenges(&self) -> Result<(), super::bucket::StoreError> {
        let mut challenges = HashMap::new();
        for name in self.bucket.list(CHALLENGES).await? {
            let Some(domain) = name
                .strip_prefix(CHALLENGES)
                .and_then(|n| n.strip_suffix(".pem"))
            else {
                continue;
            };
            let domain = domain.to_ascii_lowercase();
            // Only for our names: nothing else is validated through us.
            if !self.domains.contains(&domain) {
                continue;
            }
            if let Some(object) = self.bucket.get(&name).await?
                && let Some(key) = challenge(&object.bytes)
            {
                challenges.insert(domain, Arc::new(key));
            }
        }
        self.shared.challenges.store(Arc::new(challenges));
        Ok(())
    }
}

/// Competes for the lease and, while holding it, keeps the certificate fresh.
struct Leader {
    settings: AcmeSettings,
    store: AcmeStore,
    bucket: Bucket,
    object: String,
    client: Arc<rustls::ClientConfig>,
    metrics: Arc<Metrics>,
    id: String,
    lease: LeaseWatch,
    report: Report,
}

impl Leader {
    async fn run(&self) {
        let tick = self.store.lease / 3;
        let mut holding = false;
        let mut held_until: Option<SystemTime> = None;
        let mut first = true;
        let mut failures = 0u32;
        let mut next_try = tokio::time::Instant::now();
        loop {
            let held = self.hold(&mut held_until).await.is_some();
            if held != holding {
                let what = match (held, first) {
                    (true, _) => "lease taken: this instance orders",
                    (false, true) => "lease held elsewhere",
                    (false, false) => "lease lost: another instance orders now",
                };
                tracing::info!(instance = %self.id, "ACME store: {what}");
                holding = held;
            }
            first = false;
            if holding && tokio::time::Instant::now() >= next_try && self.due().await {
                match self.order_holding_lease(tick, &mut held_until).await {
                    Ok(true) => failures = 0,
                    Ok(false) => holding = false,
                    Err(e) => {
                        failures += 1;
                        let pause = (tick * 2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF);
                        next_try = tokio::time::Instant::now() + pause;
                        self.metrics.acme("failed");
                        let retry = format!("next try in {}", humantime::format_duration(pause));
                        self.report.failed(&e.to_string(), e.problem(), &retry);
                    }
                }
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// Takes or keeps the lease: until when it is ours, or `None`. Kept only after it had run
    /// out (the process frozen, the store slow) is said once, as a warning: another instance
    /// could have taken it and ordered in between.
    async fn hold(&self, held_until: &mut Option<SystemTime>) -> Option<SystemTime> {
        let now = SystemTime::now();
        let until = match self
            .bucket
            .hold_lease(&self.id, self.store.lease, &self.lease)
            .await
        {
            Ok(until) => until,
            Err(e) => {
                unreachable_store(&e);
                None
            }
        };
        if let (Some(_), Some(Ok(late))) = (until, held_until.map(|u| now.duration_since(u))) {
            tracing::warn!(
                instance = %self.id,
                late = %humantime::format_duration(late),
                "ACME store: lease renewed late, after it had expired: another instance may have ordered meanwhile"
            );
        }
        *held_until = until;
        until
    }

    /// True when the stored certificate is missing, unreadable or expires within
    /// `renew_before`.
    async fn due(&self) -> bool {
        match self.bucket.get(&self.object).await {
            Ok(Some(object)) => {
                // Refused (expired ones included), or valid for less than `renew_before`.
                certificate_from_pem(&object.bytes, &self.settings.domains).map_or(true, |entry| {
                    entry
                        .not_after
                        .duration_since(SystemTime::now())
                        .is_ok_and(|left| left < self.store.renew_before)
                })
            }
            Ok(None) => true,
            Err(e) => {
                unreachable_store(&e);
                false
            }
        }
    }

    /// Orders while renewing the lease every `tick`; `Ok(false)` when the lease was lost and
    /// the order abandoned.
    async fn order_holding_lease(
        &self,
        tick: Duration,
        held_until: &mut Option<SystemTime>,
    ) -> Result<bool, OrderError> {
        tracing::info!(domains = ?self.settings.domains, "ACME: ordering");
        // Two polls: every follower has looked for the challenge at least once.
        let publish_wait = self.store.poll * 2 + Duration::from_millis(250);
        let ordering = tokio::time::timeout(
            ORDER_TIMEOUT,
            order(&self.client, &self.settings, &self.bucket, publish_wait),
        );
        let mut ordering = std::pin::pin!(ordering);
        loop {
            tokio::select! {
                pem = &mut ordering => {
                    let pem = pem.map_err(|_| {
                        OrderError::failed(format!(
                            "not finished in {}",
                            humantime::format_duration(ORDER_TIMEOUT)
                        ))
                    })??;
                    self.bucket.put(&self.object, pem.into_bytes()).await?;
                    self.metrics.acme("issued and deployed a new certificate");
                    self.report.issued();
                    tracing::info!("ACME: issued a new certificate and stored it for every instance");
                    return Ok(true);
                }
                () = tokio::time::sleep(tick) => {
                    if self.hold(held_until).await.is_none() {
                        tracing::warn!("ACME store: lease lost during an order; abandoned");
                        return Ok(false);
                    }
                }
            }
        }
    }
}

fn unreachable_store(error: &super::bucket::StoreError) {
    STORE_FAILURES.warn(|count| {
        tracing::warn!(
            count,
            "ACME store unreachable, serving what was last loaded: {error}"
        );
    });
}

/// A TLS-ALPN-01 challenge key and certificate, shown only to clients offering `acme-tls/1`.
/// Not checked as a certificate is: its critical acmeIdentifier extension (RFC 8737 3) is one
/// that rustls, rightly, will not parse for a served certificate.
fn challenge(pem: &[u8]) -> Option<CertifiedKey> {
    let key = PrivateKeyDer::from_pem_slice(pem).ok()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .ok()?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).ok()?;
    Some(CertifiedKey::new(chain, signer))
}
