//! Host names as routes, certificates and client-certificate policies name them: a pattern type,
//! a map keyed by patterns, and the host a request is for.
//!
//! A route, the certificate that serves it and the policy for its client certificates must agree
//! on which names a pattern covers, so all three look names up through one [`HostMap`].

mod request;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::IpAddr;

use rustc_hash::FxBuildHasher;

pub use request::{HostError, RequestHost, request_host};

/// A host as written in a route or a certificate: `example.com` or `*.example.com`.
///
/// Always lowercase, without a trailing dot. A wildcard covers exactly one label, as in TLS
/// (RFC 6125 6.4.3), so that a route and the certificate that serves it agree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One name or IP address literal (IPv6 without brackets).
    Exact(String),
    /// `*.suffix`: holds the suffix, without the leading `*.`.
    Wildcard(String),
}

/// Why a host pattern in the config or a certificate is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host name, an IP address or a \"*.domain\" pattern")]
pub struct BadHostPattern(pub String);

impl HostPattern {
    /// Parses a config or SAN value.
    ///
    /// ```
    /// use portcullis::host::HostPattern;
    ///
    /// let wildcard = HostPattern::parse("*.Example.com").unwrap();
    /// assert!(wildcard.matches("api.example.com"));
    /// assert!(!wildcard.matches("a.b.example.com"), "one label, as in TLS");
    /// assert!(HostPattern::parse("*.com").is_err());
    /// ```
    pub fn parse(raw: &str) -> Result<Self, BadHostPattern> {
        let bad = || BadHostPattern(raw.to_owned());
        let lower = raw.trim_end_matches('.').to_ascii_lowercase();
        let unbracketed = lower.trim_start_matches('[').trim_end_matches(']');
        if unbracketed.parse::<IpAddr>().is_ok() {
            return Ok(Self::Exact(unbracketed.to_owned()));
        }
        match lower.strip_prefix("*.") {
            Some(suffix) if is_dns_name(suffix) && suffix.contains('.') => {
                Ok(Self::Wildcard(suffix.to_owned()))
            }
            Some(_) => Err(bad()),
            None if is_dns_name(&lower) => Ok(Self::Exact(lower)),
            None => Err(bad()),
        }
    }

    /// True when `host` (normalised as by [`request_host`]) is covered by this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Wildcard(suffix) => parent_domain(host) == Some(suffix.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// True when one of a certificate's `names` covers `host` (normalised, as from
/// [`request_host`]).
pub fn any_covers(names: &[HostPattern], host: &str) -> bool {
    names.iter().any(|name| name.matches(host))
}

/// `a.example.com` -> `example.com`; what a one-label wildcard is keyed by.
fn parent_domain(host: &str) -> Option<&str> {
    host.split_once('.')
        .map(|(_, rest)| rest)
        .filter(|rest| !rest.is_empty())
}

/// LDH labels plus `_`, which real deployments use; lowercase only. One pass over the bytes:
/// it runs on every request's host.
pub fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let mut label = 0;
    for b in name.bytes() {
        if b == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' {
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
    }
    label > 0
}

/// Values keyed by host pattern. An exact name beats a `*.domain` pattern, and a lookup never
/// falls back further than one label, as in TLS.
///
/// Looked up with every request's host and every handshake's SNI, so hashed with Fx rather than
/// std's SipHash: only the config inserts keys, so a client cannot build the collisions a keyed
/// hash defends against; it can only look a name up, one probe sequence whatever the hash.
#[derive(Debug, Clone)]
pub struct HostMap<T> {
    exact: HashMap<String, T, FxBuildHasher>,
    wildcard: HashMap<String, T, FxBuildHasher>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            wildcard: HashMap::default(),
        }
    }
}

impl<T> HostMap<T> {
    /// The slot of `pattern` itself (not of the names it covers).
    pub fn entry(&mut self, pattern: HostPattern) -> Entry<'_, String, T> {
        match pattern {
            HostPattern::Exact(name) => self.exact.entry(name),
            HostPattern::Wildcard(suffix) => self.wildcard.entry(suffix),
        }
    }

    /// The value for `host` (lowercase, normalised as by [`request_host`]): its exact entry, or
    /// the wildcard of its parent domain.
    pub fn get(&self, host: &str) -> Option<&T> {
        self.exact
            .get(host)
            .or_else(|| self.wildcard.get(parent_domain(host)?))
    }

    /// The value stored for `pattern` itself: an exact name's, or a wildcard's (not the
    /// wildcard covering an exact name).
    pub fn get_pattern(&self, pattern: &HostPattern) -> Option<&T> {
        match pattern {
            HostPattern::Exact(name) => self.exact.get(name),
            HostPattern::Wildcard(suffix) => self.wildcard.get(suffix),
        }
    }

    /// Every value, exact names first.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.exact.values_mut().chain(self.wildcard.values_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_parse_and_refuse() {
        assert_eq!(
            HostPattern::parse("Example.COM."),
            Ok(HostPattern::Exact("example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("*.example.com"),
            Ok(HostPattern::Wildcard("example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("[::1]"),
            Ok(HostPattern::Exact("::1".into()))
        );
        for bad in [
            "",
            "*",
            "*.com",
            "a..b",
            "exa mple.com",
            "a/b",
            "*.*.x.com",
            "ex*.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dns_names_are_lowercase_ldh_labels_of_bounded_length() {
        let label63 = "a".repeat(63);
        let name253 = [
            "a".repeat(61),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63),
        ]
        .join(".");
        assert_eq!(name253.len(), 253);
        for good in [
            "a",
            "x-1.example.com",
            "_dmarc.example.com",
            "127.0.0.1",
            &label63,
            &name253,
        ] {
            assert!(is_dns_name(good), "{good:?}");
        }
        for bad in [
            "",
            ".",
            ".a",
            "a.",
            "a..b",
            "A.example.com",
            "a b",
            "a:1",
            "é.com",
            &format!("{label63}a"),
            &format!("a{name253}"),
        ] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn map_prefers_exact_and_covers_one_label() {
        let mut map = HostMap::default();
        map.entry(HostPattern::parse("*.example.com").unwrap())
            .or_insert("wild");
        map.entry(HostPattern::parse("a.example.com").unwrap())
            .or_insert("exact");
        assert_eq!(map.get("a.example.com"), Some(&"exact"));
        assert_eq!(map.get("b.example.com"), Some(&"wild"));
        assert_eq!(map.get("x.b.example.com"), None);
        assert_eq!(map.get("example.com"), None);
    }
}
