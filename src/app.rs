//! The state every request shares, built from one validated configuration: compiled routes,
//! certificates, the gateway, limits; and what outlives a reload.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::access_log::{AccessLog, RouteLabel};
use crate::audit::Audit;
use crate::config::{Config, Limits, RouteAction};
use crate::connection::ConnectionInfo;
use crate::gateway::{Gateway, MfaState};
use crate::host::HostPattern;
use crate::metrics::Metrics;
use crate::networks::ClientFilter;
use crate::routing::{Action, Route, Routes, TunnelTarget};
use crate::tls::{ManagedCertificates, SniResolver};
use crate::upstream::Upstream;

/// The app of the configuration in service. A reload swaps it; every request loads it when it
/// arrives, so a removed grant or a revoked certificate counts from the next request on, also on
/// connections opened before the reload.
pub type LiveApp = Arc<ArcSwap<App>>;

/// The longest a trust watch sleeps before it reads the wall clock again: the deadline it waits
/// for is a wall-clock time, and the clock may jump while it sleeps on the monotonic one.
const RECHECK_AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// Completes when the gateway in service stops trusting `conn`'s client certificate without a
/// reload: once the certificate or a revocation list it depends on is past its time, trust is
/// withdrawn (`Distrust::Expired`). A reload's verdict is its own watch's business; this one
/// never completes for a connection without a client certificate or without a gateway.
pub async fn trust_lapses(live: &LiveApp, conn: &ConnectionInfo) {
    let Some(client) = &conn.client else {
        return std::future::pending().await;
    };
    loop {
        let app = live.load_full();
        let Some(gateway) = &app.gateway else {
            return std::future::pending().await;
        };
        // A time already past that still verified (a stale list of another issuer) is looked
        // at again only every `RECHECK_AT_LEAST_EVERY`, never in a loop.
        let nap = gateway
            .recheck_at(client)
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .filter(|nap| !nap.is_zero())
            .map_or(RECHECK_AT_LEAST_EVERY, |nap| {
                nap.min(RECHECK_AT_LEAST_EVERY)
            });
        drop(app);
        tokio::time::sleep(nap).await;
        let app = live.load_full();
        if app.gateway.as_ref().is_some_and(|g| !g.still_trusts(conn)) {
            return;
        }
    }
}

/// Shared, read-only state built once from a validated [`Config`].
#[derive(Debug)]
pub struct App {
    /// Host and prefix -> route.
    pub routes: Arc<Routes>,
    /// The certificates in service.
    pub certs: Arc<SniResolver>,
    /// The `Strict-Transport-Security` value.
    pub hsts: HeaderValue,
    /// Limits and timeouts.
    pub limits: Limits,
    /// The port written into redirect locations.
    pub public_https_port: u16,
    /// Where request events go.
    pub access_log: Arc<AccessLog>,
    /// Counters for the admin listener.
    pub metrics: Arc<Metrics>,
    /// The gateway, when internal routes exist.
    pub gateway: Option<Arc<Gateway>>,
    /// Clients closed at accept, before any byte is read.
    pub refused_clients: ClientFilter,
}

/// What outlives a reload: the log writer, the metrics, and the session-ticket keys (so that
/// clients keep resuming across reloads).
#[derive(Debug, Clone)]
pub struct Shared {
    /// The access-log writer.
    pub access_log: Arc<AccessLog>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Rotating session-ticket keys.
    pub ticketer: Arc<dyn rustls::server::ProducesTickets>,
    /// The ACME account, when certificates are ordered.
    pub acme: Option<Arc<dyn ManagedCertificates>>,
    /// MFA session key and used codes.
    pub mfa: Arc<MfaState>,
    /// The audit trail.
    pub audit: Arc<Audit>,
}

impl App {
    /// Compiles routes and builds upstream pools. `bound_https_port` is used for redirects when
    /// the config does not name a public port.
    pub fn new(
        config: &Config,
        bound_https_port: u16,
        shared: &Shared,
    ) -> Result<Self, rustls::Error> {
        // In the order of `config.upstreams`, which is what an `UpstreamId` indexes.
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| Arc::new(Upstream::new(u, &config.limits)))
            .collect();
        let strip: Arc<[http::HeaderName]> = config.stripped_headers.clone().into();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let (action, upstream_name) = match route.action {
                    RouteAction::Forward(id) => (
                        Action::Forward {
                            upstream: upstreams[id.index()].clone(),
                            strip: strip.clone(),
                        },
                        Some(config.upstream(id).name.clone()),
                    ),
                    RouteAction::Respond { status, ref body } => (
                        Action::Respond {
                            status,
                            body: body.clone(),
                        },
                        None,
                    ),
                };
                Arc::new(Route {
                    label: Arc::new(RouteLabel {
                        name: route.name().into(),
                        prefix: route.path_prefix.as_str().into(),
                        upstream: upstream_name,
                    }),
                    host: route.host.clone(),
                    prefix: route.path_prefix.clone(),
                    action,
                    access: route.access.clone(),
                    max_body_bytes: route.max_body_bytes,
                })
            })
            .collect();
        let tunnels = config
            .tunnels
            .iter()
            .map(|tunnel| {
                Arc::new(Route {
                    label: Arc::new(RouteLabel {
                        name: tunnel.name().into(),
                        prefix: "".into(),
                        upstream: Some(config.upstream(tunnel.upstream).name.clone()),
                    }),
                    host: HostPattern::Exact(tunnel.host.clone()),
                    prefix: String::new(),
                    action: Action::Tunnel(TunnelTarget {
                        target: tunnel.target.clone(),
                        port: tunnel.port,
                        upstream: upstreams[tunnel.upstream.index()].clone(),
                        idle_timeout: tunnel.idle_timeout,
                    }),
                    access: Some(tunnel.access.clone()),
                    max_body_bytes: 0,
                })
            })
            .collect();
        let gateway = match config.gateway.clone() {
            Some(settings) => Some(Arc::new(Gateway::new(
                settings,
                shared.mfa.clone(),
                shared.audit.clone(),
            )?)),
            None => None,
        };
        Ok(Self {
            routes: Arc::new(Routes::new(routes, tunnels)),
            gateway,
            refused_clients: ClientFilter::new(config.refused_clients.clone()),
            access_log: shared.access_log.clone(),
            metrics: shared.metrics.clone(),
            certs: Arc::new(SniResolver::new(
                config.certificates.clone(),
                shared.acme.clone(),
            )),
            hsts: config.hsts.clone(),
            limits: config.limits,
            public_https_port: config.listen.public_https_port.unwrap_or(bound_https_port),
        })
    }
}
