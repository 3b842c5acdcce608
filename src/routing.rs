//! Which route serves a request: the compiled routes of one configuration, keyed by host, then
//! by the longest path prefix. Pure data and lookups, no IO.
//!
//! Selection is host first, path second, like nginx `server` then `location`: an exact host
//! beats a `*.domain` pattern, and a host that matches has no fallback to a wildcard when none
//! of its prefixes matches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderName, StatusCode};

use crate::access_log::RouteLabel;
use crate::config::RouteAccess;
use crate::host::{HostMap, HostPattern};
use crate::path::{PathError, RESERVED_PREFIX, lenient_path};
use crate::rate_limit::Limiter;
use crate::upstream::Upstream;

/// Where a matched request goes.
#[derive(Debug)]
pub struct Route {
    /// Its name (`host` + `path_prefix`, never the raw Host a client sent) and upstream's, for
    /// logs and metrics: made once, shared by every request's log line.
    pub label: Arc<RouteLabel>,
    /// The hosts it serves.
    pub host: HostPattern,
    /// Its path prefix.
    pub prefix: String,
    /// What it does.
    pub action: Action,
    /// For internal routes: who may pass.
    pub access: Option<RouteAccess>,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
    /// Requests per client address.
    pub limit: Option<Arc<Limiter>>,
}

/// What a route does with a request.
#[derive(Debug)]
pub enum Action {
    /// Forwards to an upstream pool.
    Forward {
        /// The pool.
        upstream: Arc<Upstream>,
        /// `[headers] strip`: removed from the request beside the built-in list.
        strip: Arc<[HeaderName]>,
    },
    /// Answers itself.
    Respond {
        /// The status.
        status: StatusCode,
        /// The body.
        body: Bytes,
    },
    /// The proxy's own endpoints under [`RESERVED_PREFIX`], answered by the gateway and never
    /// forwarded, whatever the routes say.
    Reserved,
    /// Opens a byte stream to an upstream: a `[[tunnels]]` target, asked for with `CONNECT`.
    Tunnel(TunnelTarget),
}

/// What a tunnel route opens.
#[derive(Debug)]
pub struct TunnelTarget {
    /// The name clients ask for, lowercase.
    pub target: String,
    /// The port clients ask for.
    pub port: u16,
    /// Where the stream goes.
    pub upstream: Arc<Upstream>,
    /// How long the stream may carry no byte either way.
    pub idle_timeout: Duration,
    /// With `protocol = "postgres"`: the database the gateway speaks to.
    pub postgres: Option<Arc<crate::postgres::PgTarget>>,
}

/// Why a `CONNECT` has no tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// The connection's host offers no tunnels: `CONNECT` means nothing here.
    #[error("CONNECT is not offered on this host")]
    NotOffered,
    /// Not one of the host's configured targets (another name, port, or an address).
    #[error("not a configured tunnel target")]
    UnknownTarget,
    /// A target that is not in authority form (`name:port`, RFC 9110 9.3.6).
    #[error("CONNECT target is not name:port")]
    NotAuthority,
}

/// The routes of one configuration.
#[derive(Debug)]
pub struct Routes {
    table: RouteTable<Arc<Route>>,
    /// Gateway host -> (target, port) -> tunnel route.
    tunnels: HashMap<String, HashMap<(String, u16), Arc<Route>>>,
    by_name: HashMap<Arc<str>, Arc<Route>>,
    reserved: Arc<Route>,
}

impl Routes {
    /// Indexes compiled routes by host and prefix, tunnel routes by host, target and port, and
    /// both by name.
    pub fn new(routes: Vec<Arc<Route>>, tunnel_routes: Vec<Arc<Route>>) -> Self {
        let by_name = routes
            .iter()
            .chain(&tunnel_routes)
            .map(|r| (r.label.name.clone(), r.clone()))
            .collect();
        let mut tunnels: HashMap<String, HashMap<(String, u16), Arc<Route>>> = HashMap::new();
        for route in tunnel_routes {
            if let (HostPattern::Exact(host), Action::Tunnel(target)) = (&route.host, &route.action)
            {
                let key = (target.target.clone(), target.port);
                tunnels.entry(host.clone()).or_default().insert(key, route);
            }
        }
        let table = RouteTable::new(
            routes
                .into_iter()
                .map(|r| (r.host.clone(), r.prefix.clone(), r)),
        );
        Self {
            table,
            tunnels,
            by_name,
            reserved: Arc::new(Route {
                label: Arc::new(RouteLabel {
                    name: RESERVED_PREFIX.into(),
                    prefix: RESERVED_PREFIX.into(),
                    upstream: None,
                }),
                host: HostPattern::Exact(String::new()),
                prefix: RESERVED_PREFIX.to_owned(),
                action: Action::Reserved,
                access: None,
                max_body_bytes: 0,
                // The gateway limits the form posted here itself (`mfa_rate`).
                limit: None,
            }),
        }
    }

    /// The route for `host` and a normalised `path`: `/.portcullis/` on every host is the
    /// proxy's own; internal prefixes fail closed against lenient readings of the path.
    pub fn route(&self, host: &str, path: &str) -> Result<Option<&Arc<Route>>, PathError> {
        if crate::path::is_reserved(path) {
            return Ok(Some(&self.reserved));
        }
        self.table
            .resolve_guarded(host, path, |route| route.access.is_some())
    }

    /// The tunnel route for a `CONNECT` to `authority` on a connection made for `host` (its
    /// SNI). Only a configured name and port match: an address, another port or a name with
    /// different spelling never does.
    pub fn tunnel(&self, host: &str, authority: &Authority) -> Result<&Arc<Route>, TunnelError> {
        let targets = self.tunnels.get(host).ok_or(TunnelError::NotOffered)?;
        let port = authority.port_u16().ok_or(TunnelError::UnknownTarget)?;
        let target = authority.host().to_ascii_lowercase();
        targets
            .get(&(target, port))
            .ok_or(TunnelError::UnknownTarget)
    }

    /// The route named `name` (`host` + prefix, or a tunnel's name), for the gateway's own
    /// endpoints and for judging open tunnels again after a reload.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Route>> {
        self.by_name.get(name)
    }

    /// True when some route is configured for `host`, whatever the path.
    pub fn serves_host(&self, host: &str) -> bool {
        self.table.serves_host(host)
    }
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
    hosts: HostMap<HostRoutes<T>>,
}

impl<T> RouteTable<T> {
    /// Compiles `(host, path_prefix, target)` entries; prefixes must start with `/`.
    pub fn new(entries: impl IntoIterator<Item = (HostPattern, String, T)>) -> Self {
        let mut hosts = HostMap::default();
        for (host, prefix, target) in entries {
            hosts
                .entry(host)
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
        for routes in hosts.values_mut() {
            routes
                .by_prefix
                .sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        }
        Self { hosts }
    }

    fn host_routes(&self, host: &str) -> Option<&HostRoutes<T>> {
        self.hosts.get(host)
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
    /// use portcullis::host::HostPattern;
    /// use portcullis::routing::RouteTable;
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
    use crate::host::HostPattern;

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
}
