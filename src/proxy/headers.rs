//! Header rewriting between client and upstream.
//!
//! RFC 9110 7.6.1: a proxy removes `Connection` and every header it names, plus the classic
//! hop-by-hop set, in both directions. Headers the proxy owns (forwarding, identity) are
//! dropped from what the client sent, never appended to, and set last, after every removal, so
//! that no `Connection` header can take them away: the upstream must be able to trust them.

use http::header::{
    CONNECTION, COOKIE, HOST, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Version};

use super::owned::is_client_claim;
use crate::cookies::{cookie_pairs, is_own_cookie};
use crate::gateway::ASSERTION_HEADER;
use crate::request_id::X_REQUEST_ID;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The employee the gateway admitted, set only by the gateway.
pub static USER_HEADER: HeaderName = HeaderName::from_static("x-portcullis-user");

/// The protocol a client asks to upgrade to, if it is one we tunnel: HTTP/1.1 only
/// (RFC 9110 7.8), `Upgrade` listed in `Connection`, and never `h2c`, which would let a client
/// speak cleartext HTTP/2 to the upstream past our limits.
pub fn requested_upgrade(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 || !connection_lists(headers, "upgrade") {
        return None;
    }
    let protocol = headers.get(UPGRADE)?;
    let h2c = protocol.to_str().map_or(true, |p| {
        p.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c"))
    });
    (!h2c).then(|| protocol.clone())
}

/// What the proxy tells the upstream about a request, set after every removal.
#[derive(Debug)]
pub struct Vouched<'a> {
    /// The request's validated authority: `Host` and `X-Forwarded-Host`.
    pub host: &'a Authority,
    /// The client's address: `X-Forwarded-For`.
    pub client: &'a HeaderValue,
    /// The employee the gateway admitted: `X-Portcullis-User`.
    pub user: Option<&'a HeaderValue>,
    /// Their signed assertion: `Portcullis-Assertion`.
    pub assertion: Option<&'a HeaderValue>,
    /// The request's id: `X-Request-Id`.
    pub request_id: Option<&'a HeaderValue>,
}

/// Prepares a client's headers for the upstream: hop-by-hop headers, every client claim (see
/// [`OWNED_REQUEST_HEADERS`](super::OWNED_REQUEST_HEADERS)), the `extra` names and the proxy's own cookies go; then what the
/// proxy vouches for is set.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    version: Version,
    vouched: &Vouched<'_>,
    extra: &[HeaderName],
    upgrade: Option<HeaderValue>,
) {
    remove_hop_by_hop(headers);
    let claims: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_client_claim(name, extra))
        .cloned()
        .collect();
    for name in claims {
        headers.remove(name);
    }
    if version == Version::HTTP_2 {
        join_cookies(headers);
    }
    strip_own_cookies(headers);
    // Everything below is set after every removal: a client's `Connection` cannot unset it.
    if let Some(user) = vouched.user {
        headers.insert(USER_HEADER.clone(), user.clone());
    }
    if let Some(assertion) = vouched.assertion {
        headers.insert(ASSERTION_HEADER.clone(), assertion.clone());
    }
    if let Some(id) = vouched.request_id {
        headers.insert(X_REQUEST_ID.clone(), id.clone());
    }
    if let Ok(authority) = HeaderValue::from_str(vouched.host.as_str()) {
        headers.insert(HOST, authority.clone());
        headers.insert(X_FORWARDED_HOST.clone(), authority);
    }
    headers.insert(X_FORWARDED_FOR.clone(), vouched.client.clone());
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
}

/// Prepares an upstream's headers for the client; a `101` keeps its upgrade headers.
pub fn rewrite_response(headers: &mut HeaderMap, switching_protocols: bool) {
    let upgrade = switching_protocols
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, then a removal per name present: most messages carry none of
    // these, and each removal hashes its name.
    let mut hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    if hop.contains(&CONNECTION) {
        hop.extend(
            headers
                .get_all(CONNECTION)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok()),
        );
    }
    for name in hop {
        headers.remove(name);
    }
}

/// RFC 9110 7.6.1's hop-by-hop fields, and the ones older proxies used.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes the proxy's own cookies, keeping the others in one `Cookie` header.
fn strip_own_cookies(headers: &mut HeaderMap) {
    if !cookie_pairs(headers).any(is_own_cookie) {
        return;
    }
    let kept: Vec<&[u8]> = cookie_pairs(headers)
        .filter(|pair| !is_own_cookie(pair))
        .collect();
    let value = HeaderValue::from_bytes(&kept.join(&b"; "[..]));
    headers.remove(COOKIE);
    if let Ok(value) = value
        && !value.is_empty()
    {
        headers.insert(COOKIE, value);
    }
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// RFC 9113 8.2.3: h2 may split `cookie` into several fields; HTTP/1.1 wants one, joined with
/// "; ".
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for cookie in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(cookie.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    /// `rewrite_request` for a client at 127.0.0.9 asking HTTP/1.1 for `host`, no user.
    fn rewrite_h1(headers: &mut HeaderMap, host: &str) {
        rewrite_as(headers, Version::HTTP_11, host);
    }

    fn rewrite_as(headers: &mut HeaderMap, version: Version, host: &str) {
        let authority: Authority = host.parse().unwrap();
        let client = HeaderValue::from_static("127.0.0.9");
        let vouched = Vouched {
            host: &authority,
            client: &client,
            user: None,
            assertion: None,
            request_id: None,
        };
        rewrite_request(headers, version, &vouched, &[], None);
    }

    #[test]
    fn request_loses_hop_by_hop_and_spoofed_forwarding() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("host", "evil.example"),
            ("accept", "*/*"),
        ]);
        rewrite_h1(&mut h, "app.example:8443");
        assert_eq!(h["host"], "app.example:8443");
        assert_eq!(h["x-forwarded-host"], "app.example:8443");
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["accept"], "*/*");
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn every_owned_header_a_client_sends_is_dropped() {
        let mut sent: Vec<(&str, &str)> = crate::proxy::OWNED_REQUEST_HEADERS
            .iter()
            .map(|n| (*n, "6"))
            .collect();
        sent.extend([
            ("x-portcullis-role", "admin"),
            ("x-envoy-peer", "6"),
            ("x_real_ip", "6"),
        ]);
        sent.extend([
            ("x-request", "kept"),
            ("forwarded-by", "kept"),
            ("accept", "kept"),
        ]);
        let mut h = map(&sent);
        rewrite_h1(&mut h, "app.example");
        let vouched_for = ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"];
        for (name, _) in &sent {
            match h.get(*name) {
                Some(value) if vouched_for.contains(name) => assert_ne!(value, "6", "{name}"),
                Some(value) => assert_eq!(value, "kept", "{name}"),
                None => {}
            }
        }
        assert_eq!(h.len(), 3 + vouched_for.len() + 1, "{h:?}");
    }

    #[test]
    fn owned_headers_survive_a_connection_header_naming_them() {
        let mut h = map(&[
            (
                "connection",
                "x-portcullis-user, x-forwarded-for, x-forwarded-proto, host",
            ),
            ("x-portcullis-user", "root"),
            ("x-client-cert", "forged"),
            ("x_forwarded_for", "6.6.6.6"),
            ("transfer_encoding", "chunked"),
            ("x-portcullis-role", "admin"),
            ("x-tenant", "other"),
            (
                "cookie",
                "a=1; __Host-portcullis-mfa-0=s; __HOST-PORTCULLIS-x=2; b=3",
            ),
        ]);
        let authority: Authority = "app.example".parse().unwrap();
        let client = HeaderValue::from_static("127.0.0.9");
        let vouched = Vouched {
            host: &authority,
            client: &client,
            user: Some(&HeaderValue::from_static("alice")),
            assertion: None,
            request_id: None,
        };
        let extra = [HeaderName::from_static("x-tenant")];
        rewrite_request(&mut h, Version::HTTP_11, &vouched, &extra, None);
        assert_eq!(h["x-portcullis-user"], "alice");
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["host"], "app.example");
        assert_eq!(h["cookie"], "a=1; b=3");
        for gone in [
            "x-client-cert",
            "x_forwarded_for",
            "transfer_encoding",
            "x-portcullis-role",
            "x-tenant",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn upgrade_is_kept_only_when_asked_and_not_h2c() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(
            requested_upgrade(Version::HTTP_11, &ws).unwrap(),
            "websocket"
        );
        assert!(requested_upgrade(Version::HTTP_2, &ws).is_none());
        let h2c = map(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(requested_upgrade(Version::HTTP_11, &h2c).is_none());
        let unlisted = map(&[("upgrade", "websocket")]);
        assert!(requested_upgrade(Version::HTTP_11, &unlisted).is_none());
    }

    #[test]
    fn h2_cookies_are_joined() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
        rewrite_as(&mut h, Version::HTTP_2, "x");
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
    }

    #[test]
    fn own_cookies_go_whatever_bytes_the_header_holds() {
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let mut h = HeaderMap::new();
            h.append(
                COOKIE,
                HeaderValue::from_bytes("name=J\u{fc}rgen; __Host-portcullis-mfa-0=s".as_bytes())
                    .unwrap(),
            );
            h.append(
                COOKIE,
                HeaderValue::from_static("__Host-portcullis-mfa-1=t"),
            );
            rewrite_as(&mut h, version, "x");
            let left: Vec<&[u8]> = h.get_all(COOKIE).iter().map(|v| v.as_bytes()).collect();
            assert_eq!(left, ["name=J\u{fc}rgen".as_bytes()], "{version:?}");
        }
    }
}
