//! Configuration reload, on SIGHUP or the admin listener's `POST /reload`.
//!
//! The new file is validated first; an invalid one is refused and the running configuration
//! stays. A valid one becomes a new server generation: new connections get its routes,
//! upstreams and certificates, open connections finish on the old one. Session-ticket keys,
//! the log writer and the metrics carry over. Listening sockets, `max_connections` and `[log]`
//! are fixed at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::StartError;
use crate::app::{App, Shared};
use crate::audit::{AuditRecord, Outcome, Timestamp, Trigger};
use crate::config::{Config, ConfigError, Listen};
use crate::server::{Generation, Server};

/// Certificates closer than this to expiry are warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy was started from a config value, not a file.
    #[error("no config file to reload from")]
    NoFile,
    /// The new file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Listening addresses cannot change without a restart.
    #[error("[listen], [admin], [tls.acme] and [shared] changes need a restart")]
    ListenChanged,
    /// The new TLS settings were refused.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Builds server generations and installs them.
#[derive(Debug)]
pub struct Reloader {
    server: Arc<Server>,
    shared: Shared,
    listen: Listen,
    admin: Option<crate::config::AdminSettings>,
    acme: Option<crate::config::AcmeSettings>,
    shared_settings: crate::config::SharedSettings,
    https_port: u16,
    path: Option<PathBuf>,
    /// SHA-256 of the file in service, for the audit trail.
    digest: Mutex<String>,
}

/// SHA-256 of a config file's bytes, hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

impl Reloader {
    pub(crate) fn new(
        server: Arc<Server>,
        shared: Shared,
        config: &Config,
        https_port: u16,
        path: Option<PathBuf>,
    ) -> Self {
        let digest = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map_or_else(|| "-".to_owned(), |bytes| digest(&bytes));
        shared.audit.record(AuditRecord::Config {
            ts: Timestamp::now(),
            trigger: Trigger::Startup,
            outcome: Outcome::Applied,
            old_digest: "-".into(),
            new_digest: digest.clone(),
        });
        Self {
            digest: Mutex::new(digest),
            server,
            shared,
            listen: config.listen.clone(),
            admin: config.admin.clone(),
            acme: config.acme.clone(),
            shared_settings: config.shared.clone(),
            https_port,
            path,
        }
    }

    /// Re-reads the config file the proxy was started from; `trigger` goes
    /// to the audit trail with the outcome and both files' digests.
    pub fn reload_file(&self, trigger: Trigger) -> Result<(), ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let new_digest = digest(&bytes);
        let outcome = std::str::from_utf8(&bytes)
            .map_err(|_| ConfigError::NotUtf8)
            .and_then(|text| Config::from_raw(toml::from_str(text)?))
            .and_then(|config| config.resolve_upstreams().map(|()| config))
            .map_err(ReloadError::from)
            .and_then(|config| self.reload(config));
        let Ok(mut current) = self.digest.lock() else {
            return outcome;
        };
        self.shared.audit.record(AuditRecord::Config {
            ts: Timestamp::now(),
            trigger,
            outcome: if outcome.is_ok() {
                Outcome::Applied
            } else {
                Outcome::Refused
            },
            old_digest: current.clone(),
            new_digest: new_digest.clone(),
        });
        if outcome.is_ok() {
            *current = new_digest;
        }
        outcome
    }

    /// Installs a validated config.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        if config.listen != self.listen
            || config.admin != self.admin
            || config.acme != self.acme
            || config.shared != self.shared_settings
        {
            return Err(ReloadError::ListenChanged);
        }
        self.server
            .install(generation(&config, self.https_port, &self.shared)?);
        for warning in &config.warnings {
            tracing::warn!(%warning, "configuration");
        }
        tracing::info!("configuration reloaded");
        Ok(())
    }
}

/// One configuration's serving state, with certificate expiry reported on the way.
pub(crate) fn generation(
    config: &Config,
    https_port: u16,
    shared: &Shared,
) -> Result<Generation, StartError> {
    let app = Arc::new(App::new(config, https_port, shared)?);
    let tls = crate::tls::TlsConfigs::new(
        app.certs.clone(),
        shared.ticketer.clone(),
        config.gateway.as_ref(),
        &config.routes,
        &config.tunnels,
    )?;
    for certificate in config.certificates.entries() {
        let name = certificate
            .names
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        shared
            .metrics
            .certificate_expiry(&name, certificate.not_after);
        let remaining = certificate
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if remaining < EXPIRY_WARNING {
            tracing::warn!(certificate = %name, days = remaining.as_secs() / 86_400, "certificate expires soon");
        }
    }
    let expired: Vec<&str> = config
        .gateway
        .iter()
        .flat_map(|gateway| gateway.expired_crls(SystemTime::now()))
        .map(|crl| crl.key.as_str())
        .collect();
    shared.metrics.crls_expired(expired.len());
    if !expired.is_empty() {
        tracing::error!(crls = ?expired, "revocation lists past their next update: every client certificate they cover is refused");
    }
    Ok(Generation::new(app, tls))
}
