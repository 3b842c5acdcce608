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

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::bucket::{Bucket, LeaseWatch};
use super::challenge::Publish;
use super::directory::Ca;
use super::dns::Dns;
use super::failure::OrderError;
use super::order::{Order, account_key, within_time};
use super::schedule::{Issued, Renewal};
use super::{Report, Served};
use crate::certs::certificate_from_pem;
use crate::config::{AcmeSettings, AcmeStore};
use crate::lifecycle::Lifecycle;
use crate::logging::Throttle;

mod follower;

use follower::{Follower, StoreBoard};

/// The longest pause after failed orders.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a stopping holder tries to hand the lease over.
const RELEASE_WAIT: Duration = Duration::from_secs(2);
/// While the store cannot be reached, every instance would say so at every poll.
static STORE_FAILURES: Throttle = Throttle::new(Duration::from_secs(60));

/// Starts following the store into `served`, and competing for the lease, in background
/// tasks.
pub fn start(
    settings: &AcmeSettings,
    store: &AcmeStore,
    client: Arc<rustls::ClientConfig>,
    served: Arc<Served>,
    dns: Option<Dns>,
    report: Report,
    lifecycle: &Lifecycle,
) -> Result<(), super::bucket::StoreError> {
    let bucket = Bucket::open(store)?;
    let object = certificate_object(settings);
    tracing::info!(domains = ?settings.domains, bucket = %store.bucket, %object, "ACME: certificates shared through the store");
    let stopping = lifecycle.draining.clone();
    let metrics = report.metrics.clone();
    let follower = Follower::new(
        served,
        bucket.clone(),
        object.clone(),
        settings.domains.clone(),
        metrics.clone(),
    );
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
        dns,
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
    Ok(())
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

/// Competes for the lease and, while holding it, keeps the certificate fresh.
struct Leader {
    settings: AcmeSettings,
    store: AcmeStore,
    bucket: Bucket,
    object: String,
    client: Arc<rustls::ClientConfig>,
    dns: Option<Dns>,
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
        let mut renewal = Renewal::default();
        let mut ca: Option<Ca> = None;
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
            if !holding {
                tokio::time::sleep(tick).await;
                continue;
            }
            if ca.is_none() {
                ca = Ca::discover(&self.client, &self.settings.directory)
                    .await
                    .ok();
            }
            let stored = self.stored().await;
            let due = match &stored {
                Stored::Good(issued) => {
                    let (client, renew_before) = (&self.client, self.settings.renew_before);
                    let (report, now) = (&self.report, SystemTime::now());
                    let at = report
                        .next_renewal(&mut renewal, client, ca.as_ref(), issued, renew_before, now)
                        .await;
                    at <= now
                }
                Stored::Missing => true,
                Stored::Unknown => false,
            };
            if due && tokio::time::Instant::now() >= next_try {
                let current = match &stored {
                    Stored::Good(issued) => Some(issued),
                    _ => None,
                };
                match self
                    .order_holding_lease(tick, &mut held_until, ca.as_ref(), current)
                    .await
                {
                    Ok(true) => failures = 0,
                    Ok(false) => holding = false,
                    Err(e) => {
                        failures += 1;
                        let pause = (tick * 2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF);
                        next_try = tokio::time::Instant::now() + pause;
                        ca = None;
                        self.report.metrics.acme("failed");
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

    /// What the store holds for our names: a certificate good to serve, none (or one that
    /// cannot be served: ordered again), or unknown while the store cannot be read.
    async fn stored(&self) -> Stored {
        match self.bucket.get(&self.object).await {
            Ok(Some(object)) => certificate_from_pem(&object.bytes, &self.settings.domains)
                .ok()
                .and_then(|entry| Issued::of(entry.key.end_entity_cert().ok()?))
                .map_or(Stored::Missing, Stored::Good),
            Ok(None) => Stored::Missing,
            Err(e) => {
                unreachable_store(&e);
                Stored::Unknown
            }
        }
    }

    /// Orders while renewing the lease every `tick`; `Ok(false)` when the lease was lost and
    /// the order abandoned.
    async fn order_holding_lease(
        &self,
        tick: Duration,
        held_until: &mut Option<SystemTime>,
        ca: Option<&Ca>,
        current: Option<&Issued>,
    ) -> Result<bool, OrderError> {
        tracing::info!(domains = ?self.settings.domains, "ACME: ordering");
        let key = account_key(&self.bucket).await?;
        // Two polls: every follower has looked for the challenge at least once.
        let board = StoreBoard::new(
            &self.bucket,
            self.store.poll * 2 + Duration::from_millis(250),
        );
        let publish: &dyn Publish = match &self.dns {
            Some(dns) => dns,
            None => &board,
        };
        let order = Order {
            client: &self.client,
            settings: &self.settings,
            ca,
            account_key: &key,
            publish,
            current,
        };
        let ordering = within_time(order.run());
        let mut ordering = std::pin::pin!(ordering);
        loop {
            tokio::select! {
                pem = &mut ordering => {
                    self.bucket.put(&self.object, pem?.into_bytes()).await?;
                    self.report.metrics.acme("issued and deployed a new certificate");
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

/// The certificate in the store, as the holder sees it.
enum Stored {
    Good(Issued),
    Missing,
    Unknown,
}

pub(super) fn unreachable_store(error: &super::bucket::StoreError) {
    STORE_FAILURES.warn(|count| {
        tracing::warn!(
            count,
            "ACME store unreachable, serving what was last loaded: {error}"
        );
    });
}
