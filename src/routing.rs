//! Which route serves a request: host patterns and a route table keyed by host, then by the
//! longest path prefix. Pure data and lookups, no IO; request parsing lives in the submodules.
//!
//! Selection is host first, path second, like nginx `server` then `location`: an exact host
//! beats a `*.domain` pattern, and a host that matches has no fallback to a wildcard when none
//! of its prefixes matches.

mod host;
mod path;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

pub use host::{HostError, RequestHost, request_host};
pub use path::{PathError, RESERVED_PREFIX, is_reserved, lenient_path, normalize_path};

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
    /// use portcullis::routing::HostPattern;
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

/// `a.example.com` -> `example.com`; what a one-label wildcard is keyed by.
pub(crate) fn parent_domain(host: &str) -> Option<&str> {
    host.split_once('.')
        .map(|(_, rest)| rest)
        .filter(|rest| !rest.is_empty())
}

/// LDH labels plus `_`, which real deployments use; lowercase only.
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// One route of a host: its prefix as written, lowercased, and its target.
#[derive(Debug)]
struct Prefixed<T> {
    prefix: String,
    lowercase: String,
    target: T,
}

/// Routes of one host, longest prefix first.
#[derive(Debug)]
struct HostRoutes<T> {
    by_prefix: Vec<Prefixed<T>>,
}

impl<T> HostRoutes<T> {
    fn resolve(&self, path: &str) -> Option<&T> {
        self.by_prefix
            .iter()
            .find(|r| prefix_matches(&r.prefix, path))
            .map(|r| &r.target)
    }

    fn resolve_lenient(&self, lenient: &str) -> Option<&T> {
        self.by_prefix
            .iter()
            .find(|r| prefix_matches(&r.lowercase, lenient))
            .map(|r| &r.target)
    }
}

/// Prefix match on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

/// A compiled route table; `T` is what a route leads to.
#[derive(Debug)]
pub struct RouteTable<T> {
    exact: HashMap<String, HostRoutes<T>>,
    wildcard: HashMap<String, HostRoutes<T>>,
}

impl<T> RouteTable<T> {
    /// Compiles `(host, path_prefix, target)` entries; prefixes must start with `/`.
    pub fn new(entries: impl IntoIterator<Item = (HostPattern, String, T)>) -> Self {
        let mut table = Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (host, prefix, target) in entries {
            let (map, key) = match host {
                HostPattern::Exact(name) => (&mut table.exact, name),
                HostPattern::Wildcard(suffix) => (&mut table.wildcard, suffix),
            };
            map.entry(key)
                .or_insert_with(|| HostRoutes {
                    by_prefix: Vec::new(),
                })
                .by_prefix
                .push(Prefixed {
                    lowercase: prefix.to_ascii_lowercase(),
                    prefix,
                    target,
                });
        }
        for routes in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            routes
                .by_prefix
                .sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        }
        table
    }

    fn host_routes(&self, host: &str) -> Option<&HostRoutes<T>> {
        self.exact
            .get(host)
            .or_else(|| self.wildcard.get(parent_domain(host)?))
    }

    /// True when some route is configured for `host`, whatever the path.
    pub fn serves_host(&self, host: &str) -> bool {
        self.host_routes(host).is_some()
    }

    /// The target for `host` and an already normalised `path`.
    pub fn resolve(&self, host: &str, path: &str) -> Option<&T> {
        self.host_routes(host)?.resolve(path)
    }

    /// Like [`resolve`](Self::resolve), failing closed around `guarded` targets (internal
    /// routes): when the path, read as a lenient upstream would read it (see
    /// [`lenient_path`]), falls under a guarded target that the exact reading missed, that
    /// target is returned, so its gateway judges the request. `/ADMIN`, `/admin;x` or
    /// `/admin.` reach an IIS or Tomcat `/admin` only through the `/admin` route's gateway.
    ///
    /// ```
    /// use portcullis::routing::{HostPattern, RouteTable};
    ///
    /// let host = HostPattern::parse("app.test").unwrap();
    /// let table = RouteTable::new([
    ///     (host.clone(), "/".to_owned(), "public"),
    ///     (host, "/admin".to_owned(), "internal"),
    /// ]);
    /// let internal = |t: &&str| *t == "internal";
    /// for path in ["/ADMIN", "/admin;jsessionid=1", "/admin.", "/admin%09", "/x/..;/admin"] {
    ///     assert_eq!(table.resolve_guarded("app.test", path, internal), Ok(Some(&"internal")));
    /// }
    /// assert_eq!(table.resolve_guarded("app.test", "/administrator", internal), Ok(Some(&"public")));
    /// ```
    pub fn resolve_guarded(
        &self,
        host: &str,
        path: &str,
        guarded: impl Fn(&T) -> bool,
    ) -> Result<Option<&T>, PathError> {
        let Some(routes) = self.host_routes(host) else {
            return Ok(None);
        };
        let exact = routes.resolve(path);
        if !routes.by_prefix.iter().any(|r| guarded(&r.target)) {
            return Ok(exact);
        }
        let lenient = lenient_path(path)?;
        Ok(match routes.resolve_lenient(&lenient) {
            Some(target) if guarded(target) && !exact.is_some_and(|e| std::ptr::eq(e, target)) => {
                Some(target)
            }
            _ => exact,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let p = |s: &str| HostPattern::parse(s).unwrap();
        RouteTable::new([
            (p("example.com"), "/".to_owned(), "root"),
            (p("example.com"), "/api".to_owned(), "api"),
            (p("example.com"), "/api/v2/".to_owned(), "v2"),
            (p("*.example.com"), "/".to_owned(), "wild"),
            (p("only.example.com"), "/x".to_owned(), "only-x"),
        ])
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        assert_eq!(t.resolve("example.com", "/"), Some(&"root"));
        assert_eq!(t.resolve("example.com", "/api"), Some(&"api"));
        assert_eq!(t.resolve("example.com", "/api/x"), Some(&"api"));
        assert_eq!(t.resolve("example.com", "/apix"), Some(&"root"));
        assert_eq!(t.resolve("example.com", "/api/v2"), Some(&"api"));
        assert_eq!(t.resolve("example.com", "/api/v2/users"), Some(&"v2"));
    }

    #[test]
    fn exact_host_beats_wildcard_without_fallback() {
        let t = table();
        assert_eq!(t.resolve("a.example.com", "/z"), Some(&"wild"));
        assert_eq!(t.resolve("only.example.com", "/x/1"), Some(&"only-x"));
        assert_eq!(t.resolve("only.example.com", "/y"), None);
        assert_eq!(t.resolve("a.b.example.com", "/"), None);
        assert_eq!(t.resolve("other.com", "/"), None);
        assert!(t.serves_host("a.example.com"));
        assert!(!t.serves_host("example.org"));
    }

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
}
