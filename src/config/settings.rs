//! The typed settings a validated config is made of. Everything here has passed validation:
//! the rest of the proxy trusts these types.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::uri::Authority;
use ipnet::IpNet;
use serde::Deserialize;

use super::{Grant, RouteAccess};
use crate::host::HostPattern;

/// A one-way peering: this instance's environment may reach `to`; `to` may never reach us.
#[derive(Debug, Clone)]
pub struct Peering {
    /// Always the instance's environment.
    pub from: String,
    /// The environment reached.
    pub to: String,
    /// Its networks.
    pub to_networks: Vec<IpNet>,
}

/// `[admin]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Loopback, or private with `allow`.
    pub listen: SocketAddr,
    /// Who may use it over mutual TLS; empty: plain HTTP, loopback only.
    pub allow: Vec<Grant>,
}

/// `[health]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// Loopback or private.
    pub listen: SocketAddr,
    /// The networks answered; every other connection is closed at accept.
    pub allow: Vec<IpNet>,
}

/// `[listen]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The plain-HTTP redirect listener, if any.
    pub http: Option<SocketAddr>,
    /// The TLS listener.
    pub https: SocketAddr,
    /// The port written into redirects; `None` means the bound HTTPS port.
    pub public_https_port: Option<u16>,
    /// The load balancers whose PROXY protocol header names the client, and that must send one.
    pub proxy_protocol_from: Vec<IpNet>,
}

/// One upstream and the addresses it is reached at.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Its name in the config, for logs and metrics.
    pub name: Arc<str>,
    /// The environment the upstream lives in.
    pub environment: String,
    /// The networks it may be connected to (its environment's).
    pub networks: Vec<IpNet>,
    /// Targets.
    pub addrs: Vec<UpstreamAddr>,
    /// How requests are spread over them and kept away from failing ones.
    pub resilience: super::Resilience,
    /// `[access] metadata_endpoints`, refused at every connect beside the built-in ones.
    pub metadata_endpoints: Vec<IpNet>,
}

/// An upstream target: an address, or a name resolved (and checked) at every connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    /// `ip:port` or `host:port`, lowercase, as requests to it are addressed.
    pub authority: Authority,
    /// The address, when the config gave one rather than a name.
    pub ip: Option<SocketAddr>,
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.authority.fmt(f)
    }
}

/// Which upstream a route forwards to: an index into [`Config::upstreams`](super::Config::upstreams) that only validation
/// makes, so a route never names an upstream that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamId(pub(super) usize);

impl UpstreamId {
    /// The position in [`Config::upstreams`](super::Config::upstreams) (and in anything built from it in order).
    pub fn index(self) -> usize {
        self.0
    }
}

/// One route, validated.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The host it serves.
    pub host: HostPattern,
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// What the route does with a request.
    pub action: RouteAction,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
    /// For internal routes: who may pass.
    pub access: Option<RouteAccess>,
    /// Requests per client address.
    pub limit: Option<super::Rate>,
}

/// What a route does with a request.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to an upstream.
    Forward(UpstreamId),
    /// Answer with a fixed response: health pages, and load tests of the edge alone.
    Respond {
        /// The status.
        status: StatusCode,
        /// The body.
        body: Bytes,
    },
}

impl RouteConfig {
    /// A stable, non-identifying name for logs and metrics: `host` + `prefix`.
    pub fn name(&self) -> String {
        format!("{}{}", self.host, self.path_prefix)
    }
}

/// One `[[tunnels]]` entry, validated: a byte stream an employee may open with
/// `CONNECT target:port` on the gateway's host.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The gateway's name, exact and lowercase: the connection's SNI.
    pub host: String,
    /// The name clients ask for, lowercase; never an address.
    pub target: String,
    /// The port clients ask for.
    pub port: u16,
    /// Where the stream goes.
    pub upstream: UpstreamId,
    /// Who may open it.
    pub access: RouteAccess,
    /// How long it may carry no byte either way.
    pub idle_timeout: Duration,
    /// With `protocol = "postgres"`: the database's TLS and what its users may do.
    pub postgres: Option<PostgresSettings>,
}

/// A `protocol = "postgres"` tunnel's database.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// `tls_ca`, read in phase 2 (empty, so that every handshake fails, until then).
    pub tls_ca: std::path::PathBuf,
    pub roots: std::sync::Arc<rustls::RootCertStore>,
    /// The name the database's certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
    pub read_only: bool,
    pub allow_write: Vec<Grant>,
    pub log_reads: bool,
}

impl TunnelConfig {
    /// A stable name for logs, metrics and the audit trail: `host CONNECT target:port`.
    pub fn name(&self) -> String {
        format!("{} CONNECT {}:{}", self.host, self.target, self.port)
    }
}

/// Lines each log holds in memory while its file cannot be written. About 400 bytes each,
/// the default rides out minutes of a fault at thousands of requests a second in ~40 MiB.
pub const DEFAULT_BUFFER_LINES: usize = 100_000;
/// More would let a long fault take the memory the proxy serves with.
pub const MAX_BUFFER_LINES: usize = 10_000_000;

/// What the logs write of a request's path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathLogging {
    /// The path with identifying segments masked (`crate::access_log::mask_path`).
    #[default]
    Masked,
    /// Only the prefix of the route that matched: nothing a client typed.
    Route,
}

/// `[log]`, validated: where and how long lines are kept.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Directory of the daily access-log and audit files; `None` writes no files.
    pub dir: Option<PathBuf>,
    /// Files dated more than this many days before today are deleted.
    pub retention_days: u32,
    /// Also write access-log lines to stdout.
    pub stdout: bool,
    /// Add a keyed hash of the client IP, the key rotating with the UTC day.
    pub client_hash: bool,
    /// What the access log and the audit trail write of a path.
    pub path: PathLogging,
    /// Lines each log holds while its file cannot be written; more are dropped and counted.
    pub buffer_lines: usize,
}

impl Default for LogSettings {
    /// No files, nothing on stdout: lines go nowhere, as in tests without logs.
    fn default() -> Self {
        Self {
            dir: None,
            retention_days: 30,
            stdout: false,
            client_hash: false,
            path: PathLogging::Masked,
            buffer_lines: DEFAULT_BUFFER_LINES,
        }
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
    /// How long a keep-alive connection to an upstream may sit unused before it is closed.
    pub upstream_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// How long the listeners keep serving after SIGTERM with `/readyz` failing: the
    /// balancer's deregistration delay. Zero for local use.
    pub drain_delay: Duration,
}
