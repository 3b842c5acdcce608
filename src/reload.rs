//! Configuration reload, on SIGHUP or the admin listener's `POST /reload`.
//!
//! The new file is validated first; an invalid one is refused and the running configuration
//! stays. A valid one becomes a new generation: new connections get its routes,
//! upstreams and certificates, open connections finish on the old one. Session-ticket keys,
//! the log writer and the metrics carry over. Listening sockets, `max_connections` and `[log]`
//! are fixed at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use crate::app::{App, Fixed, Process};
use crate::audit::{AuditRecord, Outcome, Timestamp, Trigger};
use crate::config::{Config, ConfigError};
use crate::server::Server;

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
    #[error("[listen], [admin], [health], [tls.acme] and [shared] changes need a restart")]
    ListenChanged,
    /// The new TLS settings were refused.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Builds generations and installs them.
#[derive(Debug)]
pub struct Reloader {
    server: Arc<Server>,
    process: Process,
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
        process: Process,
        https_port: u16,
        path: Option<PathBuf>,
    ) -> Self {
        let digest = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map_or_else(|| "-".to_owned(), |bytes| digest(&bytes));
        process.audit.record(AuditRecord::Config {
            ts: Timestamp::now(),
            trigger: Trigger::Startup,
            outcome: Outcome::Applied,
            old_digest: "-".into(),
            new_digest: digest.clone(),
        });
        Self {
            digest: Mutex::new(digest),
            server,
            process,
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
            .and_then(|text| Config::from_parsed(Config::parse_file(text, path)?))
            .and_then(|config| config.resolve().map(|_| config))
            .map_err(ReloadError::from)
            .and_then(|config| self.reload(config));
        let Ok(mut current) = self.digest.lock() else {
            return outcome;
        };
        self.process.audit.record(AuditRecord::Config {
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
        match &outcome {
            Ok(()) => *current = new_digest,
            Err(e) => tracing::error!(?trigger, "reload refused, keeping the running config:\n{e}"),
        }
        outcome
    }

    /// Installs a validated config.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        if Fixed::of(&config) != self.server.live().load().fixed {
            return Err(ReloadError::ListenChanged);
        }
        self.server
            .install(App::new(&config, self.https_port, &self.process)?);
        for warning in &config.warnings {
            tracing::warn!(%warning, "configuration");
        }
        tracing::info!("configuration reloaded");
        Ok(())
    }
}
