//! The request headers only the proxy may set: whatever a client sends under these names is
//! removed from every request on every route, h1 and h2, before the proxy sets the few it
//! vouches for (`X-Forwarded-For`, `-Host`, `-Proto`, `X-Portcullis-User`, `Portcullis-Assertion`,
//! `X-Request-Id`).
//!
//! Two kinds of claim are here. Forwarding claims describe the client's address, its
//! connection, its certificate or the URL it asked for, as proxies, CDNs and balancers write
//! them. Identity claims name the user, as auth proxies write them for the app behind: an app
//! that trusts `Remote-User` from its auth proxy (Grafana's auth proxy, oauth2-proxy, Django's
//! `RemoteUserMiddleware`, Authelia, Kubernetes' front proxy) would take a client's own header
//! for the proxy's word. The README's "Headers the proxy owns" table lists the same families.

use std::collections::HashSet;
use std::sync::LazyLock;

use http::HeaderName;
use rustc_hash::FxBuildHasher;

/// Exact names a client may not send upstream (lowercase, as `HeaderName` holds them).
pub const OWNED_REQUEST_HEADERS: [&str; 75] = [
    // Ours: see `crate::request_id`.
    "x-request-id",
    // Forwarding: RFC 7239 and de-facto names outside the `x-forwarded-` prefix.
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-original-forwarded-for",
    "x-url-scheme",
    "front-end-https",
    // The client's address, as CDNs and balancers pass it.
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-proxyuser-ip",
    "x-appengine-user-ip",
    // The URL before a rewrite: IIS, Symfony and Zend route by these.
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-host",
    "x-host",
    // Client certificates, as other TLS terminators pass them.
    "x-client-cert",
    "x-ssl-client-cert",
    "x-ssl-cert",
    "ssl-client-cert",
    "x-arr-clientcert",
    "x-ssl-client-verify",
    "ssl-client-verify",
    "x-client-verify",
    "x-client-dn",
    "x-ssl-client-dn",
    "x-ssl-client-s-dn",
    "x-ssl-client-i-dn",
    "x-client-cert-chain",
    // Identity, as auth proxies set it: Authelia and Caddy's forward_auth (`Remote-*`), Django
    // (`REMOTE_USER` read from `Remote-User`), Kubernetes' front proxy (`X-Remote-*`).
    "remote-user",
    "remote-groups",
    "remote-email",
    "remote-name",
    "x-remote-user",
    "x-remote-group",
    "x-remote-groups",
    "x-remote-email",
    // Identity under generic names: nginx `auth_request` setups, Ory Oathkeeper, Traefik and
    // many in-house gateways.
    "x-user",
    "x-user-id",
    "x-userid",
    "x-user-name",
    "x-username",
    "x-user-email",
    "x-user-groups",
    "x-user-roles",
    "x-email",
    "x-groups",
    "x-roles",
    "x-authenticated-user",
    "x-authenticated-userid",
    "x-authenticated-email",
    "x-authenticated-groups",
    "x-authenticated-scope",
    // Keycloak Gatekeeper / Louketo (`X-Auth-Token` stays: OpenStack clients send their own).
    "x-auth-user",
    "x-auth-username",
    "x-auth-userid",
    "x-auth-email",
    "x-auth-subject",
    "x-auth-roles",
    "x-auth-groups",
    "x-auth-name",
    // Kong's authentication plugins.
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-username",
    "x-consumer-groups",
    "x-credential-identifier",
    "x-anonymous-consumer",
    // APISIX and OpenResty OIDC.
    "x-userinfo",
    "x-id-token",
    "x-jwt-assertion",
];

/// Prefixes a client may not send a header under: whole families, so that a new member
/// (`X-Forwarded-Preferred-Username`) is covered before anyone lists it.
pub const OWNED_REQUEST_PREFIXES: [&str; 19] = [
    // Ours; `Portcullis-OTP` carries a second-factor code to the gateway, never forwarded.
    "x-portcullis-",
    "portcullis-",
    // A mesh's.
    "x-envoy-",
    // Every `X-Forwarded-*`: the proxy sets `-For`, `-Host` and `-Proto` itself; oauth2-proxy
    // and Traefik put the user in `-User`, `-Email`, `-Groups`, `-Preferred-Username`.
    "x-forwarded-",
    // oauth2-proxy's `auth_request` answers.
    "x-auth-request-",
    // Kubernetes' front proxy: `X-Remote-Extra-<key>`.
    "x-remote-extra-",
    // Grafana and Gitea auth proxies: `X-WEBAUTH-USER`, `-EMAIL`, `-FULLNAME`.
    "x-webauth-",
    // Pomerium: `X-Pomerium-Jwt-Assertion`, `X-Pomerium-Claim-*`.
    "x-pomerium-",
    // Vouch Proxy: `X-Vouch-User`, `X-Vouch-Idp-Claims-*`.
    "x-vouch-",
    // Google IAP.
    "x-goog-authenticated-",
    "x-goog-iap-",
    // Cloudflare Access.
    "cf-access-",
    // AWS ALB's OIDC action.
    "x-amzn-oidc-",
    // Azure App Service authentication.
    "x-ms-client-principal",
    "x-ms-token-",
    // Tailscale Serve and Teleport application access.
    "tailscale-user-",
    "teleport-jwt-",
    // Shibboleth's header mode.
    "shib-",
    // Apache mod_auth_openidc with a `-` prefix configured.
    "oidc-claim-",
];

/// True for a request header a client may not send upstream: one the proxy owns, one `extra`
/// names, or one with `_` in its name, which CGI, WSGI and Rack servers read as the `-` spelling
/// (`X_Forwarded_For` is `X-Forwarded-For` to them; CVE-2024-45614). Like nginx's default
/// `underscores_in_headers off`, such headers are dropped, not refused.
pub(super) fn is_client_claim(name: &HeaderName, extra: &[HeaderName]) -> bool {
    // Asked of every header of every request: one hash instead of a comparison per name.
    static OWNED: LazyLock<HashSet<&str, FxBuildHasher>> =
        LazyLock::new(|| OWNED_REQUEST_HEADERS.into_iter().collect());
    let name_str = name.as_str();
    name_str.as_bytes().contains(&b'_')
        || OWNED.contains(name_str)
        || OWNED_REQUEST_PREFIXES
            .iter()
            .any(|p| name_str.starts_with(p))
        || extra.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str) -> bool {
        is_client_claim(&HeaderName::from_bytes(name.as_bytes()).unwrap(), &[])
    }

    #[test]
    fn every_listed_name_and_prefix_is_a_claim() {
        for name in OWNED_REQUEST_HEADERS {
            assert!(claim(name), "{name}");
        }
        for prefix in OWNED_REQUEST_PREFIXES {
            assert!(claim(&format!("{prefix}anything")), "{prefix}");
        }
    }

    #[test]
    fn lists_are_lowercase_and_without_repeats() {
        let mut seen = HashSet::new();
        for name in OWNED_REQUEST_HEADERS.iter().chain(&OWNED_REQUEST_PREFIXES) {
            assert_eq!(*name, name.to_ascii_lowercase());
            assert!(seen.insert(*name), "{name} twice");
        }
    }

    #[test]
    fn ordinary_headers_are_not_claims() {
        for name in [
            "accept",
            "authorization",
            "x-auth-token",
            "x-request",
            "forwarded-by",
            "user-agent",
            "x-csrf-token",
            "remote",
        ] {
            assert!(!claim(name), "{name}");
        }
    }
}
