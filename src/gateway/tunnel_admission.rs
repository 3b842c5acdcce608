//! The gateway's side of `CONNECT` tunnels: the same certificate, person and grant as an internal
//! web route; the second factor in a request header, since no browser shows a form; and the
//! tunnel's open line in the audit trail.
//!
//! The code is judged by the same attempt limits and replay rule as the web form. A passed code
//! opens a session for this certificate on this tunnel for `mfa_session`, so the next `ssh` to
//! the same server does not ask again.

use http::{HeaderName, HeaderValue, StatusCode};

use super::{Admission, Admitted, Basis, Gateway, Identity, Routed, second_factor};
use crate::audit::TunnelAudit;
use crate::config::RouteAccess;
use crate::error::{ProxyError, status_response};
use crate::routing::{Action, TunnelTarget};

/// Carries the current TOTP code on a `CONNECT`; on a refusal, says why: `required` (no code
/// was sent) or `rejected` (the code was wrong, expired or used before).
pub const OTP_HEADER: HeaderName = HeaderName::from_static("portcullis-otp");

/// Admits `identity`, identified and granted, to a tunnel: with its second-factor session or a
/// current code in [`OTP_HEADER`] when the tunnel asks for one.
pub(super) async fn admit<B>(
    gateway: &Gateway,
    identity: &Identity<'_>,
    access: &RouteAccess,
    routed: Routed<B>,
) -> Result<Admission<B>, ProxyError> {
    let route = routed.route.clone();
    let client = identity.client;
    let name = &route.label.name;
    let reason = if !access.mfa {
        "certificate"
    } else if gateway.mfa.has_tunnel_session(client, name).await {
        "certificate and second-factor session"
    } else {
        // The first attempt of `portcullis connect` carries no code: it learns here whether
        // one is wanted, so this is not a refusal worth an audit line.
        let Some(code) = routed.request.headers().get(&OTP_HEADER) else {
            return Ok(Admission::Answer(otp_wanted(
                StatusCode::UNAUTHORIZED,
                "required",
            )));
        };
        let code = code.to_str().unwrap_or_default().to_owned();
        let attempt = second_factor::judge(gateway, identity, &code).await?;
        let wrong = || otp_wanted(StatusCode::FORBIDDEN, "rejected");
        let judged = (&routed, route.as_ref());
        if let Some(answer) = second_factor::verdict(gateway, judged, client, &attempt, wrong) {
            return Ok(Admission::Answer(answer));
        }
        let session = gateway.settings.mfa_session;
        gateway.mfa.open_tunnel_session(client, name, session).await;
        "certificate and second factor"
    };
    let audit = TunnelAudit::open(
        gateway.audit.clone(),
        routed.exchange.logged_id(),
        (&client.user, &client.fingerprint),
        name,
        &identity.basis.reason(reason),
        access.mfa,
    );
    let grant = match &identity.basis {
        Basis::Granted(grant) => Some(grant.clone()),
        Basis::Allowed => None,
    };
    let writable = match &route.action {
        Action::Tunnel(target) => gateway.may_write(target, &client.user).unwrap_or(true),
        _ => false,
    };
    let admitted = Admitted::tunnel(routed, audit, grant, writable)?;
    Ok(Admission::Forward(Box::new(admitted)))
}

impl Gateway {
    /// On a database tunnel, whether `user` may send statements that change anything: a
    /// read-only one lets only its `allow_write` do so. `None` on a tunnel that carries bytes.
    pub fn may_write(&self, target: &TunnelTarget, user: &str) -> Option<bool> {
        let groups = self
            .settings
            .users
            .get(user)
            .map_or(&[][..], |settings| &settings.groups);
        Some(target.postgres.as_ref()?.writable(user, groups))
    }
}

fn otp_wanted(status: StatusCode, why: &'static str) -> http::Response<crate::body::ResponseBody> {
    let mut response = status_response(status);
    response
        .headers_mut()
        .insert(OTP_HEADER, HeaderValue::from_static(why));
    response
}
