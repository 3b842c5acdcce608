//! The TOML file as written: a serde mirror with no meaning attached yet.
//!
//! Everything here is plain data; `config.rs` turns it into typed runtime values and is the only
//! reader of these structs. `deny_unknown_fields` everywhere, so a typo is an error, not a
//! silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::settings::{DEFAULT_BUFFER_LINES, PathLogging};

mod gateway;
mod paths;
mod rates;
mod tls;
mod upstreams;

pub use gateway::{ISSUED_FILE_NAME, RawGateway, RawUser};
pub use paths::base_of;
pub use rates::RawRate;
pub use tls::{
    Challenge, DnsProviderKind, RawAcme, RawAcmeDns, RawAcmeStore, RawCertificate, RawHsts, RawTls,
};
pub use upstreams::{RawBalance, RawCount5xx, RawHealthCheck, RawOutlier, RawUpstream};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub environment: String,
    pub listen: RawListen,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub hsts: RawHsts,
    #[serde(default)]
    pub networks: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub tunnels: Vec<RawTunnel>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub peerings: Vec<RawPeering>,
    #[serde(default)]
    pub access: RawAccess,
    pub admin: Option<RawAdmin>,
    pub health: Option<RawHealth>,
    pub gateway: Option<RawGateway>,
    #[serde(default)]
    pub headers: RawHeaders,
    pub snapshots: Option<RawSnapshots>,
    #[serde(default)]
    pub shared: RawShared,
}

/// `[headers]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// More request headers only the proxy may set: stripped from every client request.
    #[serde(default)]
    pub strip: Vec<String>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    /// Employees who may use it over mutual TLS; empty: plain HTTP on loopback only.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[health]`: the listener load balancers check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub listen: String,
    /// Who may ask; empty: the balancers of `[listen] proxy_protocol_from`, else loopback.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[[peerings]]`: `from` may reach `to`, never the reverse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeering {
    pub from: String,
    pub to: String,
}

/// `[access]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    #[serde(default)]
    pub deny_clients: Vec<String>,
    /// Addresses never to connect to beside the built-in metadata endpoints.
    #[serde(default)]
    pub metadata_endpoints: Vec<String>,
    /// New connections per client address; beyond it they are closed at accept.
    pub connection_rate: Option<RawRate>,
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub dir: PathBuf,
    pub retention_days: u32,
    pub stdout: bool,
    pub client_hash: bool,
    pub path: PathLogging,
    pub buffer_lines: usize,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("logs"),
            retention_days: 30,
            stdout: false,
            client_hash: false,
            path: PathLogging::default(),
            buffer_lines: DEFAULT_BUFFER_LINES,
        }
    }
}

/// `[listen]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub http: Option<String>,
    pub https: String,
    pub public_https_port: Option<u16>,
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub workers: Option<usize>,
    /// Dropped to after binding when started as root.
    pub user: Option<String>,
    /// Defaults to the user's primary group.
    pub group: Option<String>,
    #[serde(default)]
    pub allow_root: bool,
}

/// `[shared]`: what the instances behind one balancer share.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    pub session_key_file: Option<PathBuf>,
    /// An `[upstreams]` name, as `NAME`, `redis://NAME` or `rediss://NAME` (TLS).
    pub redis: Option<String>,
    pub redis_password_file: Option<PathBuf>,
    /// With `rediss://`: the CA that signed the Redis certificate.
    pub redis_ca_file: Option<PathBuf>,
    /// With `rediss://`: the name the Redis certificate must hold; default the upstream's name.
    pub redis_server_name: Option<String>,
}

/// `[snapshots]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshots {
    pub dir: PathBuf,
    /// age X25519 recipients: with them an archive is encrypted and complete.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// The built-in schedule; without it only `portcullis snapshot` takes them.
    pub every: Option<String>,
    #[serde(default = "six_hourly_days")]
    pub keep_six_hourly_days: u32,
    #[serde(default = "daily_days")]
    pub keep_daily_days: u32,
    #[serde(default = "weekly_weeks")]
    pub keep_weekly_weeks: u32,
    #[serde(default = "monthly_months")]
    pub keep_monthly_months: u32,
}

// The policy's minimums: the least of the audit trail's personal data kept that still meets it.
fn six_hourly_days() -> u32 {
    2
}
fn daily_days() -> u32 {
    7
}
fn weekly_weeks() -> u32 {
    4
}
fn monthly_months() -> u32 {
    13
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: String,
    #[serde(default = "root_prefix")]
    pub path_prefix: String,
    pub upstream: Option<String>,
    pub respond: Option<RawRespond>,
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub mfa: bool,
    /// Send the upstream a signed `Portcullis-Assertion` of the admitted employee.
    #[serde(default)]
    pub assertion: bool,
    /// Requests per client address; beyond it, 429 with `Retry-After`.
    pub limit: Option<RawRate>,
}

/// `[[tunnels]]`: a target employees may open a byte stream to with `CONNECT target:port`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTunnel {
    /// The gateway's name: SNI and certificate.
    pub host: String,
    /// The name clients ask for.
    pub target: String,
    /// The port clients ask for.
    #[serde(default = "ssh_port")]
    pub port: u16,
    pub upstream: String,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub mfa: bool,
    /// How long an open tunnel may carry no byte either way.
    #[serde(default = "tunnel_idle_timeout")]
    pub idle_timeout: String,
    /// What the tunnel carries: `tcp` (bytes, as they come) or `postgres`.
    #[serde(default)]
    pub protocol: RawProtocol,
    /// With `postgres`: the CA the database's certificate must chain to.
    pub tls_ca: Option<PathBuf>,
    /// With `postgres`: the name the database's certificate must carry; `target` without it.
    pub server_name: Option<String>,
    /// With `postgres`: statements that change anything are refused...
    #[serde(default)]
    pub read_only: bool,
    /// ... except for these users and groups.
    #[serde(default)]
    pub allow_write: Vec<String>,
    /// With `postgres`: a line for every read too, not only a count per session.
    #[serde(default)]
    pub log_reads: bool,
}

/// `[[tunnels]] protocol`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawProtocol {
    #[default]
    Tcp,
    Postgres,
}

fn ssh_port() -> u16 {
    22
}

/// Long enough for an SSH session left open without keep-alives over a lunch break.
fn tunnel_idle_timeout() -> String {
    "1h".to_owned()
}

/// `respond = { status = 200, body = "ok" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: u16,
    #[serde(default)]
    pub body: String,
}

fn root_prefix() -> String {
    "/".to_owned()
}

/// `[limits]`: durations stay strings here so that a bad one is reported with its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub handshake_timeout: String,
    pub header_read_timeout: String,
    pub body_read_timeout: String,
    pub send_timeout: String,
    pub idle_timeout: String,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    pub upstream_connect_timeout: String,
    pub upstream_response_timeout: String,
    pub upstream_idle_timeout: String,
    pub shutdown_grace: String,
    pub drain_delay: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: "10s".into(),
            header_read_timeout: "10s".into(),
            body_read_timeout: "30s".into(),
            send_timeout: "60s".into(),
            idle_timeout: "60s".into(),
            max_header_bytes: 65_536,
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: 10_000,
            h2_max_concurrent_streams: 100,
            upstream_connect_timeout: "5s".into(),
            upstream_response_timeout: "60s".into(),
            upstream_idle_timeout: "90s".into(),
            shutdown_grace: "30s".into(),
            drain_delay: "0s".into(),
        }
    }
}
