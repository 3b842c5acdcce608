//! Portcullis: an HTTPS edge reverse proxy that enforces a security policy by construction.
//!
//! ```text
//!            ┌ plain HTTP listener ─▶ redirect (301 to https, routed hosts only)
//! client ────┤
//!            └ TLS listener ─▶ rustls (SNI, ALPN) ─▶ hyper h1/h2
//!                 ─▶ HSTS ─▶ error responses ─▶ routing ─▶ proxy ─▶ upstream pool
//!                                                                 (private networks only)
//! ```
//!
//! [`start`] binds both listeners and serves until [`Running::shutdown`]; `main.rs`, the tests
//! and the benches all go through it.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod app;
pub mod body;
pub mod config;
pub mod dev_certs;
pub mod error;
pub mod layers;
pub mod logging;
pub mod networks;
pub mod proxy;
pub mod redirect;
pub mod routing;
pub mod server;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The access-log writer could not be started.
    #[error("cannot start the access log: {0}")]
    Log(#[source] std::io::Error),
    /// rustls refused the TLS settings.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// A running proxy.
#[derive(Debug)]
pub struct Running {
    /// The bound TLS address (the real port when the config said 0).
    pub https_addr: SocketAddr,
    /// The bound plain-HTTP address, if configured.
    pub http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
    access_log: Arc<access_log::AccessLog>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish for up to `shutdown_grace`, and returns
    /// true when every connection closed in time.
    pub async fn shutdown(self) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        let drained = tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_ok();
        // After the drain, so the lines of requests that finished in it are written too.
        let log = self.access_log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
        drained
    }

    /// Access-log events dropped because the writer could not keep up.
    pub fn access_log_dropped(&self) -> u64 {
        self.access_log.dropped()
    }
}

/// Binds the listeners of a validated config and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let https = bind(config.listen.https).await?;
    let http = match config.listen.http {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let https_addr = local_addr(&https, config.listen.https)?;
    let http_addr = match (&http, config.listen.http) {
        (Some(listener), Some(addr)) => Some(local_addr(listener, addr)?),
        _ => None,
    };
    let app = Arc::new(app::App::new(&config, https_addr.port()).map_err(StartError::Log)?);
    let access_log = app.access_log.clone();
    let tls = Arc::new(tls::server_config(app.certs.clone())?);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    server::Server::new(app, tls, shutdown.clone(), tracker.clone()).spawn(https, http);
    Ok(Running {
        https_addr,
        http_addr,
        shutdown,
        tracker,
        grace: config.limits.shutdown_grace,
        access_log,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}
