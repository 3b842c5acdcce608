//! The gateway's side of `CONNECT` tunnels: the same certificate, person and grant as an internal
//! web route; the second factor in a request header, since no browser shows a form; and the
//! tunnel's open line in the audit trail.
//!
//! The code is judged by the same attempt limits and replay rule as the web form. A passed code
//! opens a session for this certificate on this tunnel for `mfa_session`, so the next `ssh` to
//! the same server does not ask again.

use http::{HeaderName, HeaderValue, StatusCode};

use super::{Admission, Gateway, audit_attempt, identify, mfa};
use crate::access_log::logged_request_id;
use crate::audit::TunnelAudit;
use crate::config::RouteAccess;
use crate::connection::ConnectionInfo;
use crate::error::{ProxyError, status_response};
use crate::routing::Routed;

/// Carries the current TOTP code on a `CONNECT`; on a refusal, says why: `required` (no code
/// was sent) or `rejected` (the code was wrong, expired or used before).
pub const OTP_HEADER: HeaderName = HeaderName::from_static("portcullis-otp");

pub(super) async fn admit<B>(
    gateway: &Gateway,
    conn: &ConnectionInfo,
    access: &RouteAccess,
    mut routed: Routed<B>,
) -> Result<Admission<B>, ProxyError> {
    let route = routed.route.clone();
    let (client, user) = identify(gateway, conn, &routed, &route, access)?;
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
        let totp = user.totp.as_deref().ok_or(ProxyError::Forbidden)?;
        let attempt = gateway
            .mfa
            .attempt(&client.user, totp, &code, gateway.settings.lockout)
            .await;
        audit_attempt(gateway, &routed, &route, client, &attempt);
        match attempt {
            mfa::Attempt::Passed => {
                let session = gateway.settings.mfa_session;
                gateway.mfa.open_tunnel_session(client, name, session).await;
                "certificate and second factor"
            }
            mfa::Attempt::Failed { .. } => {
                return Ok(Admission::Answer(otp_wanted(
                    StatusCode::FORBIDDEN,
                    "rejected",
                )));
            }
            mfa::Attempt::Locked(remaining) => {
                return Ok(Admission::Answer(mfa::locked(remaining)));
            }
            mfa::Attempt::Unavailable => {
                return Ok(Admission::Answer(status_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                )));
            }
        }
    };
    routed.tunnel = Some(TunnelAudit::open(
        gateway.audit.clone(),
        logged_request_id(routed.request.extensions()),
        (&client.user, &client.fingerprint),
        name,
        reason,
        access.mfa,
    ));
    Ok(Admission::Forward(Box::new(routed)))
}

fn otp_wanted(status: StatusCode, why: &'static str) -> http::Response<crate::body::ResponseBody> {
    let mut response = status_response(status);
    response
        .headers_mut()
        .insert(OTP_HEADER, HeaderValue::from_static(why));
    response
}
