//! The validated configuration: what the rest of the program trusts.
//!
//! `raw.rs` mirrors the TOML; [`Config::from_raw`] turns it into typed values (socket
//! addresses, networks, durations, host patterns, loaded certificates) and collects *every*
//! problem, each naming its key, instead of stopping at the first.

mod describe;
pub mod raw;

pub use describe::describe;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use ipnet::IpNet;

use crate::access_log::LogSettings;
use crate::networks::{Environments, NetworkRefusal, check_private};
use crate::routing::{BadHostPattern, HostPattern};
use crate::tls::{CertEntry, CertError, CertStore, load_certificate};
use raw::{RawConfig, RawLimits};

/// The policy: logs are kept between 15 and 30 days.
const RETENTION_DAYS: std::ops::RangeInclusive<u32> = 15..=30;

/// hyper refuses read buffers smaller than this; a smaller header limit would panic it.
const MIN_HEADER_BYTES: usize = 8192;

/// A configuration that has passed every check.
#[derive(Debug)]
pub struct Config {
    /// The environment this instance runs in.
    pub environment: String,
    /// Listening sockets.
    pub listen: Listen,
    /// Runtime worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Loaded certificates, in file order (the first is the default for clients without SNI).
    pub certificates: Vec<Arc<CertEntry>>,
    /// The pre-rendered `Strict-Transport-Security` value.
    pub hsts: HeaderValue,
    /// Environments and their private networks.
    pub environments: Environments,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, in file order.
    pub routes: Vec<RouteConfig>,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Access and audit log files.
    pub log: LogSettings,
}

/// `[listen]`, validated.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// The plain-HTTP redirect listener, if any.
    pub http: Option<SocketAddr>,
    /// The TLS listener.
    pub https: SocketAddr,
    /// The port written into redirects; `None` means the bound HTTPS port.
    pub public_https_port: Option<u16>,
}

/// One upstream and the addresses it is reached at.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The environment the upstream lives in.
    pub environment: String,
    /// The networks it may be connected to (its environment's).
    pub networks: Vec<IpNet>,
    /// Targets, tried in round-robin.
    pub addrs: Vec<UpstreamAddr>,
}

/// An upstream target: an address, or a name resolved (and checked) at every connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    /// `ip:port`.
    Ip(SocketAddr),
    /// `host:port`.
    Name(String, u16),
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => addr.fmt(f),
            Self::Name(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// One route, validated.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The host it serves.
    pub host: HostPattern,
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// Name of an upstream that exists.
    pub upstream: String,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
}

impl RouteConfig {
    /// A stable, non-identifying name for logs and metrics: `host` + `prefix`.
    pub fn name(&self) -> String {
        format!("{}{}", self.host, self.path_prefix)
    }
}

/// `[limits]`, validated.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub send_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// A config that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or a value of the wrong type, or an unknown key.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// Parsed, but some values break the rules.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// One invalid value: the key path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {kind}")]
pub struct Problem {
    /// Dotted key path, e.g. `upstreams.app.addrs[1]`.
    pub key: String,
    /// What is wrong.
    #[source]
    pub kind: ProblemKind,
}

/// What can be wrong with a value.
#[derive(Debug, thiserror::Error)]
pub enum ProblemKind {
    /// Not `ip:port`.
    #[error("{0:?} is not an ip:port socket address")]
    SocketAddr(String),
    /// Not a humantime duration.
    #[error("{0:?} is not a duration such as \"10s\", \"500ms\" or \"5m\"")]
    Duration(String),
    /// Zero where zero would disable a protection.
    #[error("must be greater than zero")]
    Zero,
    /// Log retention outside the policy's range.
    #[error("{0} days is outside the retention policy of 15 to 30 days")]
    Retention(u32),
    /// Below hyper's minimum buffer.
    #[error("must be at least {MIN_HEADER_BYTES}")]
    TooSmall,
    /// Not CIDR notation.
    #[error("{0:?} is not a network in CIDR notation")]
    Network(String),
    /// A network outside the private ranges.
    #[error("{net} {reason}")]
    NotPrivate {
        /// The network.
        net: IpNet,
        /// Which rule it breaks.
        #[source]
        reason: NetworkRefusal,
    },
    /// Two environments claim the same addresses.
    #[error("{net} overlaps {other} of environment {env:?}")]
    Overlap {
        /// This network.
        net: IpNet,
        /// The other one.
        other: IpNet,
        /// Its environment.
        env: String,
    },
    /// An environment with no `[networks]` entry.
    #[error("environment {0:?} has no entry in [networks]")]
    UnknownEnvironment(String),
    /// An upstream in an environment this instance may not reach.
    #[error(
        "upstream lives in environment {upstream:?}, but this instance runs in {instance:?} and may only reach its own environment"
    )]
    CrossEnvironment {
        /// The upstream's environment.
        upstream: String,
        /// The instance's.
        instance: String,
    },
    /// Not `ip:port` nor `host:port`.
    #[error("{0:?} is not ip:port or host:port")]
    UpstreamAddr(String),
    /// A public address (or a name resolving to one).
    #[error(
        "{addr} is a public address; upstreams must lie in a private network of environment {env:?}"
    )]
    PublicUpstream {
        /// The address.
        addr: String,
        /// The upstream's environment.
        env: String,
    },
    /// A link-local address: where cloud metadata services live.
    #[error("{0} is link-local (home of cloud metadata services) and never an upstream")]
    LinkLocalUpstream(String),
    /// A private address outside the upstream's environment.
    #[error("{addr} is not in any network of environment {env:?}")]
    OutsideEnvironment {
        /// The address.
        addr: String,
        /// The upstream's environment.
        env: String,
    },
    /// A name that does not resolve.
    #[error("{0} does not resolve")]
    Unresolvable(String),
    /// An upstream with no addresses.
    #[error("an upstream needs at least one address")]
    NoAddrs,
    /// A route naming a missing upstream.
    #[error("no upstream named {0:?}")]
    UnknownUpstream(String),
    /// A bad host pattern.
    #[error(transparent)]
    Host(#[from] BadHostPattern),
    /// A route host that no certificate covers.
    #[error("no certificate in [[tls.certificates]] covers host {0:?}")]
    Uncovered(String),
    /// A path prefix not starting with `/` or not normal.
    #[error("{0:?} must start with '/' and contain no dot segments, '//' or '%'")]
    PathPrefix(String),
    /// Same host and prefix twice.
    #[error("another route already serves host {0:?} with this prefix")]
    DuplicateRoute(String),
    /// No certificate at all.
    #[error("at least one certificate is required")]
    NoCertificate,
    /// A certificate that cannot be served.
    #[error(transparent)]
    Certificate(#[from] CertError),
}

impl Config {
    /// Reads, parses and validates a config file. Relative certificate paths are taken as they
    /// are, relative to the working directory, as with nginx's `-p`-less invocation.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_raw(Self::read_raw(path)?)
    }

    /// Reads and parses a file without validating it.
    pub fn read_raw(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(toml::from_str(&text)?)
    }

    /// Validates a parsed file.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();
        let listen = validate_listen(&raw, &mut problems);
        let limits = validate_limits(&raw.limits, &mut problems);
        let environments = validate_networks(&raw.networks, &mut problems);
        let upstreams = validate_upstreams(&raw, &environments, &mut problems);
        let certificates = validate_certificates(&raw, &mut problems);
        let routes = validate_routes(&raw, &upstreams, &certificates, &limits, &mut problems);
        if raw.server.workers == Some(0) {
            problems.push("server.workers", ProblemKind::Zero);
        }
        if !RETENTION_DAYS.contains(&raw.log.retention_days) {
            problems.push(
                "log.retention_days",
                ProblemKind::Retention(raw.log.retention_days),
            );
        }
        problems.finish()?;
        Ok(Self {
            environment: raw.environment,
            listen,
            workers: raw.server.workers,
            certificates,
            hsts: hsts_value(&raw.hsts),
            environments,
            upstreams,
            routes,
            limits,
            log: LogSettings {
                dir: Some(raw.log.dir),
                retention_days: raw.log.retention_days,
                stdout: raw.log.stdout,
                client_hash: raw.log.client_hash,
            },
        })
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, kind: impl Into<ProblemKind>) {
        self.0.push(Problem {
            key: key.into(),
            kind: kind.into(),
        });
    }

    fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

fn socket_addr(value: &str, key: &str, problems: &mut Problems) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        problems.push(key, ProblemKind::SocketAddr(value.to_owned()));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn validate_listen(raw: &RawConfig, problems: &mut Problems) -> Listen {
    Listen {
        http: raw
            .listen
            .http
            .as_deref()
            .map(|v| socket_addr(v, "listen.http", problems)),
        https: socket_addr(&raw.listen.https, "listen.https", problems),
        public_https_port: raw.listen.public_https_port,
    }
}

fn validate_limits(raw: &RawLimits, problems: &mut Problems) -> Limits {
    let mut duration = |value: &str, name: &str| {
        let key = format!("limits.{name}");
        match humantime::parse_duration(value) {
            Ok(d) if d.is_zero() => {
                problems.push(key, ProblemKind::Zero);
                d
            }
            Ok(d) => d,
            Err(_) => {
                problems.push(key, ProblemKind::Duration(value.to_owned()));
                Duration::ZERO
            }
        }
    };
    let limits = Limits {
        handshake_timeout: duration(&raw.handshake_timeout, "handshake_timeout"),
        header_read_timeout: duration(&raw.header_read_timeout, "header_read_timeout"),
        body_read_timeout: duration(&raw.body_read_timeout, "body_read_timeout"),
        send_timeout: duration(&raw.send_timeout, "send_timeout"),
        idle_timeout: duration(&raw.idle_timeout, "idle_timeout"),
        upstream_connect_timeout: duration(
            &raw.upstream_connect_timeout,
            "upstream_connect_timeout",
        ),
        upstream_response_timeout: duration(
            &raw.upstream_response_timeout,
            "upstream_response_timeout",
        ),
        shutdown_grace: duration(&raw.shutdown_grace, "shutdown_grace"),
        max_header_bytes: raw.max_header_bytes,
        max_body_bytes: raw.max_body_bytes,
        max_connections: raw.max_connections,
        h2_max_concurrent_streams: raw.h2_max_concurrent_streams,
    };
    if raw.max_header_bytes < MIN_HEADER_BYTES {
        problems.push("limits.max_header_bytes", ProblemKind::TooSmall);
    }
    if raw.max_connections == 0 {
        problems.push("limits.max_connections", ProblemKind::Zero);
    }
    if raw.h2_max_concurrent_streams == 0 {
        problems.push("limits.h2_max_concurrent_streams", ProblemKind::Zero);
    }
    limits
}

fn validate_networks(raw: &BTreeMap<String, Vec<String>>, problems: &mut Problems) -> Environments {
    let mut parsed: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for (env, nets) in raw {
        for (i, value) in nets.iter().enumerate() {
            let key = format!("networks.{env}[{i}]");
            let Ok(net) = value.parse::<IpNet>() else {
                problems.push(key, ProblemKind::Network(value.clone()));
                continue;
            };
            if let Err(reason) = check_private(&net) {
                problems.push(key, ProblemKind::NotPrivate { net, reason });
                continue;
            }
            for (other_env, others) in parsed.iter().filter(|(name, _)| *name != env) {
                if let Some(other) = others.iter().find(|o| o.contains(&net) || net.contains(*o)) {
                    problems.push(
                        key.clone(),
                        ProblemKind::Overlap {
                            net,
                            other: *other,
                            env: other_env.clone(),
                        },
                    );
                }
            }
            parsed.entry(env.clone()).or_default().push(net);
        }
    }
    Environments::new(parsed)
}

fn validate_upstreams(
    raw: &RawConfig,
    environments: &Environments,
    problems: &mut Problems,
) -> BTreeMap<String, UpstreamConfig> {
    let mut upstreams = BTreeMap::new();
    for (name, upstream) in &raw.upstreams {
        let env = &upstream.environment;
        let Some(networks) = environments.networks(env) else {
            problems.push(
                format!("upstreams.{name}.environment"),
                ProblemKind::UnknownEnvironment(env.clone()),
            );
            continue;
        };
        if *env != raw.environment {
            problems.push(
                format!("upstreams.{name}.environment"),
                ProblemKind::CrossEnvironment {
                    upstream: env.clone(),
                    instance: raw.environment.clone(),
                },
            );
        }
        if upstream.addrs.is_empty() {
            problems.push(format!("upstreams.{name}.addrs"), ProblemKind::NoAddrs);
        }
        let addrs = upstream
            .addrs
            .iter()
            .enumerate()
            .filter_map(|(i, value)| {
                let key = format!("upstreams.{name}.addrs[{i}]");
                check_upstream_addr(value, env, networks)
                    .map_err(|kind| problems.push(key, kind))
                    .ok()
            })
            .collect();
        upstreams.insert(
            name.clone(),
            UpstreamConfig {
                environment: env.clone(),
                networks: networks.to_vec(),
                addrs,
            },
        );
    }
    upstreams
}

/// Parses an upstream address and checks it, or every address its name resolves to now, against
/// the environment's networks. The connector checks again at every connect.
fn check_upstream_addr(
    value: &str,
    env: &str,
    networks: &[IpNet],
) -> Result<UpstreamAddr, ProblemKind> {
    let addr = if let Ok(addr) = value.parse::<SocketAddr>() {
        UpstreamAddr::Ip(addr)
    } else {
        let (host, port) = value
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .filter(|(h, _)| crate::routing::is_dns_name(&h.to_ascii_lowercase()))
            .ok_or_else(|| ProblemKind::UpstreamAddr(value.to_owned()))?;
        UpstreamAddr::Name(host.to_ascii_lowercase(), port)
    };
    let resolved: Vec<IpAddr> = match &addr {
        UpstreamAddr::Ip(a) => vec![a.ip()],
        UpstreamAddr::Name(..) => value
            .to_socket_addrs()
            .map_err(|_| ProblemKind::Unresolvable(value.to_owned()))?
            .map(|a| a.ip())
            .collect(),
    };
    for ip in resolved {
        let ip = ip.to_canonical();
        if networks.iter().any(|net| net.contains(&ip)) {
            continue;
        }
        let shown = if matches!(addr, UpstreamAddr::Ip(_)) {
            value.to_owned()
        } else {
            format!("{value} (resolves to {ip})")
        };
        let host_net = IpNet::from(ip);
        return Err(match check_private(&host_net) {
            Ok(()) => ProblemKind::OutsideEnvironment {
                addr: shown,
                env: env.to_owned(),
            },
            Err(NetworkRefusal::LinkLocal) => ProblemKind::LinkLocalUpstream(shown),
            Err(NetworkRefusal::NotPrivate) => ProblemKind::PublicUpstream {
                addr: shown,
                env: env.to_owned(),
            },
        });
    }
    Ok(addr)
}

fn validate_certificates(raw: &RawConfig, problems: &mut Problems) -> Vec<Arc<CertEntry>> {
    if raw.tls.certificates.is_empty() {
        problems.push("tls.certificates", ProblemKind::NoCertificate);
    }
    raw.tls
        .certificates
        .iter()
        .enumerate()
        .filter_map(|(i, files)| {
            load_certificate(&files.cert, &files.key)
                .map_err(|e| problems.push(format!("tls.certificates[{i}]"), e))
                .ok()
                .map(Arc::new)
        })
        .collect()
}

fn validate_routes(
    raw: &RawConfig,
    upstreams: &BTreeMap<String, UpstreamConfig>,
    certificates: &[Arc<CertEntry>],
    limits: &Limits,
    problems: &mut Problems,
) -> Vec<RouteConfig> {
    let store = CertStore::new(certificates.to_vec());
    let mut routes: Vec<RouteConfig> = Vec::new();
    for (i, route) in raw.routes.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let host = HostPattern::parse(&route.host)
            .map_err(|e| problems.push(key("host"), e))
            .ok();
        if let Some(host) = &host
            && !certificates.is_empty()
            && !store.covers(host)
        {
            problems.push(key("host"), ProblemKind::Uncovered(host.to_string()));
        }
        let prefix = &route.path_prefix;
        if !prefix.starts_with('/')
            || crate::routing::normalize_path(prefix).ok().as_deref() != Some(prefix)
            || prefix.contains('%')
        {
            problems.push(key("path_prefix"), ProblemKind::PathPrefix(prefix.clone()));
        }
        if !upstreams.contains_key(&route.upstream) && !raw.upstreams.contains_key(&route.upstream)
        {
            problems.push(
                key("upstream"),
                ProblemKind::UnknownUpstream(route.upstream.clone()),
            );
        }
        let Some(host) = host else { continue };
        if routes
            .iter()
            .any(|r| r.host == host && r.path_prefix == *prefix)
        {
            problems.push(
                key("path_prefix"),
                ProblemKind::DuplicateRoute(host.to_string()),
            );
        }
        routes.push(RouteConfig {
            host,
            path_prefix: prefix.clone(),
            upstream: route.upstream.clone(),
            max_body_bytes: route.max_body_bytes.unwrap_or(limits.max_body_bytes),
        });
    }
    routes
}

/// RFC 6797 6.1: `max-age` is required; `includeSubDomains` and `preload` are flags.
fn hsts_value(raw: &raw::RawHsts) -> HeaderValue {
    let mut value = format!("max-age={}", raw.max_age);
    if raw.include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if raw.preload {
        value.push_str("; preload");
    }
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("max-age=63072000"))
}
