//! Configuration reload, on SIGHUP or the admin listener's `POST /reload`.
//!
//! The new file is validated first; an invalid one is refused and the running configuration
//! stays. A valid one becomes a new server generation: new connections get its routes,
//! upstreams and certificates, open connections finish on the old one. Session-ticket keys,
//! the log writer and the metrics carry over. Listening sockets, `max_connections` and `[log]`
//! are fixed at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::StartError;
use crate::app::{App, Shared};
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
    #[error("[listen], [admin] and [tls.acme] changes need a restart")]
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
    admin: Option<std::net::SocketAddr>,
    acme: Option<crate::config::AcmeSettings>,
    https_port: u16,
    path: Option<PathBuf>,
}

impl Reloader {
    pub(crate) fn new(
        server: Arc<Server>,
        shared: Shared,
        config: &Config,
        https_port: u16,
        path: Option<PathBuf>,
    ) -> Self {
        Self {
            server,
            shared,
            listen: config.listen,
            admin: config.admin,
            acme: config.acme.clone(),
            https_port,
            path,
        }
    }

    /// Re-reads the config file the proxy was started from.
    pub fn reload_file(&self) -> Result<(), ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        self.reload(Config::load(path)?)
    }

    /// Installs a validated config.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        if config.listen != self.listen || config.admin != self.admin || config.acme != self.acme {
            return Err(ReloadError::ListenChanged);
        }
        self.server
            .install(generation(&config, self.https_port, &self.shared)?);
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
    let app = Arc::new(App::new(config, https_port, shared));
    let tls = crate::tls::TlsConfigs::new(
        app.certs.clone(),
        shared.ticketer.clone(),
        config.gateway.as_ref(),
        &config.routes,
    )?;
    for certificate in &config.certificates {
        let name = certificate
            .names
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        let remaining = certificate
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        shared.metrics.certificate_expiry(&name, remaining);
        if remaining < EXPIRY_WARNING {
            tracing::warn!(certificate = %name, days = remaining.as_secs() / 86_400, "certificate expires soon");
        }
    }
    Ok(Generation::new(app, tls))
}
