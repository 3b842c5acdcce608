//! Who owns the serving state. [`Process`] is what lives as long as the process, built once at
//! start: the log and audit writers, the metrics, the session-ticket keys, the MFA memory, the
//! ACME account. [`App`] is one configuration's generation: compiled routes, certificates, TLS
//! and HTTP settings, the gateway, limits. A reload builds a new `App` and swaps it into the one
//! [`LiveApp`]; everything that serves reads the generation through that handle.

mod http1;
mod jwks;
mod routes;
mod trust;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;

pub use http1::Http1;
pub use jwks::publish as publish_jwks;
pub use trust::withdrawn;

use crate::access_log::AccessLog;
use crate::audit::Audit;
use crate::config::{
    AcmeSettings, AdminSettings, Config, Grant, HealthSettings, Limits, Listen, SharedSettings,
};
use crate::gateway::{AccessGrants, Assertions, Gateway, Kept, MfaState};
use crate::metrics::{Metrics, Source};
use crate::networks::ClientFilter;
use crate::rate_limit::{Limiter, RateLimits};
use crate::routing::Routes;
use crate::tls::{ManagedCertificates, SniResolver, TlsConfigs};

/// The generation in service. A reload swaps it; every request loads it when it arrives, so a
/// removed grant or a revoked certificate counts from the next request on, also on connections
/// opened before the reload.
pub type LiveApp = Arc<ArcSwap<App>>;

/// Certificates closer than this to expiry are warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// What outlives a reload: built once at start, shared by every generation.
#[derive(Debug, Clone)]
pub struct Process {
    /// The access-log writer.
    pub access_log: Arc<AccessLog>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Rotating session-ticket keys, so that clients keep resuming across reloads.
    pub ticketer: Arc<dyn rustls::server::ProducesTickets>,
    /// The ACME account, when certificates are ordered.
    pub acme: Option<Arc<dyn ManagedCertificates>>,
    /// MFA session key and used codes.
    pub mfa: Arc<MfaState>,
    /// The keys that sign `Portcullis-Assertion`.
    pub assertions: Arc<Assertions>,
    /// The grants of approved access requests, re-read from their file.
    pub access_grants: Arc<AccessGrants>,
    /// The audit trail.
    pub audit: Arc<Audit>,
    /// Rate limiters, kept across reloads.
    pub rate_limits: Arc<RateLimits>,
}

/// The sections a generation was started with and a reload may not change: sockets, the admin
/// listener, the ACME account and the state shared with other instances are the process's.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixed {
    listen: Listen,
    admin: Option<AdminSettings>,
    health: Option<HealthSettings>,
    acme: Option<AcmeSettings>,
    shared: SharedSettings,
}

impl Fixed {
    /// Who admin requests must come from over mutual TLS; empty: plain HTTP on loopback.
    pub fn admin_allow(&self) -> &[Grant] {
        self.admin.as_ref().map_or(&[], |admin| &admin.allow)
    }

    /// The fixed sections of `config`.
    pub fn of(config: &Config) -> Self {
        Self {
            listen: config.listen.clone(),
            admin: config.admin.clone(),
            health: config.health.clone(),
            acme: config.acme.clone(),
            shared: config.shared.clone(),
        }
    }
}

/// One configuration's serving state, read-only once built.
#[derive(Debug)]
pub struct App {
    /// Host and prefix -> route.
    pub routes: Arc<Routes>,
    /// The certificates in service.
    pub certs: Arc<SniResolver>,
    /// TLS settings by SNI.
    pub tls: TlsConfigs,
    /// HTTP/1.1 settings of new connections.
    pub http1: Http1,
    /// The `Strict-Transport-Security` value.
    pub hsts: HeaderValue,
    /// Limits and timeouts.
    pub limits: Limits,
    /// The port written into redirect locations.
    pub public_https_port: u16,
    /// The gateway, when internal routes exist.
    pub gateway: Option<Arc<Gateway>>,
    /// Clients closed at accept, before any byte is read.
    pub refused_clients: ClientFilter,
    /// New connections per client address; beyond it they are closed at accept.
    pub connection_rate: Option<Arc<Limiter>>,
    /// What a reload may not change.
    pub fixed: Fixed,
    /// The process this generation serves in.
    pub process: Process,
}

impl App {
    /// Compiles routes, builds upstream pools and TLS settings, and reports certificates close
    /// to expiry and revocation lists past theirs. `bound_https_port` is used for redirects
    /// when the config does not name a public port.
    pub fn new(
        config: &Config,
        bound_https_port: u16,
        process: &Process,
    ) -> Result<Self, rustls::Error> {
        let gateway = match config.gateway.clone() {
            Some(settings) => Some(Arc::new(Gateway::new(
                settings,
                Kept {
                    mfa: process.mfa.clone(),
                    audit: process.audit.clone(),
                    assertions: process.assertions.clone(),
                    access_grants: process.access_grants.clone(),
                    rate_limits: process.rate_limits.clone(),
                },
            )?)),
            None => None,
        };
        let certs = Arc::new(SniResolver::new(
            config.certificates.clone(),
            process.acme.clone(),
        ));
        let tls = TlsConfigs::new(
            certs.clone(),
            process.ticketer.clone(),
            config.gateway.as_ref(),
            &config.routes,
            &config.tunnels,
        )?;
        report_expiry(config, &process.metrics);
        Ok(Self {
            routes: Arc::new(routes::compile(
                config,
                &process.metrics,
                &process.rate_limits,
            )),
            connection_rate: config
                .connection_rate
                .map(|rate| process.rate_limits.limiter("connections", rate)),
            gateway,
            refused_clients: ClientFilter::new(config.refused_clients.clone()),
            certs,
            tls,
            http1: Http1::new(&config.limits, &config.hsts),
            hsts: config.hsts.clone(),
            limits: config.limits,
            public_https_port: config.listen.public_https_port.unwrap_or(bound_https_port),
            fixed: Fixed::of(config),
            process: process.clone(),
        })
    }
}

/// Certificate expiry into the metrics and, when close, the log; revocation lists past their
/// next update to both.
fn report_expiry(config: &Config, metrics: &Metrics) {
    let mut served = Vec::new();
    for certificate in config.certificates.entries() {
        let names: Vec<String> = certificate.names.iter().map(ToString::to_string).collect();
        let name = names.first().cloned().unwrap_or_default();
        served.push((names, certificate.not_after));
        let remaining = certificate
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if remaining < EXPIRY_WARNING {
            tracing::warn!(certificate = %name, days = remaining.as_secs() / 86_400, "certificate expires soon");
        }
    }
    metrics.certificates(Source::File, &served);
    let expired: Vec<&str> = config
        .gateway
        .iter()
        .flat_map(|gateway| gateway.expired_crls(SystemTime::now()))
        .map(|crl| crl.key.as_str())
        .collect();
    metrics.crls_expired(expired.len());
    if !expired.is_empty() {
        tracing::error!(crls = ?expired, "revocation lists past their next update: every client certificate they cover is refused");
    }
}
