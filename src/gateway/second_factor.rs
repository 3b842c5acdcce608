//! The second factor: judging a TOTP code, once, the same way for the web form and for a
//! tunnel's header, with every outcome in the audit trail; and the form's target under
//! `/.portcullis/`, the one endpoint of the proxy's own.

use std::sync::Arc;

use http::{Method, Response, StatusCode};

use super::{FormBody, Gateway, Identity, Routed, assertion, audit_access, identify, mfa};
use crate::audit::Decision;
use crate::body::ResponseBody;
use crate::connection::{ClientIdentity, ConnectionInfo};
use crate::error::{ProxyError, status_response};
use crate::routing::Route;

/// Judges `code` as `client`'s second factor by the attempt limits and the replay rule.
/// Refused when `user` has no TOTP.
pub(super) async fn judge(
    gateway: &Gateway,
    identity: &Identity<'_>,
    code: &str,
) -> Result<mfa::Attempt, ProxyError> {
    let totp = identity.user.totp.as_deref().ok_or(ProxyError::Forbidden)?;
    let lockout = gateway.settings.lockout;
    let user = &identity.client.user;
    Ok(gateway.mfa.attempt(user, totp, code, lockout).await)
}

/// Writes a judged attempt on `route` to the audit trail: `None` when it passed, else the
/// answer to send (`wrong` for a wrong, expired or replayed code).
pub(super) fn verdict<B>(
    gateway: &Gateway,
    (routed, route): (&Routed<B>, &Route),
    client: &ClientIdentity,
    attempt: &mfa::Attempt,
    wrong: impl FnOnce() -> Response<ResponseBody>,
) -> Option<Response<ResponseBody>> {
    audit_attempt(gateway, routed, route, client, attempt);
    match attempt {
        mfa::Attempt::Passed => None,
        mfa::Attempt::Failed { .. } => Some(wrong()),
        mfa::Attempt::Locked(remaining) => Some(mfa::locked(*remaining)),
        mfa::Attempt::Unavailable => Some(status_response(StatusCode::SERVICE_UNAVAILABLE)),
    }
}

/// The proxy's own endpoints: the MFA form's target and the assertion keys. Everything else
/// under `/.portcullis/` is 404, and nothing here is ever forwarded.
pub(super) async fn reserved<B: FormBody>(
    conn: Arc<ConnectionInfo>,
    mut routed: Routed<B>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let gateway = routed.gateway.clone().ok_or(ProxyError::NoRoute)?;
    let path = routed.request.uri().path();
    let method = routed.request.method();
    if path == assertion::JWKS_PATH && (method == Method::GET || method == Method::HEAD) {
        return Ok(jwks(&gateway));
    }
    if path != mfa::MFA_PATH || method != Method::POST {
        return Err(ProxyError::NoRoute);
    }
    // Before the form is read: guessing codes from many users' certificates on one address
    // is slowed here, on top of each user's lockout.
    gateway.mfa_rate.check(conn.client_ip)?;
    let form = mfa::read_form(&mut routed.request).await;
    // The form names its route; it must be an MFA route serving this host.
    let route = routed
        .routes
        .by_name(form.route.as_str())
        .filter(|route| route.host.matches(&routed.host.name))
        .cloned()
        .ok_or(ProxyError::NoRoute)?;
    let access = match &route.access {
        Some(access) if access.mfa => access.clone(),
        _ => return Err(ProxyError::NoRoute),
    };
    let identity = identify(&gateway, &conn, &routed, &route, &access)?;
    let back = mfa::return_path(&form.back, |path| {
        routed
            .routes
            .route(&routed.host.name, path)
            .ok()
            .flatten()
            .is_some_and(|r| Arc::ptr_eq(r, &route))
    })
    .unwrap_or_else(|| route.prefix.clone());
    let attempt = judge(&gateway, &identity, &form.code).await?;
    let (client, session) = (identity.client, gateway.settings.mfa_session);
    let wrong = || {
        mfa::form(
            StatusCode::FORBIDDEN,
            &route,
            &back,
            "That code was not accepted.",
        )
    };
    if let Some(answer) = verdict(&gateway, (&routed, &route), client, &attempt, wrong) {
        return Ok(answer);
    }
    let cookie = gateway
        .mfa
        .session_cookie(client, &routed.host.name, &route, session);
    Ok(mfa::passed(cookie, &back))
}

/// Writes the outcome of a TOTP attempt of `client` on `route` to the audit trail: passed,
/// failed (and the lockout it starts), refused unread during a lockout, or not judged.
fn audit_attempt<B>(
    gateway: &Gateway,
    routed: &Routed<B>,
    route: &Route,
    client: &ClientIdentity,
    attempt: &mfa::Attempt,
) {
    let audit = |decision| audit_access(gateway, routed, route, &client.user, decision);
    match attempt {
        mfa::Attempt::Passed => audit((Decision::MfaPassed, "current TOTP code")),
        mfa::Attempt::Failed { lockout } => {
            audit((Decision::MfaFailed, "wrong, expired or replayed TOTP code"));
            if let Some((failures, duration)) = lockout {
                let reason = format!(
                    "{failures} wrong TOTP codes in a row; locked for {}s",
                    duration.as_secs()
                );
                audit((Decision::MfaLocked, reason.as_str()));
            }
        }
        mfa::Attempt::Locked(_) => gateway.audit.deny(
            &route.label.name,
            &client.user,
            "locked out after wrong TOTP codes",
        ),
        mfa::Attempt::Unavailable => gateway.audit.deny(
            &route.label.name,
            &client.user,
            "TOTP code not judged: the shared MFA store is unavailable",
        ),
    }
}

/// The public keys that verify `Portcullis-Assertion`: public, so on every host of the gateway
/// with no certificate asked; cacheable for less than the overlap between two keys.
fn jwks(gateway: &Gateway) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(
        gateway.assertions.jwks(std::time::SystemTime::now()),
    ));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
