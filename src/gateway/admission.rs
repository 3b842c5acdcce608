//! The two forms of a request past routing. [`Routed`] is what routing found; [`Admitted`] is
//! what may reach an upstream, and only this module's parent, the gateway, can make one: from a
//! public route, or from an internal route or tunnel whose employee it identified, granted and
//! wrote to the audit trail. The proxy takes nothing else, so an unadmitted request cannot reach
//! an upstream by a path that forgot a check: it does not compile.
//!
//! An admitted request carries what the proxy needs explicitly ([`Pass`]): the upstream and its
//! limits, the employee the gateway vouches for, the tunnel's audit lines.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;

use super::Gateway;
use crate::access_requests::ActiveGrant;
use crate::audit::TunnelAudit;
use crate::error::ProxyError;
use crate::exchange::Exchange;
use crate::host::RequestHost;
use crate::postgres::PgSession;
use crate::routing::{Action, Route, Routes};
use crate::upstream::Upstream;

/// A request that passed routing: its route and validated host travel with it. Generic over
/// the body so that the layers can be called without a connection (`B` is hyper's `Incoming`
/// when serving).
#[derive(Debug)]
pub struct Routed<B = Incoming> {
    /// The request, its path already normalised.
    pub request: Request<B>,
    /// Its record for the access log.
    pub exchange: Arc<Exchange>,
    /// Where it goes.
    pub route: Arc<Route>,
    /// The host it is for.
    pub host: RequestHost,
    /// The routes of the configuration it was routed by.
    pub routes: Arc<Routes>,
    /// The gateway of that same configuration, for the routes it guards (internal routes,
    /// tunnels, `/.portcullis/`): a reload between routing and admission cannot pair one
    /// configuration's grants with another's trust roots.
    pub gateway: Option<Arc<Gateway>>,
}

/// A request the gateway let through. See the module documentation.
#[derive(Debug)]
pub struct Admitted<B = Incoming> {
    request: Request<B>,
    exchange: Arc<Exchange>,
    host: RequestHost,
    pass: Pass,
}

/// What an admitted request is let through to do.
#[derive(Debug)]
pub enum Pass {
    /// Go to an upstream.
    Forward(ToUpstream),
    /// Be answered by a responder route.
    Respond {
        /// Its status.
        status: StatusCode,
        /// Its body.
        body: Bytes,
    },
    /// Open a `CONNECT` tunnel.
    Tunnel(ToTunnel),
}

/// A request's way to its route's upstream.
#[derive(Debug)]
pub struct ToUpstream {
    /// The route's pool.
    pub upstream: Arc<Upstream>,
    /// `[headers] strip`: removed from the request beside the built-in list.
    pub strip: Arc<[HeaderName]>,
    /// The route's largest request body.
    pub max_body_bytes: u64,
    /// On an internal route, the employee the gateway vouches for (`X-Portcullis-User`).
    pub employee: Option<HeaderValue>,
    /// On a route that asks for it, the signed `Portcullis-Assertion` of that employee.
    pub assertion: Option<HeaderValue>,
}

/// A `CONNECT` tunnel's way to its target.
#[derive(Debug)]
pub struct ToTunnel {
    /// The tunnel route's name, to judge it again after a reload.
    pub route: Arc<str>,
    /// Where the stream goes.
    pub upstream: Arc<Upstream>,
    /// How long the stream may carry no byte either way.
    pub idle_timeout: Duration,
    /// Its lines in the audit trail, the open one already written.
    pub audit: TunnelAudit,
    /// The approved access request it was opened under, if not the tunnel's `allow` list.
    pub grant: Option<ActiveGrant>,
    /// With `protocol = "postgres"`: the database session it carries.
    pub postgres: Option<PgSession>,
}

/// An admitted request taken apart by the proxy.
#[derive(Debug)]
pub struct Parts<B> {
    /// The request.
    pub request: Request<B>,
    /// Its record for the access log.
    pub exchange: Arc<Exchange>,
    /// The host it is for.
    pub host: RequestHost,
    /// What it may do.
    pub pass: Pass,
}

impl<B> Admitted<B> {
    /// A request to a public route, which needs no one's identity.
    pub(super) fn public(routed: Routed<B>) -> Result<Self, ProxyError> {
        if routed.route.access.is_some() {
            return Err(ProxyError::Internal);
        }
        Self::web(routed, None, None)
    }

    /// A request to an internal route, on behalf of `employee`.
    pub(super) fn employee(
        routed: Routed<B>,
        employee: HeaderValue,
        assertion: Option<HeaderValue>,
    ) -> Result<Self, ProxyError> {
        Self::web(routed, Some(employee), assertion)
    }

    fn web(
        routed: Routed<B>,
        employee: Option<HeaderValue>,
        assertion: Option<HeaderValue>,
    ) -> Result<Self, ProxyError> {
        let pass = match &routed.route.action {
            Action::Forward { upstream, strip } => Pass::Forward(ToUpstream {
                upstream: upstream.clone(),
                strip: strip.clone(),
                max_body_bytes: routed.route.max_body_bytes,
                employee,
                assertion,
            }),
            Action::Respond { status, body } => Pass::Respond {
                status: *status,
                body: body.clone(),
            },
            // The gateway answers the first itself and admits the second as a tunnel: neither
            // is ever forwarded.
            Action::Reserved | Action::Tunnel(_) => return Err(ProxyError::Internal),
        };
        Ok(Self::new(routed, pass))
    }

    /// A `CONNECT` to a tunnel route, whose open line `audit` wrote, under `grant` if the
    /// route's `allow` list does not name its user.
    pub(super) fn tunnel(
        routed: Routed<B>,
        audit: TunnelAudit,
        grant: Option<ActiveGrant>,
        writable: bool,
    ) -> Result<Self, ProxyError> {
        let Action::Tunnel(target) = &routed.route.action else {
            return Err(ProxyError::Internal);
        };
        let pass = Pass::Tunnel(ToTunnel {
            route: routed.route.label.name.clone(),
            upstream: target.upstream.clone(),
            idle_timeout: target.idle_timeout,
            audit,
            grant,
            postgres: target.postgres.as_ref().map(|target| PgSession {
                target: target.clone(),
                writable,
            }),
        });
        Ok(Self::new(routed, pass))
    }

    fn new(routed: Routed<B>, pass: Pass) -> Self {
        Self {
            request: routed.request,
            exchange: routed.exchange,
            host: routed.host,
            pass,
        }
    }

    /// The request as it will be sent.
    pub fn request(&self) -> &Request<B> {
        &self.request
    }

    /// What it may do.
    pub fn pass(&self) -> &Pass {
        &self.pass
    }

    /// Takes it apart, to be sent.
    pub fn into_parts(self) -> Parts<B> {
        Parts {
            request: self.request,
            exchange: self.exchange,
            host: self.host,
            pass: self.pass,
        }
    }
}
