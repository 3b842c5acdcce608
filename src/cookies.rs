//! The proxy's own cookies (the MFA session), which the gateway sets and the proxy strips
//! before anything reaches an upstream.

use http::HeaderMap;
use http::header::COOKIE;

/// Cookies whose names start with this are the proxy's own (the MFA session): upstreams never
/// see them. `__Host-` makes browsers keep them host-only, `Secure` and `Path=/`
/// (RFC 6265bis 4.1.3.2).
pub const OWN_COOKIE_PREFIX: &str = "__Host-portcullis";

/// The `name=value` pairs of every Cookie header (RFC 6265 5.4).
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
}

/// True for a cookie pair the proxy owns. Case-insensitive, because some frameworks read cookie
/// names that way.
pub fn is_own_cookie(pair: &str) -> bool {
    pair.get(..OWN_COOKIE_PREFIX.len())
        .is_some_and(|name| name.eq_ignore_ascii_case(OWN_COOKIE_PREFIX))
}
