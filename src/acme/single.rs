//! This instance alone: the account key and certificate in its private cache directory (the
//! files rustls-acme's directory cache names, so an existing cache keeps serving), challenges
//! answered from its own board or the DNS zone, renewals when [`Renewal`] says.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_acme::acme::Account;
use rustls_acme::{AccountCache, CertCache};
use tokio_util::sync::CancellationToken;

use super::cache::PrivateDirCache;
use super::challenge::Publish;
use super::directory::Ca;
use super::dns::Dns;
use super::failure::OrderError;
use super::order::Order;
use super::schedule::{Issued, Renewal, backoff};
use super::{Report, Served};
use crate::certs::certificate_from_pem;
use crate::config::AcmeSettings;

/// The longest sleep between two looks at the schedule, so that a clock that jumps is
/// noticed within it.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

pub struct Single {
    settings: AcmeSettings,
    client: Arc<rustls::ClientConfig>,
    cache: PrivateDirCache,
    served: Arc<Served>,
    dns: Option<Dns>,
    report: Report,
}

impl Single {
    pub fn new(
        settings: &AcmeSettings,
        client: Arc<rustls::ClientConfig>,
        cache: PrivateDirCache,
        served: Arc<Served>,
        dns: Option<Dns>,
        report: Report,
    ) -> Self {
        Self {
            settings: settings.clone(),
            client,
            cache,
            served,
            dns,
            report,
        }
    }

    /// Serves the cached certificate, then renews on schedule until `stopping`.
    pub async fn run(self, stopping: CancellationToken) {
        let mut current = self.load_cached().await;
        let mut renewal = Renewal::default();
        let mut ca: Option<Ca> = None;
        let mut failures = 0u32;
        let mut next_try = SystemTime::now();
        loop {
            let now = SystemTime::now();
            if ca.is_none() {
                ca = Ca::discover(&self.client, &self.settings.directory)
                    .await
                    .ok();
            }
            let due = match &current {
                Some(issued) => {
                    let (client, renew_before) = (&self.client, self.settings.renew_before);
                    self.report
                        .next_renewal(&mut renewal, client, ca.as_ref(), issued, renew_before, now)
                        .await
                }
                None => now,
            };
            let mut wake = due.max(next_try);
            if now >= due && now >= next_try {
                // An order in progress is abandoned at shutdown, not waited for.
                let ordered = tokio::select! {
                    ordered = self.order(ca.as_ref(), current.as_ref()) => ordered,
                    () = stopping.cancelled() => return,
                };
                match ordered {
                    Ok(issued) => {
                        current = Some(issued);
                        failures = 0;
                        continue;
                    }
                    Err(e) => {
                        failures += 1;
                        let pause = backoff(failures);
                        next_try = SystemTime::now() + pause;
                        wake = next_try;
                        // The directory is read again: it may be what changed.
                        ca = None;
                        self.report.metrics.acme("failed");
                        let retry = format!("next try in {}", humantime::format_duration(pause));
                        self.report.failed(&e.to_string(), e.problem(), &retry);
                    }
                }
            }
            if let Some(ask) = renewal.next_ask() {
                wake = wake.min(ask);
            }
            let sleep = wake
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .clamp(Duration::from_secs(1), LONGEST_SLEEP);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = stopping.cancelled() => return,
            }
        }
    }

    /// The cached certificate, put in service when it is still good for our names.
    async fn load_cached(&self) -> Option<Issued> {
        let (domains, directory) = (&self.settings.domains, &self.settings.directory);
        let pem = match self.cache.load_cert(domains, directory).await {
            Ok(pem) => pem?,
            Err(e) => {
                tracing::warn!("ACME: cannot read the cached certificate: {e}");
                return None;
            }
        };
        match self.deploy(&pem) {
            Ok(issued) => {
                self.report.metrics.acme("deployed cached certificate");
                tracing::info!("ACME: deployed cached certificate");
                Some(issued)
            }
            Err(e) => {
                tracing::warn!("ACME: the cached certificate cannot be served ({e}); ordering");
                None
            }
        }
    }

    /// Puts `pem` in service; what is known of it for renewal.
    fn deploy(&self, pem: &[u8]) -> Result<Issued, OrderError> {
        let entry = certificate_from_pem(pem, &self.settings.domains)
            .map_err(|e| OrderError::failed(format!("the new certificate: {e}")))?;
        let issued = entry
            .key
            .end_entity_cert()
            .ok()
            .and_then(|leaf| Issued::of(leaf))
            .ok_or_else(|| OrderError::failed("the new certificate is unreadable"))?;
        self.served.certificate.store(Some(entry.key));
        Ok(issued)
    }

    async fn order(&self, ca: Option<&Ca>, current: Option<&Issued>) -> Result<Issued, OrderError> {
        let account_key = self.account_key().await?;
        let publish: &dyn Publish = match &self.dns {
            Some(dns) => dns,
            None => &self.served.board,
        };
        tracing::info!(domains = ?self.settings.domains, "ACME: ordering");
        let order = Order {
            client: &self.client,
            settings: &self.settings,
            ca,
            account_key: &account_key,
            publish,
            current,
        };
        let pem = super::order::within_time(order.run()).await?;
        let (domains, directory) = (&self.settings.domains, &self.settings.directory);
        self.cache
            .store_cert(domains, directory, pem.as_bytes())
            .await
            .map_err(|e| OrderError::failed(format!("cache: {e}")))?;
        let issued = self.deploy(pem.as_bytes())?;
        self.report
            .metrics
            .acme("issued and deployed a new certificate");
        self.report.issued();
        tracing::info!("ACME: issued and deployed a new certificate");
        Ok(issued)
    }

    /// The account key from the cache, or a new one stored there first.
    async fn account_key(&self) -> Result<Vec<u8>, OrderError> {
        let (contact, directory) = (&self.settings.contact, &self.settings.directory);
        let cache_failed = |e: std::io::Error| OrderError::failed(format!("cache: {e}"));
        if let Some(key) = self
            .cache
            .load_account(contact, directory)
            .await
            .map_err(cache_failed)?
        {
            return Ok(key);
        }
        let key = Account::generate_key_pair();
        self.cache
            .store_account(contact, directory, &key)
            .await
            .map_err(cache_failed)?;
        self.report.metrics.acme("stored account in cache");
        Ok(key)
    }
}
