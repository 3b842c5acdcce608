//! The gateway for internal tools: a named employee's certificate, their grant on the route, and
//! optionally a current TOTP code once per session; every decision goes to the audit trail.
//!
//! Sits after routing (it needs the route's grants) and before the proxy; public routes pass
//! through untouched. `CONNECT` tunnels pass the same identity and grants, with the second
//! factor in a header (`tunnel_admission.rs`). It also answers the proxy's own endpoints under
//! `/.portcullis/` (the MFA form's target), which routing hands it on every host and which are
//! never forwarded.

mod admission;
mod assertion;
mod grants;
mod identity;
mod mfa;
mod mfa_store;
mod second_factor;
mod trust;
mod tunnel_admission;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{HeaderValue, Response};
use rustls::server::danger::ClientCertVerifier;
use tower::{Layer, Service};

pub use admission::{Admitted, Parts, Pass, Routed, ToTunnel, ToUpstream};
pub use assertion::{ASSERTION_HEADER, Assertions};
pub use grants::AccessGrants;
pub use identity::Basis;
use identity::{Identity, identify};
pub use mfa::MfaState;
pub use mfa_store::MfaStore;
pub use tunnel_admission::OTP_HEADER;

use crate::audit::{Audit, AuditRecord, Decision, Timestamp};
use crate::body::ResponseBody;
use crate::config::{GatewaySettings, RouteAccess};
use crate::connection::{ClientIdentity, ConnectionInfo};
use crate::error::ProxyError;
use crate::rate_limit::{Limiter, RateLimits};
use crate::routing::{Action, Route};

/// Numbers the gateways built by this process, so that a connection can tell which one last
/// checked its client certificate.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// The gateway's configuration and state.
#[derive(Debug)]
pub struct Gateway {
    /// People and trust settings.
    pub settings: GatewaySettings,
    /// Session keys, used codes and lockouts; survive reloads.
    pub mfa: Arc<MfaState>,
    /// Where decisions go.
    pub audit: Arc<Audit>,
    /// The keys that sign `Portcullis-Assertion`; survive reloads.
    pub assertions: Arc<Assertions>,
    /// The grants of approved access requests; survive reloads.
    pub access_grants: Arc<AccessGrants>,
    /// Second-factor forms posted per client address.
    pub mfa_rate: Arc<Limiter>,
    /// Unique per gateway built; see [`Gateway::still_trusts`].
    pub generation: u64,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl Gateway {
    /// The gateway of one configuration, with the state that outlives it.
    pub fn new(settings: GatewaySettings, kept: Kept) -> Result<Self, rustls::Error> {
        Ok(Self {
            verifier: crate::tls::client_verifier(&settings, false)?,
            mfa_rate: kept.rate_limits.limiter("mfa", settings.mfa_rate),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            settings,
            mfa: kept.mfa,
            audit: kept.audit,
            assertions: kept.assertions,
            access_grants: kept.access_grants,
        })
    }
}

/// What every generation's gateway shares: built once at start.
#[derive(Debug, Clone)]
pub struct Kept {
    /// Session keys, used codes and lockouts.
    pub mfa: Arc<MfaState>,
    /// Where decisions go.
    pub audit: Arc<Audit>,
    /// The keys that sign `Portcullis-Assertion`.
    pub assertions: Arc<Assertions>,
    /// The grants of approved access requests.
    pub access_grants: Arc<AccessGrants>,
    /// Where the form's rate limit is kept across reloads.
    pub rate_limits: Arc<RateLimits>,
}

/// Applies the gateway to requests of one connection.
#[derive(Debug, Clone)]
pub struct GatewayLayer {
    conn: Arc<ConnectionInfo>,
}

impl GatewayLayer {
    /// The gateway of each request's configuration, for requests arriving on `conn`.
    pub fn new(conn: Arc<ConnectionInfo>) -> Self {
        Self { conn }
    }
}

impl<S> Layer<S> for GatewayLayer {
    type Service = GatewayService<S>;

    fn layer(&self, inner: S) -> GatewayService<S> {
        GatewayService {
            conn: self.conn.clone(),
            inner,
        }
    }
}

/// See [`GatewayLayer`].
#[derive(Debug, Clone)]
pub struct GatewayService<S> {
    conn: Arc<ConnectionInfo>,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A request body the gateway can read the MFA form from: hyper's `Incoming` when serving,
/// any body when the layers are called directly.
pub trait FormBody:
    http_body::Body<Data = bytes::Bytes, Error: Into<tower::BoxError>> + Send + Unpin + 'static
{
}

impl<B> FormBody for B where
    B: http_body::Body<Data = bytes::Bytes, Error: Into<tower::BoxError>> + Send + Unpin + 'static
{
}

/// What the gateway hands admitted requests to: the proxy when serving, a recorder in tests.
pub trait AdmittedService<B>:
    Service<
        Admitted<B>,
        Response = Response<ResponseBody>,
        Error = ProxyError,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> AdmittedService<B> for S where
    S: Service<
            Admitted<B>,
            Response = Response<ResponseBody>,
            Error = ProxyError,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

impl<S: AdmittedService<B>, B: FormBody> Service<Routed<B>> for GatewayService<S> {
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = Either<S::Future, BoxFuture<Result<Response<ResponseBody>, ProxyError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, routed: Routed<B>) -> Self::Future {
        let conn = self.conn.clone();
        if matches!(routed.route.action, Action::Reserved) {
            return Either::Right(Box::pin(second_factor::reserved(conn, routed)));
        }
        let Some(access) = routed.route.access.clone() else {
            return match Admitted::public(routed) {
                Ok(admitted) => Either::Left(self.inner.call(admitted)),
                Err(error) => Either::Right(Box::pin(std::future::ready(Err(error)))),
            };
        };
        let mut inner = self.inner.clone();
        Either::Right(Box::pin(async move {
            let gateway = routed.gateway.clone().ok_or(ProxyError::Forbidden)?;
            let route = routed.route.clone();
            let identity = identify(&gateway, &conn, &routed, &route, &access)?;
            let admission = match route.action {
                Action::Tunnel(_) => {
                    tunnel_admission::admit(&gateway, &identity, &access, routed).await?
                }
                _ => admit(&gateway, &identity, &access, routed)?,
            };
            match admission {
                Admission::Forward(admitted) => inner.call(*admitted).await,
                Admission::Answer(response) => Ok(response),
            }
        }))
    }
}

/// What the gateway does with a guarded request: let it through, or answer it itself (the MFA
/// form, a request for a code).
enum Admission<B> {
    Forward(Box<Admitted<B>>),
    Answer(Response<ResponseBody>),
}

fn audit_access<B>(
    gateway: &Gateway,
    routed: &Routed<B>,
    route: &Route,
    user: &str,
    (decision, reason): (Decision, &str),
) {
    gateway.audit.record(AuditRecord::Access {
        ts: Timestamp::now(),
        user: user.to_owned(),
        route: route.label.name.to_string(),
        method: routed.request.method().to_string(),
        path: gateway
            .audit
            .logged_path(routed.request.uri().path(), &route.label),
        decision,
        reason: reason.to_owned(),
        request_id: routed.exchange.logged_id(),
    });
}

/// Admits `client`, identified and granted, to an internal web route: with its second-factor
/// session when the route asks for one, else the form.
fn admit<B>(
    gateway: &Gateway,
    identity: &Identity<'_>,
    access: &RouteAccess,
    routed: Routed<B>,
) -> Result<Admission<B>, ProxyError> {
    let client = identity.client;
    let route = routed.route.clone();
    if access.mfa
        && !gateway
            .mfa
            .has_session(routed.request.headers(), client, &routed.host.name, &route)
    {
        return Ok(Admission::Answer(mfa::form(
            http::StatusCode::UNAUTHORIZED,
            &route,
            routed.request.uri().path(),
            "",
        )));
    }
    // The name goes upstream as a header: one that cannot be sent is refused, never dropped.
    let Ok(employee) = HeaderValue::from_str(&client.user) else {
        gateway.audit.deny(
            &route.label.name,
            &client.user,
            "name cannot be sent upstream",
        );
        return Err(ProxyError::Forbidden);
    };
    let reason = identity.basis.reason(if access.mfa {
        "certificate and second factor"
    } else {
        "certificate"
    });
    // A responder route has no upstream to assert anything to.
    let assertion = match &routed.route.action {
        Action::Forward { upstream, .. } if access.assertion => Some(
            sign_assertion(gateway, client, upstream.name(), &routed)
                .ok_or(ProxyError::Internal)?,
        ),
        _ => None,
    };
    audit_access(
        gateway,
        &routed,
        &route,
        &client.user,
        (Decision::Allowed, &reason),
    );
    let admitted = Admitted::employee(routed, employee, assertion)?;
    Ok(Admission::Forward(Box::new(admitted)))
}

/// `client`'s assertion for `audience` (the route's upstream), as a header value.
fn sign_assertion<B>(
    gateway: &Gateway,
    client: &ClientIdentity,
    audience: &str,
    routed: &Routed<B>,
) -> Option<HeaderValue> {
    let groups = gateway
        .settings
        .users
        .get(&client.user)
        .map_or(&[][..], |user| user.groups.as_slice());
    let request_id = routed.exchange.logged_id();
    let claims = assertion::Claims {
        sub: &client.user,
        groups,
        aud: audience,
        route: &routed.route.label.name,
        host: &routed.host.name,
        jti: &request_id,
        cnf: assertion::Confirmation::of(&client.fingerprint),
    };
    let token = gateway
        .assertions
        .sign(&claims, std::time::SystemTime::now())?;
    HeaderValue::from_str(&token).ok()
}
