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
use rustls_acme::{AcmeConfig, EventOk, ResolvesServerCertAcme, is_tls_alpn_challenge};

use crate::certs::{CertError, load_roots, public_roots};
use crate::config::AcmeSettings;
use crate::host::HostPattern;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::tls::ManagedCertificates;

mod bucket;
mod cache;
mod order;
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
    lifecycle: &Lifecycle,
) -> Result<Arc<dyn ManagedCertificates>, SetupError> {
    let client = client_config(settings)?;
    let resolver: Arc<dyn ResolvesServerCert> = match &settings.store {
        Some(store) => shared::SharedAcme::start(settings, store, client, metrics, lifecycle)?,
        None => {
            prepare_cache_dir(&settings.cache_dir).map_err(|source| SetupError::CacheDir {
                dir: settings.cache_dir.clone(),
                source,
            })?;
            alone(settings, client, metrics, lifecycle)
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
    metrics: Arc<Metrics>,
    lifecycle: &Lifecycle,
) -> Arc<ResolvesServerCertAcme> {
    let state = AcmeConfig::new_with_client_config(&settings.domains, client)
        .contact(&settings.contact)
        .directory(&settings.directory)
        .cache(cache::PrivateDirCache::new(settings.cache_dir.clone()))
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

/// Creates the cache directory private to us (it holds the account key) and proves it
/// writable, before anything is ordered into it.
fn prepare_cache_dir(dir: &Path) -> std::io::Result<()> {
    crate::secrets::create_private_dir(dir)?;
    let probe = dir.join(".portcullis-write-test");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}
