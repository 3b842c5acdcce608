//! The validated configuration: what the rest of the program trusts.
//!
//! `raw.rs` mirrors the TOML; [`Config::from_raw`] turns it into the typed values of
//! `settings.rs` (socket addresses, networks, durations, host patterns, upstream ids) and
//! collects *every* problem, each naming its key, instead of stopping at the first. What the
//! config names on disk is read by one load step (`files.rs`), which writes nothing; upstream
//! names are resolved only when asked ([`Config::resolve_upstreams`]).

mod acme;
mod describe;
mod environments;
mod error;
mod files;
mod gateway;
mod problems;
mod process;
pub mod raw;
mod settings;
mod shared;
mod tunnels;
mod validate;

pub use acme::{AcmeSettings, AcmeStore, LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
pub use describe::describe;
pub use error::{ConfigError, Problem, ProblemKind};
pub use gateway::{CrlUpdate, GatewaySettings, Grant, LockoutPolicy, RouteAccess, User};
pub use process::{
    DAILY_DAYS, FileAccess, MONTHLY_MONTHS, Privileges, Retention, RunAs, SIX_HOURLY_DAYS,
    SnapshotSettings, WEEKLY_WEEKS,
};
pub use settings::{
    AdminSettings, Limits, Listen, LogSettings, MAX_BUFFER_LINES, PathLogging, Peering,
    RouteAction, RouteConfig, TunnelConfig, UpstreamAddr, UpstreamConfig, UpstreamId,
};
pub use shared::{MIN_SESSION_KEY_BYTES, RedisSettings, RedisTls, Secret, SharedSettings};

use std::path::Path;

use http::HeaderValue;
use ipnet::IpNet;

use crate::certs::CertStore;
use crate::networks::Environments;
use environments::{
    validate_denied, validate_metadata, validate_networks, validate_peerings, validate_upstreams,
};
use problems::{Key, Problems};
use raw::RawConfig;
use validate::{
    hsts_value, hsts_warnings, require_certificates, validate_admin, validate_limits,
    validate_listen, validate_routes,
};

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
    /// The account the process runs as once bound.
    pub privileges: Privileges,
    /// The files it needs afterwards (the config file itself aside).
    pub files: FileAccess,
    /// Snapshots of its own state, if configured.
    pub snapshots: Option<SnapshotSettings>,
    /// Loaded certificates, in file order (the first is the default for clients without SNI).
    pub certificates: CertStore,
    /// The pre-rendered `Strict-Transport-Security` value.
    pub hsts: HeaderValue,
    /// Environments and their private networks.
    pub environments: Environments,
    /// Upstreams, in name order; routes refer to them by [`UpstreamId`].
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes, in file order.
    pub routes: Vec<RouteConfig>,
    /// Tunnel targets, in file order.
    pub tunnels: Vec<TunnelConfig>,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Access and audit log files.
    pub log: LogSettings,
    /// One-way peerings from this instance's environment.
    pub peerings: Vec<Peering>,
    /// The admin listener (health, metrics, reload).
    pub admin: Option<AdminSettings>,
    /// Certificates managed over ACME.
    pub acme: Option<AcmeSettings>,
    /// The gateway for internal routes.
    pub gateway: Option<GatewaySettings>,
    /// What the instances behind one balancer share.
    pub shared: SharedSettings,
    /// Request headers stripped from every client request beside the built-in list.
    pub stripped_headers: Vec<http::HeaderName>,
    /// Clients refused at accept: `access.deny_clients` plus every network of every other
    /// environment, peered-to ones included (a peering is one-way).
    pub refused_clients: Vec<IpNet>,
    /// Legal values worth a second look: `check` prints them, start and reload log them.
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Reads, parses and validates a config file. Relative certificate paths are taken as they
    /// are, relative to the working directory, as with nginx's `-p`-less invocation.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::from_raw(Self::read_raw(path)?)?;
        config.resolve_upstreams()?;
        Ok(config)
    }

    /// Reads and parses a file without validating it.
    pub fn read_raw(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(toml::from_str(&text)?)
    }

    /// Validates a parsed file: its values, then the files they name (certificates, the
    /// employee CA, revocation lists, TOTP secrets, the ACME CA) and the checks that need those.
    /// Nothing is written and no name is resolved: see [`Config::resolve_upstreams`].
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        // Values on their own and against each other: no IO.
        let mut problems = Problems::default();
        let listen = validate_listen(&raw, &mut problems);
        let limits = validate_limits(&raw.limits, &mut problems);
        let environments = validate_networks(&raw.networks, &mut problems);
        let peerings = validate_peerings(&raw, &environments, &mut problems);
        let mut refused_clients = validate_denied(&raw, &mut problems);
        // No other environment reaches ours: peerings only ever point away from us.
        refused_clients.extend(
            environments
                .iter()
                .filter(|(env, _)| *env != raw.environment)
                .flat_map(|(_, nets)| nets.iter().copied()),
        );
        let metadata = validate_metadata(&raw, &mut problems);
        let upstreams = validate_upstreams(&raw, &environments, &metadata, &mut problems);
        require_certificates(&raw, &mut problems);
        let stripped_headers = raw
            .headers
            .strip
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| {
                        problems.push(
                            Key::new("headers.strip").index(i),
                            ProblemKind::HeaderName(name.clone()),
                        )
                    })
                    .ok()
            })
            .collect();
        if raw.server.workers == Some(0) {
            problems.push("server.workers", ProblemKind::Zero);
        }
        if !RETENTION_DAYS.contains(&raw.log.retention_days) {
            problems.push(
                "log.retention_days",
                ProblemKind::Retention(raw.log.retention_days),
            );
        }

        if !(1..=MAX_BUFFER_LINES).contains(&raw.log.buffer_lines) {
            problems.push(
                "log.buffer_lines",
                ProblemKind::BufferLines(raw.log.buffer_lines),
            );
        }

        let mut warnings = Problems::default();

        // The load step: every file the config names, read once; the accounts named.
        let snapshots = raw
            .snapshots
            .as_ref()
            .map(|s| process::validate_snapshots(s, &mut problems));
        let privileges = process::validate_privileges(&raw, &mut problems, &mut warnings);
        let certificates = files::certificates(&raw, &mut problems);
        let gateway_files = raw
            .gateway
            .as_ref()
            .and_then(|g| files::gateway(g, &mut problems));
        if let Some(acme) = &raw.tls.acme {
            files::acme(acme, &mut problems);
        }

        // What needs both: the gateway's people and files, routes against the certificates.
        let gateway = gateway::validate_gateway(&raw, gateway_files, &mut problems);
        let admin = validate_admin(&raw, gateway.as_ref(), &mut problems);
        let routes = validate_routes(
            &raw,
            &upstreams,
            &certificates,
            &limits,
            gateway.as_ref(),
            &mut problems,
        );
        let tunnels = tunnels::validate_tunnels(
            &raw,
            &upstreams,
            &certificates,
            gateway.as_ref(),
            &mut problems,
        );
        let acme = acme::validate_acme(&raw, &certificates, &routes, &mut problems);
        let shared = shared::validate_shared(&raw, &upstreams, &mut problems, &mut warnings);
        problems.finish()?;
        let files = process::file_access(&raw);
        hsts_warnings(&raw.hsts, &mut warnings);
        Ok(Self {
            warnings: warnings.into_warnings(),
            environment: raw.environment,
            listen,
            workers: raw.server.workers,
            privileges,
            files,
            snapshots,
            certificates,
            hsts: hsts_value(&raw.hsts),
            environments,
            upstreams,
            routes,
            tunnels,
            limits,
            log: LogSettings {
                dir: Some(raw.log.dir),
                retention_days: raw.log.retention_days,
                stdout: raw.log.stdout,
                client_hash: raw.log.client_hash,
                path: raw.log.path,
                buffer_lines: raw.log.buffer_lines,
            },
            peerings,
            refused_clients,
            stripped_headers,
            admin,
            acme,
            gateway,
            shared,
        })
    }
}

impl Config {
    /// Resolves the upstream names now and checks every answer against the upstream's
    /// environment, as validation checks literal addresses. Start, reload and `check` run it;
    /// validation itself never touches the network.
    pub fn resolve_upstreams(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        files::resolve_upstreams(&self.upstreams, &mut problems);
        problems.finish()
    }

    /// The upstream a route forwards to or a tunnel opens to.
    pub fn upstream(&self, id: UpstreamId) -> &UpstreamConfig {
        // Ids are made by validation from this very list.
        &self.upstreams[id.index()]
    }
}
