//! Portcullis: an HTTPS edge reverse proxy that enforces a security policy by construction.
//!
//! ```text
//!          accept: connection limit (the rest wait in the kernel backlog), deny list and
//!          other environments closed before a byte is read; from a balancer, its PROXY
//!          header names the client, checked the same way
//!            │
//!            ├ plain HTTP ─▶ hyper h1 ─▶ access log ─▶ redirect (301 to https, routed hosts)
//!            │
//! client ────┴ TLS ─▶ ClientHello: unknown SNI refused; SNI picks the certificate and
//!                     whether a client certificate is required; TLS-ALPN-01 ends here
//!                 ─▶ hyper h1/h2 (ALPN) ─▶ HSTS ─▶ access log ─▶ error responses
//!                    Request               InFlight (request + its Exchange)
//!                 ─▶ routing (host, certificate coverage, path, route; CONNECT: SNI + target)
//!                    Routed
//!                 ─▶ gateway (public routes pass; internal routes and tunnels: identity,
//!                    grant, MFA, audit; /.portcullis/ answered here)
//!                    Admitted: made only by the gateway, the only thing the proxy takes
//!                 ─▶ proxy ─▶ upstream pool (every address checked against its environment)
//!                          └▶ relay (CONNECT, upgrades: bytes relayed and audited)
//! ```
//!
//! What lives as long as the process (`app::Process`) is built once here; each configuration
//! is one generation (`app::App`) behind one `ArcSwap` that a reload swaps and routing, the
//! gateway, the server and the admin listener read. Beside them: the admin listener (health,
//! metrics, reload; loopback or mutual TLS), the health listener for balancers, the ACME task,
//! the access-log and audit writers.
//! The layer list is `layers::https_layers`; README's "Architecture" section has the module
//! graph and walks one request through the files it passes.
//!
//! [`start`] binds the listeners and serves until [`Running::shutdown`]; `main.rs`, the tests
//! and the benches all go through it.
#![forbid(unsafe_code)]

// The API: what `main` needs.
pub mod access_requests;
pub mod audit;
pub mod config;
pub mod dev_certs;
pub mod employees;
pub mod logging;
pub mod privilege;
pub mod reload;
pub mod report;
pub mod request_id;
pub mod sandbox;
pub mod snapshot;
pub mod tunnel_client;

// Internals that benches and tests reach; not a stable API.
#[doc(hidden)]
pub mod access_log;
#[doc(hidden)]
pub mod certs;
#[doc(hidden)]
pub mod connection;
#[doc(hidden)]
pub mod daily;
#[doc(hidden)]
pub mod host;
#[doc(hidden)]
pub mod path;
#[doc(hidden)]
pub mod proxy;
#[doc(hidden)]
pub mod routing;

mod acme;
mod admin;
mod app;
mod body;
mod cookies;
mod error;
mod exchange;
mod gated;
mod gateway;
mod health;
mod io;
mod layers;
mod lifecycle;
mod metrics;
mod networks;
mod postgres;
mod proxy_protocol;
mod rate_limit;
mod redirect;
mod redis_link;
mod relay;
mod secrets;
mod server;
mod tls;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use lifecycle::Lifecycle;

/// The shared ACME store's HTTP client, for tools that read or plant objects in it as it does.
pub use acme::{Ca as AcmeDirectory, Issued, Renewal, StoreConnector};
pub use config::Config;

/// How long cut tasks get to notice.
const CUT_WAIT: Duration = Duration::from_secs(5);

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
    /// The access-log or audit writer could not be started.
    #[error("cannot start the log writers: {0}")]
    Log(#[source] std::io::Error),
    /// ACME could not be set up.
    #[error(transparent)]
    Acme(#[from] acme::SetupError),
    /// The system random source failed.
    #[error("no randomness for session keys")]
    Random,
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
    /// The bound admin address, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// The bound health address, if configured.
    pub health_addr: Option<SocketAddr>,
    lifecycle: lifecycle::Lifecycle,
    grace: Duration,
    drain_delay: Duration,
    process: app::Process,
    reloader: Arc<reload::Reloader>,
}

impl Running {
    /// Fails `/readyz` and sends clients elsewhere while still serving for `drain_delay`, then
    /// stops accepting, lets in-flight requests and tunnels finish for up to `shutdown_grace`,
    /// and cuts whatever still runs; returns true when everything finished in the grace.
    pub async fn shutdown(&self) -> bool {
        let Lifecycle {
            tracker,
            leaving,
            draining,
            cut,
        } = &self.lifecycle;
        leaving.cancel();
        if !self.drain_delay.is_zero() {
            tracing::info!(
                delay = %humantime::format_duration(self.drain_delay),
                "leaving: /readyz fails, still serving"
            );
            tokio::time::sleep(self.drain_delay).await;
        }
        draining.cancel();
        tracker.close();
        let drained = tokio::time::timeout(self.grace, tracker.wait())
            .await
            .is_ok();
        if !drained {
            cut.cancel();
            // Cut tasks end at their next poll; the bound only guards against a bug.
            let _ = tokio::time::timeout(CUT_WAIT, tracker.wait()).await;
        }
        // After the drain, so the lines of requests that finished in it are written too.
        let (log, audit) = (self.process.access_log.clone(), self.process.audit.clone());
        let _ = tokio::task::spawn_blocking(move || {
            log.close();
            audit.close();
        })
        .await;
        drained
    }

    /// Installs a new, validated config; see [`reload`].
    pub fn reload(&self, config: Config) -> Result<(), reload::ReloadError> {
        self.reloader.reload(config)
    }

    /// Re-reads the config file given to [`start_from_file`], on behalf of `trigger`; see
    /// [`reload`].
    pub fn reload_file(&self, trigger: audit::Trigger) -> Result<(), reload::ReloadError> {
        self.reloader.reload_file(trigger)
    }
}

/// The bound sockets of a config, made before anything else so that privileges can be
/// dropped before a single request is read.
#[derive(Debug)]
pub struct Listeners {
    https: Bound,
    http: Option<Bound>,
    admin: Option<Bound>,
    health: Option<Bound>,
}

/// A socket listening on `addr` as configured (its port may be 0).
#[derive(Debug)]
struct Bound {
    addr: SocketAddr,
    socket: std::net::TcpListener,
}

/// As tokio's own listeners: a connection burst waits in the kernel rather than being refused.
const BACKLOG: i32 = 1024;

impl Listeners {
    /// Binds every listener the config names.
    pub fn bind(config: &Config) -> Result<Self, StartError> {
        Ok(Self {
            https: bind(config.listen.https)?,
            http: config.listen.http.map(bind).transpose()?,
            admin: config.admin.as_ref().map(|a| bind(a.listen)).transpose()?,
            health: config.health.as_ref().map(|h| bind(h.listen)).transpose()?,
        })
    }
}

/// Binds the listeners of a validated config and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let listeners = Listeners::bind(&config)?;
    start_inner(config, listeners, None).await
}

/// Serves on listeners bound earlier, remembering `path` so that SIGHUP and `POST /reload`
/// can re-read it.
pub async fn start_from_file(
    config: Config,
    listeners: Listeners,
    path: PathBuf,
) -> Result<Running, StartError> {
    start_inner(config, listeners, Some(path)).await
}

async fn start_inner(
    config: Config,
    listeners: Listeners,
    path: Option<PathBuf>,
) -> Result<Running, StartError> {
    for warning in &config.warnings {
        tracing::warn!(%warning, "configuration");
    }
    let (https, https_addr) = registered(listeners.https)?;
    let (http, http_addr) = listeners.http.map(registered).transpose()?.unzip();
    let (admin, admin_addr) = listeners.admin.map(registered).transpose()?.unzip();
    let (health, health_addr) = listeners.health.map(registered).transpose()?.unzip();
    let lifecycle = Lifecycle::default();
    let metrics = Arc::new(metrics::Metrics::new());
    let audit = Arc::new(audit::Audit::new(&config.log).map_err(StartError::Log)?);
    let acme = match &config.acme {
        Some(settings) => Some(acme::start(
            settings,
            metrics.clone(),
            audit.clone(),
            &lifecycle,
        )?),
        None => None,
    };
    let link = redis_link::RedisLink::shared(&config, &metrics).map_err(StartError::Tls)?;
    let session_key = config.shared.session_key.as_ref().map(|k| k.expose());
    // The second factor's key and memory: shared with the other instances as `[shared]` says.
    let mfa = gateway::MfaState::new(session_key, link.clone().map(gateway::MfaStore::new))
        .map_err(|_| StartError::Random)?;
    let rate_limits = rate_limit::RateLimits::new(
        metrics.clone(),
        rate_limit::SharedCounts::of(link, session_key),
    );
    let process = app::Process {
        access_log: Arc::new(
            access_log::AccessLog::start(config.log.clone()).map_err(StartError::Log)?,
        ),
        metrics,
        ticketer: tls::ticketer()?,
        acme,
        mfa: Arc::new(mfa),
        assertions: Arc::new(
            gateway::Assertions::new(session_key).map_err(|_| StartError::Random)?,
        ),
        audit: audit.clone(),
        access_grants: Arc::new(gateway::AccessGrants::new(audit)),
        rate_limits,
    };
    if let (Some(path), Some(settings)) = (&path, &config.snapshots)
        && let Some(every) = settings.every
    {
        snapshot::schedule(
            snapshot::Sources::of(&config, path),
            settings.clone(),
            every,
            process.audit.clone(),
            &lifecycle,
        );
    }
    let server = server::Server::new(
        app::App::new(&config, https_addr.port(), &process)?,
        lifecycle.clone(),
        proxy_protocol::Balancers::new(config.listen.proxy_protocol_from.clone()),
    );
    server.follow_access_requests(process.access_grants.clone());
    app::publish_jwks(
        server.live(),
        process.assertions.clone(),
        lifecycle.cut.clone(),
    );
    server.spawn(https, http);
    let reloader = Arc::new(reload::Reloader::new(
        server.clone(),
        process.clone(),
        https_addr.port(),
        path,
    ));
    if let Some(listener) = admin {
        admin::Admin {
            process: process.clone(),
            live: server.live(),
            reloader: reloader.clone(),
            lifecycle: lifecycle.clone(),
        }
        .spawn(listener, &server);
    }
    if let (Some(listener), Some(settings)) = (health, &config.health) {
        health::Health {
            readiness: health::Readiness {
                lifecycle: lifecycle.clone(),
                audit: process.audit.clone(),
            },
            metrics: process.metrics.clone(),
            allow: settings.allow.clone(),
        }
        .spawn(listener, &server);
    }
    Ok(Running {
        https_addr,
        http_addr,
        admin_addr,
        health_addr,
        lifecycle,
        grace: config.limits.shutdown_grace,
        drain_delay: config.limits.drain_delay,
        process,
        reloader,
    })
}

fn bind(addr: SocketAddr) -> Result<Bound, StartError> {
    use socket2::{Domain, Socket, Type};
    let bind_err = |source| StartError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(BACKLOG).map_err(bind_err)?;
    Ok(Bound {
        addr,
        socket: socket.into(),
    })
}

/// Hands a bound socket to the runtime, with the address it really has (the real port when
/// the config said 0).
fn registered(bound: Bound) -> Result<(TcpListener, SocketAddr), StartError> {
    let Bound { addr, socket } = bound;
    let bind_err = |source| StartError::Bind { addr, source };
    let local = socket.local_addr().map_err(bind_err)?;
    Ok((TcpListener::from_std(socket).map_err(bind_err)?, local))
}
