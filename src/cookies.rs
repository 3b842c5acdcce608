//! The proxy's own cookies (the MFA session), which the gateway sets and the proxy strips
//! before anything reaches an upstream.

use http::HeaderMap;
use http::header::COOKIE;

/// Cookies whose names start with this are the proxy's own (the MFA session): upstreams never
/// see them. `__Host-` makes browsers keep them host-only, `Secure` and `Path=/`
/// (RFC 6265bis 4.1.3.2).
pub const OWN_COOKIE_PREFIX: &str = "__Host-portcullis";

/// The `name=value` pairs of every Cookie header (RFC 6265 5.4), as bytes: a header is split
/// whatever it holds. Skipping a header that is not visible ASCII (a UTF-8 value an app set)
/// would let every pair in it, the proxy's own among them, through unseen.
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty())
}

/// True for a cookie pair the proxy owns. Case-insensitive, because some frameworks read cookie
/// names that way.
pub fn is_own_cookie(pair: &[u8]) -> bool {
    pair.get(..OWN_COOKIE_PREFIX.len())
        .is_some_and(|name| name.eq_ignore_ascii_case(OWN_COOKIE_PREFIX.as_bytes()))
}
