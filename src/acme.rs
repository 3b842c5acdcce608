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

use crate::certs::{CertError, load_roots};
use crate::config::AcmeSettings;
use crate::host::HostPattern;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::tls::ManagedCertificates;

mod cache;

/// The names served over ACME and the resolver holding their certificate.
#[derive(Debug)]
pub struct Acme {
    resolver: Arc<ResolvesServerCertAcme>,
    domains: HashSet<String>,
    names: Arc<[HostPattern]>,
}

impl Acme {
    /// Starts ordering (or loading from the cache) in a background task.
    pub fn start(
        settings: &AcmeSettings,
        metrics: Arc<Metrics>,
        lifecycle: &Lifecycle,
    ) -> Result<Arc<Self>, CertError> {
        let config = match &settings.directory_ca {
            Some(ca) => {
                let client = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(CertError::UnsupportedKey)?
                .with_root_certificates(load_roots(ca)?)
                .with_no_client_auth();
                AcmeConfig::new_with_client_config(&settings.domains, Arc::new(client))
            }
            None => AcmeConfig::new(&settings.domains),
        };
        let state = config
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
        let names: Vec<HostPattern> = settings
            .domains
            .iter()
            .map(|d| HostPattern::Exact(d.clone()))
            .collect();
        Ok(Arc::new(Self {
            resolver,
            domains: settings.domains.iter().cloned().collect(),
            names: names.into(),
        }))
    }
}

impl ManagedCertificates for Acme {
    fn answers(&self, client_hello: &ClientHello<'_>) -> bool {
        is_tls_alpn_challenge(client_hello)
            || client_hello
                .server_name()
                .is_some_and(|sni| self.domains.contains(&sni.to_ascii_lowercase()))
    }

    fn names_for(&self, sni: Option<&str>) -> Option<Arc<[HostPattern]>> {
        let sni = sni?.to_ascii_lowercase();
        self.domains.contains(&sni).then(|| self.names.clone())
    }

    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.resolver.resolve(client_hello)
    }
}

/// Creates the cache directory private to us (it holds the account key) and proves it
/// writable, before anything is ordered into it.
pub fn prepare_cache_dir(dir: &Path) -> std::io::Result<()> {
    crate::secrets::create_private_dir(dir)?;
    let probe = dir.join(".portcullis-write-test");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}
