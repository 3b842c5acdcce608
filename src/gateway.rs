//! The gateway for internal tools: a named employee's certificate, their grant on the route, and
//! optionally a current TOTP code once per session; every decision goes to the audit trail.
//!
//! Sits after routing (it needs the route's grants) and before the proxy; public routes pass
//! through untouched.

mod mfa;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{HeaderValue, Response};
use tower::{Layer, Service};

pub use mfa::{MFA_COOKIE, MFA_PATH, MfaState};

use crate::access_log::mask_path;
use crate::app::ConnectionInfo;
use crate::audit::{Audit, AuditRecord, now};
use crate::body::ResponseBody;
use crate::config::{GatewaySettings, RouteAccess};
use crate::error::ProxyError;
use crate::proxy::Routed;

/// The header the upstream reads the employee from; any client-sent copy is removed first.
pub const USER_HEADER: &str = "x-portcullis-user";

/// An employee as their certificate names them.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The subject CN.
    pub user: String,
    /// SHA-256 of the certificate, binding MFA sessions to it.
    pub fingerprint: [u8; 32],
}

impl ClientIdentity {
    /// The verified client certificate's subject CN, if the handshake carried one.
    pub fn from_session(session: &rustls::ServerConnection) -> Option<Self> {
        let leaf = session.peer_certificates()?.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let user = cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_owned();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf);
        let fingerprint = <[u8; 32]>::try_from(digest.as_ref()).ok()?;
        Some(Self { user, fingerprint })
    }
}

/// The gateway's configuration and state.
#[derive(Debug)]
pub struct Gateway {
    /// People and trust settings.
    pub settings: GatewaySettings,
    /// Session keys and used codes; survive reloads.
    pub mfa: Arc<MfaState>,
    /// Where decisions go.
    pub audit: Arc<Audit>,
}

/// Applies the gateway to requests of one connection.
#[derive(Debug, Clone)]
pub struct GatewayLayer {
    gateway: Option<Arc<Gateway>>,
    conn: Arc<ConnectionInfo>,
}

impl GatewayLayer {
    /// The gateway (if configured) for requests arriving on `conn`.
    pub fn new(gateway: Option<Arc<Gateway>>, conn: Arc<ConnectionInfo>) -> Self {
        Self { gateway, conn }
    }
}

impl<S> Layer<S> for GatewayLayer {
    type Service = GatewayService<S>;

    fn layer(&self, inner: S) -> GatewayService<S> {
        GatewayService {
            layer: self.clone(),
            inner,
        }
    }
}

/// See [`GatewayLayer`].
#[derive(Debug, Clone)]
pub struct GatewayService<S> {
    layer: GatewayLayer,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Routed> for GatewayService<S>
where
    S: Service<Routed, Response = Response<ResponseBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = Either<S::Future, BoxFuture<Result<Response<ResponseBody>, ProxyError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut routed: Routed) -> Self::Future {
        // Identity headers are ours to set: whatever a client sent under these names goes.
        let headers = routed.request.headers_mut();
        for name in [
            USER_HEADER,
            "x-forwarded-client-cert",
            "x-client-cert",
            "x-ssl-client-cert",
        ] {
            headers.remove(name);
        }
        let Some(access) = routed.route.access.clone() else {
            return Either::Left(self.inner.call(routed));
        };
        let (layer, mut inner) = (self.layer.clone(), self.inner.clone());
        Either::Right(Box::pin(async move {
            let Some(gateway) = layer.gateway else {
                return Err(ProxyError::Forbidden);
            };
            match admit(&gateway, &layer.conn, &access, routed).await? {
                Admission::Forward(routed) => inner.call(*routed).await,
                Admission::Answer(response) => Ok(response),
            }
        }))
    }
}

enum Admission {
    Forward(Box<Routed>),
    Answer(Response<ResponseBody>),
}

async fn admit(
    gateway: &Gateway,
    conn: &ConnectionInfo,
    access: &RouteAccess,
    mut routed: Routed,
) -> Result<Admission, ProxyError> {
    // The connection must have been made for this very host: a certificate that also covers an
    // internal name must not let a public host's connection reach it.
    if conn.sni.as_deref() != Some(routed.host.name.as_str()) {
        return Err(ProxyError::Misdirected);
    }
    let (route, method) = (
        routed.route.name.to_string(),
        routed.request.method().to_string(),
    );
    let path = mask_path(routed.request.uri().path());
    let decide = |decision: &str, user: &str, reason: &str| {
        gateway.audit.record(&AuditRecord::Access {
            ts: now(),
            user: user.to_owned(),
            route: route.clone(),
            method: method.clone(),
            path: path.clone(),
            decision: decision.to_owned(),
            reason: reason.to_owned(),
        });
    };
    let Some(client) = &conn.client else {
        decide("denied", "-", "no client certificate");
        return Err(ProxyError::Forbidden);
    };
    let Some(user) = gateway.settings.users.get(&client.user) else {
        decide("denied", &client.user, "not a configured user");
        return Err(ProxyError::Forbidden);
    };
    if !access
        .allow
        .iter()
        .any(|g| g.admits(&client.user, &user.groups))
    {
        decide("denied", &client.user, "not granted on this route");
        return Err(ProxyError::Forbidden);
    }
    if access.mfa {
        let totp = user.totp.as_deref().ok_or(ProxyError::Forbidden)?;
        match gateway
            .mfa
            .check(&mut routed, client, totp, gateway.settings.mfa_session)
            .await
        {
            mfa::Outcome::Session => {}
            mfa::Outcome::Passed(response) => {
                decide("mfa_passed", &client.user, "current TOTP code");
                return Ok(Admission::Answer(response));
            }
            mfa::Outcome::Failed(response) => {
                decide(
                    "mfa_failed",
                    &client.user,
                    "wrong, expired or replayed TOTP code",
                );
                return Ok(Admission::Answer(response));
            }
            mfa::Outcome::Form(response) => return Ok(Admission::Answer(response)),
        }
    }
    decide(
        "allowed",
        &client.user,
        if access.mfa {
            "certificate and second factor"
        } else {
            "certificate"
        },
    );
    if let Ok(value) = HeaderValue::from_str(&client.user) {
        routed.request.headers_mut().insert(USER_HEADER, value);
    }
    Ok(Admission::Forward(Box::new(routed)))
}
