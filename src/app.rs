//! The state every request shares (compiled routes, certificates, limits) and what the proxy
//! knows about one client connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::acme::Acme;
use crate::audit::Audit;
use crate::config::{Config, Limits, RouteAccess, RouteAction};
use crate::gateway::{ClientIdentity, Gateway, MfaState};
use crate::metrics::Metrics;
use crate::networks::ClientFilter;
use crate::routing::{HostPattern, RESERVED_PREFIX, RouteTable};
use crate::tls::{CertStore, SniResolver};
use crate::tunnel::Tunnels;
use crate::upstream::Upstream;

/// The app of the configuration in service. A reload swaps it; every request loads it when it
/// arrives, so a removed grant or a revoked certificate counts from the next request on, also on
/// connections opened before the reload.
pub type LiveApp = Arc<ArcSwap<App>>;

/// Numbers the apps built by this process, so that a connection can tell which one last
/// checked its client certificate.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// Shared, read-only state built once from a validated [`Config`].
#[derive(Debug)]
pub struct App {
    /// Unique per app built; see [`ConnectionInfo::client_trusted`].
    pub generation: u64,
    /// Host and prefix -> route.
    pub routes: RouteTable<Arc<Route>>,
    /// Routes by name, for the gateway's own endpoints (the MFA form names its route).
    pub routes_by_name: HashMap<Arc<str>, Arc<Route>>,
    /// What requests under `/.portcullis/` are routed to, on every host.
    pub reserved: Arc<Route>,
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
    /// `[headers] strip`: stripped from every request beside the built-in list.
    pub stripped_headers: Arc<[http::HeaderName]>,
}

/// Where a matched request goes.
#[derive(Debug)]
pub struct Route {
    /// `host` + `path_prefix`, for logs: never the raw Host a client sent.
    pub name: Arc<str>,
    /// The hosts it serves.
    pub host: HostPattern,
    /// Its path prefix.
    pub prefix: String,
    /// What it does.
    pub action: Action,
    /// For internal routes: who may pass.
    pub access: Option<RouteAccess>,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
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
    pub acme: Option<Arc<Acme>>,
    /// MFA session key and used codes.
    pub mfa: Arc<MfaState>,
    /// The audit trail.
    pub audit: Arc<Audit>,
}

/// What a route does with a request.
#[derive(Debug)]
pub enum Action {
    /// Forwards to an upstream pool.
    Forward {
        /// The pool.
        upstream: Arc<Upstream>,
        /// Its config name, for logs.
        name: Arc<str>,
    },
    /// Answers itself.
    Respond {
        /// The status.
        status: StatusCode,
        /// The body.
        body: Bytes,
    },
    /// The proxy's own endpoints under [`RESERVED_PREFIX`], answered by the gateway and never
    /// forwarded, whatever the routes say.
    Reserved,
}

impl Route {
    /// The upstream's config name, when the route forwards.
    pub fn upstream_name(&self) -> Option<&str> {
        match &self.action {
            Action::Forward { name, .. } => Some(name),
            Action::Respond { .. } | Action::Reserved => None,
        }
    }
}

impl App {
    /// Compiles routes and builds upstream pools. `bound_https_port` is used for redirects when
    /// the config does not name a public port.
    pub fn new(
        config: &Config,
        bound_https_port: u16,
        shared: &Shared,
    ) -> Result<Self, rustls::Error> {
        let upstreams: std::collections::BTreeMap<&str, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, u)| (name.as_str(), Arc::new(Upstream::new(u, &config.limits))))
            .collect();
        let compiled: Vec<_> = config
            .routes
            .iter()
            .filter_map(|route| {
                let action = match &route.action {
                    RouteAction::Forward(name) => Action::Forward {
                        upstream: upstreams.get(name.as_str())?.clone(),
                        name: name.as_str().into(),
                    },
                    RouteAction::Respond { status, body } => Action::Respond {
                        status: *status,
                        body: body.clone(),
                    },
                };
                let target = Arc::new(Route {
                    name: route.name().into(),
                    host: route.host.clone(),
                    prefix: route.path_prefix.clone(),
                    action,
                    access: route.access.clone(),
                    max_body_bytes: route.max_body_bytes,
                });
                Some((route.host.clone(), route.path_prefix.clone(), target))
            })
            .collect();
        let routes_by_name = compiled
            .iter()
            .map(|(_, _, route)| (route.name.clone(), route.clone()))
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
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            routes: RouteTable::new(compiled),
            routes_by_name,
            reserved: Arc::new(Route {
                name: RESERVED_PREFIX.into(),
                host: HostPattern::Exact(String::new()),
                prefix: RESERVED_PREFIX.to_owned(),
                action: Action::Reserved,
                access: None,
                max_body_bytes: 0,
            }),
            gateway,
            refused_clients: ClientFilter::new(config.refused_clients.clone()),
            stripped_headers: config.stripped_headers.clone().into(),
            access_log: shared.access_log.clone(),
            metrics: shared.metrics.clone(),
            certs: Arc::new(SniResolver::new(
                CertStore::new(config.certificates.clone()),
                shared.acme.clone(),
            )),
            hsts: config.hsts.clone(),
            limits: config.limits,
            public_https_port: config.listen.public_https_port.unwrap_or(bound_https_port),
        })
    }
}

/// What the proxy knows about one client connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// The peer's address, IPv4-mapped addresses shown as IPv4.
    pub client_ip: IpAddr,
    /// `client_ip` as an `X-Forwarded-For` value, rendered once per connection.
    pub forwarded_for: HeaderValue,
    /// The names of the certificate presented in the handshake: requests for hosts it does not
    /// cover are misdirected.
    pub certificate: Arc<[HostPattern]>,
    /// The negotiated TLS version, `1.2` or `1.3`.
    pub tls_version: &'static str,
    /// The SNI the client sent, lowercase.
    pub sni: Option<Arc<str>>,
    /// The employee, when a client certificate was presented and verified.
    pub client: Option<ClientIdentity>,
    /// The app generation that last found `client` trustworthy.
    pub trusted_under: AtomicU64,
    /// Cancelled when a reload no longer trusts `client`: the connection is cut.
    pub revoked: CancellationToken,
    /// Where its upgraded (WebSocket) requests run, under the connection's permit.
    pub tunnels: Tunnels,
}

impl ConnectionInfo {
    /// True while `app` still trusts this connection's client certificate (always, without
    /// one). The certificate is checked again once per reload, against the new CRLs and roots;
    /// when it fails, the connection is marked for closing.
    pub fn client_trusted(&self, app: &App) -> bool {
        let (Some(client), Some(gateway)) = (&self.client, &app.gateway) else {
            return true;
        };
        if self.trusted_under.load(Ordering::Relaxed) == app.generation {
            return true;
        }
        if gateway.trusts(client) {
            self.trusted_under.store(app.generation, Ordering::Relaxed);
            true
        } else {
            self.revoked.cancel();
            false
        }
    }
}
