//! Certificates that manage themselves: ordered and renewed over ACME with the configured
//! challenge (TLS-ALPN-01 on the HTTPS listener, HTTP-01 on the plain one, DNS-01 through the
//! zone's primary), when the CA suggests (RFC 9773) or `renew_before` says.
//!
//! The renewal loop runs in its own task, apart from the accept loops: this instance alone
//! (`single`, its cache directory) or the lease holder of several (`shared`, an object store).
//! Its events go to the operational log, the audit trail and metrics. Failures back off and
//! retry while the proxy keeps serving (the last good certificate, or none yet for those names:
//! handshakes for them fail until the first order completes, and the log says so).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_acme::is_tls_alpn_challenge;

use crate::audit::{AcmeOutcome, Audit, AuditRecord, Timestamp};

use crate::certs::{CertError, load_roots, public_roots};
use crate::config::AcmeSettings;
use crate::host::HostPattern;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::tls::ManagedCertificates;

mod ari;
mod bucket;
mod cache;
mod challenge;
mod directory;
mod dns;
mod failure;
mod https;
mod order;
mod problem;
mod schedule;
mod shared;
mod single;

pub use bucket::StoreConnector;
pub use directory::Ca;
pub use schedule::{Issued, Renewal};

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
    /// The DNS-01 provider could not be set up.
    #[error(transparent)]
    Dns(#[from] dns::DnsSetupError),
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
    let served = Arc::new(Served::default());
    let dns = settings.dns.as_ref().map(dns::Dns::new).transpose()?;
    let mut report = Report {
        metrics: metrics.clone(),
        audit,
        domains: settings.domains.clone(),
        mode: "store",
        challenge: settings.challenge.name(),
    };
    tracing::info!(domains = ?settings.domains, challenge = settings.challenge.name(), "ACME: serving these names once a certificate is cached or issued");
    match &settings.store {
        Some(store) => shared::start(
            settings,
            store,
            client,
            served.clone(),
            dns,
            report,
            lifecycle,
        )?,
        None => {
            prepare_cache_dir(&settings.cache_dir).map_err(|source| SetupError::CacheDir {
                dir: settings.cache_dir.clone(),
                source,
            })?;
            report.mode = "single";
            let cache = cache::PrivateDirCache::new(settings.cache_dir.clone(), metrics);
            let single = single::Single::new(settings, client, cache, served.clone(), dns, report);
            let stopping = lifecycle.draining.clone();
            lifecycle.tracker.spawn(single.run(stopping));
        }
    }
    Ok(Arc::new(Managed {
        domains: Domains::new(&settings.domains),
        served,
    }))
}

/// The client for the ACME directory: public roots, or the configured test CA's.
fn client_config(settings: &AcmeSettings) -> Result<Arc<rustls::ClientConfig>, CertError> {
    let roots = match &settings.directory_ca {
        Some(ca) => load_roots(ca)?,
        None => public_roots(),
    };
    let mut config = crate::certs::client_config(roots).map_err(CertError::UnsupportedKey)?;
    // ACME requests are minutes apart, so a resumed session saves nothing; and rustls keeps
    // sessions by name, not port, so a CA's directory and renewal information served from
    // one address on two ports would be offered each other's sessions.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// What this instance serves for its ACME names: the certificate, and the challenges of an
/// order in progress.
#[derive(Debug, Default)]
struct Served {
    certificate: ArcSwapOption<CertifiedKey>,
    board: challenge::Board,
}

impl ResolvesServerCert for Served {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if is_tls_alpn_challenge(&client_hello) {
            let sni = client_hello.server_name()?.to_ascii_lowercase();
            return self.board.tls_alpn(&sni);
        }
        self.certificate.load_full()
    }
}

/// The names a certificate is ordered for, and the handshakes that therefore belong to ACME.
#[derive(Debug)]
struct Domains {
    names: Arc<[HostPattern]>,
}

impl Domains {
    fn new(domains: &[String]) -> Self {
        Self {
            names: domains
                .iter()
                .filter_map(|d| HostPattern::parse(d).ok())
                .collect(),
        }
    }

    fn covers(&self, name: &str) -> bool {
        crate::host::any_covers(&self.names, &name.to_ascii_lowercase())
    }

    /// A validation handshake, or one for our names.
    fn answers(&self, client_hello: &ClientHello<'_>) -> bool {
        is_tls_alpn_challenge(client_hello)
            || client_hello
                .server_name()
                .is_some_and(|sni| self.covers(sni))
    }

    fn names_for(&self, sni: Option<&str>) -> Option<Arc<[HostPattern]>> {
        self.covers(sni?).then(|| self.names.clone())
    }
}

/// Certificates ordered for `domains`, by this instance or through the shared store: the
/// handshakes for those names, validation handshakes and HTTP-01 validations are answered
/// from what is `served`.
#[derive(Debug)]
struct Managed {
    domains: Domains,
    served: Arc<Served>,
}

impl ManagedCertificates for Managed {
    fn answers(&self, client_hello: &ClientHello<'_>) -> bool {
        self.domains.answers(client_hello)
    }

    fn names_for(&self, sni: Option<&str>) -> Option<Arc<[HostPattern]>> {
        self.domains.names_for(sni)
    }

    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.served.resolve(client_hello)
    }

    fn http_challenge(&self, host: &str, token: &str) -> Option<Arc<str>> {
        // Only for our names: nothing else is validated through us.
        self.domains
            .covers(host)
            .then(|| self.served.board.http(token))
            .flatten()
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
    /// The challenge's name.
    challenge: &'static str,
}

impl Report {
    /// When `issued` is next renewed, as `renewal` judges it at `now` (at or before `now`:
    /// renew); said in the metrics.
    async fn next_renewal(
        &self,
        renewal: &mut Renewal,
        client: &Arc<rustls::ClientConfig>,
        ca: Option<&Ca>,
        issued: &Issued,
        renew_before: std::time::Duration,
        now: std::time::SystemTime,
    ) -> std::time::SystemTime {
        let at = renewal.when(client, ca, issued, renew_before, now).await;
        self.metrics
            .certificate_renewal(&self.domains, at, self.challenge);
        at
    }

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
fn prepare_cache_dir(dir: &std::path::Path) -> std::io::Result<()> {
    crate::secrets::create_private_dir(dir)?;
    let probe = dir.join(".portcullis-write-test");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}
