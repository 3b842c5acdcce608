//! Header rewriting between client and upstream.
//!
//! RFC 9110 7.6.1: a proxy removes `Connection` and every header it names, plus the classic
//! hop-by-hop set, in both directions. Forwarding headers a client sent are dropped, never
//! appended to: the upstream must be able to trust `X-Forwarded-For`.

use http::header::{
    CONNECTION, COOKIE, HOST, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Version};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

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

/// Prepares a client's headers for the upstream.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    version: Version,
    host: &Authority,
    forwarded_for: &HeaderValue,
    upgrade: Option<HeaderValue>,
) {
    remove_hop_by_hop(headers);
    for name in [
        &FORWARDED,
        &X_FORWARDED_FOR,
        &X_FORWARDED_HOST,
        &X_FORWARDED_PROTO,
        &X_REAL_IP,
    ] {
        headers.remove(name);
    }
    if version == Version::HTTP_2 {
        join_cookies(headers);
    }
    let authority = HeaderValue::from_str(host.as_str()).ok();
    if let Some(authority) = authority {
        headers.insert(HOST, authority.clone());
        headers.insert(X_FORWARDED_HOST.clone(), authority);
    }
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for.clone());
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
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ] {
        headers.remove(name);
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
        let authority: Authority = "app.example:8443".parse().unwrap();
        rewrite_request(
            &mut h,
            Version::HTTP_11,
            &authority,
            &HeaderValue::from_static("127.0.0.9"),
            None,
        );
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
        let authority: Authority = "x".parse().unwrap();
        rewrite_request(
            &mut h,
            Version::HTTP_2,
            &authority,
            &HeaderValue::from_static("127.0.0.1"),
            None,
        );
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
    }
}
