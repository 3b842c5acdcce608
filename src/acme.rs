//! Certificates that manage themselves: rustls-acme orders and renews them with the TLS-ALPN-01
//! challenge on the HTTPS listener, so the plain listener keeps redirecting everything.
//!
//! The ACME state machine runs in its own task, apart from the accept loops; its events go to
//! the operational log and to metrics. Failures back off and retry inside rustls-acme while the
//! proxy keeps serving (the last good certificate, or none yet for those names: handshakes for
//! them fail until the first order completes, and the log says so).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_acme::{AcmeConfig, EventError, EventOk, ResolvesServerCertAcme, is_tls_alpn_challenge};

use crate::audit::{AcmeOutcome, Audit, AuditRecord, Timestamp};

use crate::certs::{CertError, load_roots, public_roots};
use crate::config::AcmeSettings;
use crate::host::HostPattern;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::tls::ManagedCertificates;

mod bucket;
mod cache;
mod order;
mod problem;
mod shared;

pub use bucket::StoreConnector;

/// Why ACME could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The directory's trust root could not be read.
    #[error("ACME setup failed: {0}")]
    Ca(#[from] CertError),
    /// The cache directory could not be made private to us.
    #[error("tls.acme.cache_dir: cannot use {}: {source}", dir.display())]
    CacheDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shared store's client could not be built.
    #[error("tls.acme.store: {0}")]
    Store(#[from] bucket::StoreError),
}

/// Starts ACME as configured: through the shared store when there is one, else this instance
/// alone with its cache directory.
pub fn start(
    settings: &AcmeSettings,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
    lifecycle: &Lifecycle,
) -> Result<Arc<dyn ManagedCertificates>, SetupError> {
    let client = client_config(settings)?;
    let mut report = Report {
        metrics: metrics.clone(),
        audit,
        domains: settings.domains.clone(),
        mode: "store",
    };
    let resolver: Arc<dyn ResolvesServerCert> = match &settings.store {
        Some(store) => {
            shared::SharedAcme::start(settings, store, client, metrics, report, lifecycle)?
        }
        None => {
            prepare_cache_dir(&settings.cache_dir).map_err(|source| SetupError::CacheDir {
                dir: settings.cache_dir.clone(),
                source,
            })?;
            report.mode = "single";
            alone(settings, client, report, lifecycle)
        }
    };
    Ok(Arc::new(Managed {
        domains: Domains::new(&settings.domains),
        resolver,
    }))
}

/// The client for the ACME directory: public roots, or the configured test CA's.
fn client_config(settings: &AcmeSettings) -> Result<Arc<rustls::ClientConfig>, CertError> {
    let roots = match &settings.directory_ca {
        Some(ca) => load_roots(ca)?,
        None => public_roots(),
    };
    Ok(Arc::new(
        crate::certs::client_config(roots).map_err(CertError::UnsupportedKey)?,
    ))
}

/// The names a certificate is ordered for, and the handshakes that therefore belong to ACME.
#[derive(Debug)]
struct Domains {
    set: HashSet<String>,
    names: Arc<[HostPattern]>,
}

impl Domains {
    fn new(domains: &[String]) -> Self {
        Self {
            set: domains.iter().cloned().collect(),
            names: domains
                .iter()
                .map(|d| HostPattern::Exact(d.clone()))
                .collect(),
        }
    }

    /// A validation handshake, or one for our names.
    fn answers(&self, client_hello: &ClientHello<'_>) -> bool {
        is_tls_alpn_challenge(client_hello)
            || client_hello
                .server_name()
                .is_some_and(|sni| self.set.contains(&sni.to_ascii_lowercase()))
    }

    fn names_for(&self, sni: Option<&str>) -> Option<Arc<[HostPattern]>> {
        let sni = sni?.to_ascii_lowercase();
        self.set.contains(&sni).then(|| self.names.clone())
    }
}

/// Certificates ordered for `domains`, by this instance or through the shared store: the
/// handshakes for those names, and validation handshakes, are answered by `resolver`.
#[derive(Debug)]
struct Managed {
    domains: Domains,
    resolver: Arc<dyn ResolvesServerCert>,
}

impl ManagedCertificates for Managed {
    fn answers(&self, client_hello: &ClientHello<'_>) -> bool {
        self.domains.answers(client_hello)
    }

    fn names_for(&self, sni: Option<&str>) -> Option<Arc<[HostPattern]>> {
        self.domains.names_for(sni)
    }

    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.resolver.resolve(client_hello)
    }
}

/// This instance's own ACME: rustls-acme's state machine ordering (or loading from the cache
/// directory) in a background task, and its resolver.
fn alone(
    settings: &AcmeSettings,
    client: Arc<rustls::ClientConfig>,
    report: Report,
    lifecycle: &Lifecycle,
) -> Arc<ResolvesServerCertAcme> {
    let metrics = report.metrics.clone();
    let cache = cache::PrivateDirCache::new(settings.cache_dir.clone(), metrics.clone());
    let state = AcmeConfig::new_with_client_config(&settings.domains, client)
        .contact(&settings.contact)
        .directory(&settings.directory)
        .cache(cache)
        .state();
    let resolver = state.resolver();
    tracing::info!(domains = ?settings.domains, "ACME: serving these names once a certificate is cached or issued");
    let stopping = lifecycle.draining.clone();
    lifecycle.tracker.spawn(async move {
        let mut state = state;
        loop {
            let event = tokio::select! {
                event = state.next() => event,
                () = stopping.cancelled() => return,
            };
            let Some(event) = event else { return };
            match event {
                Ok(ok) => {
                    let what = match ok {
                        EventOk::DeployedCachedCert => "deployed cached certificate",
                        EventOk::DeployedNewCert => "issued and deployed a new certificate",
                        EventOk::CertCacheStore => "stored certificate in cache",
                        EventOk::AccountCacheStore => "stored account in cache",
                    };
                    metrics.acme(what);
                    tracing::info!("ACME: {what}");
                    if matches!(ok, EventOk::DeployedNewCert) {
                        report.issued();
                    }
                }
                Err(EventError::Order(e)) => {
                    metrics.acme("failed");
                    let problem = problem::Problem::of_order_error(&e);
                    report.failed(&describe(&e), problem, "retrying with backoff");
                }
                Err(e) => {
                    metrics.acme("failed");
                    tracing::warn!("ACME: {e}; retrying with backoff");
                }
            }
        }
    });
    resolver
}

/// rustls-acme's order error in a few words: its own message prints whole ACME objects.
fn describe(error: &rustls_acme::OrderError) -> String {
    use rustls_acme::OrderError;
    match error {
        OrderError::BadAuth(auth) => format!("authorization ended {:?}", auth.status),
        OrderError::BadOrder(order) => format!("order ended {:?}", order.status),
        other => other.to_string(),
    }
}

/// Where an order's end goes: the metrics, the operational log, the audit trail.
#[derive(Debug, Clone)]
struct Report {
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
    domains: Vec<String>,
    /// `single` or `store`.
    mode: &'static str,
}

impl Report {
    fn record(&self, outcome: AcmeOutcome, error: String, problem: Option<problem::Problem>) {
        self.audit.record(AuditRecord::AcmeOrder {
            ts: Timestamp::now(),
            domains: self.domains.clone(),
            mode: self.mode.to_owned(),
            outcome,
            error,
            problem,
        });
    }

    fn issued(&self) {
        self.metrics.acme_order(true);
        self.record(AcmeOutcome::Issued, String::new(), None);
    }

    /// A failed order, with what the CA said about it when it said something; `retry` says
    /// what happens next.
    fn failed(&self, error: &str, problem: Option<problem::Problem>, retry: &str) {
        self.metrics.acme_order(false);
        match &problem {
            Some(said) => tracing::warn!(
                problem = %said.kind,
                "ACME: order failed: {error}; the CA said: {said}; {retry}"
            ),
            None => tracing::warn!("ACME: order failed: {error}; {retry}"),
        }
        self.record(AcmeOutcome::Failed, error.to_owned(), problem);
    }
}

/// Creates the cache directory private to us (it holds the account key) and proves it
/// writable, before anything is ordered into it.
fn prepare_cache_dir(dir: &Path) -> std::io::Result<()> {
    crate::secrets::create_private_dir(dir)?;
    let probe = dir.join(".portcullis-write-test");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}
