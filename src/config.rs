//! The validated configuration: what the rest of the program trusts.
//!
//! `raw.rs` mirrors the TOML. Validation runs in three phases, each reporting *every* problem
//! it finds under its key, and each working only on what the earlier ones accepted, so that no
//! problem is a follow-on of another:
//! 1. `values.rs`: the values on their own and against each other (socket addresses, networks,
//!    durations, host patterns, upstream ids, grants), with no IO;
//! 2. `files.rs`: the files the config names, read once, then `coverage.rs`: what needs both
//!    (a certificate for every host);
//! 3. `resolve.rs`: accounts and upstream names, as this machine resolves them
//!    ([`Config::resolve`]).

mod acme;
mod acme_dns;
mod coverage;
mod describe;
mod environments;
mod error;
mod files;
mod gateway;
mod parse;
mod problems;
mod process;
mod rates;
pub mod raw;
mod recipients;
mod resilience;
mod resolve;
mod settings;
mod shared;
#[cfg(test)]
mod tests;
mod tsig;
mod tunnels;
mod validate;
mod values;

pub use acme::{
    AcmeDns, AcmeSettings, AcmeStore, Challenge, DnsProvider, LETS_ENCRYPT, LETS_ENCRYPT_STAGING,
    renewal_without_window,
};
pub use describe::describe;
pub use error::{AcmeProblem, ConfigError, Problem, ProblemKind, ProcessProblem};
pub use gateway::{
    CRL_TIMER_PERIOD, CrlUpdate, GatewaySettings, Grant, LONGEST_SHORT_LIVED, Lifetimes,
    LockoutPolicy, RouteAccess, User,
};
pub use parse::{Parsed, parse};
pub use process::{
    Account, DAILY_DAYS, FileAccess, MONTHLY_MONTHS, Named, Need, Privileges, Retention, RunAs,
    SIX_HOURLY_DAYS, SYSTEM_ROOTS, SnapshotSettings, WEEKLY_WEEKS,
};
pub use rates::Rate;
pub use recipients::AgeRecipient;
pub use resilience::{Balance, Count5xx, HealthCheck, MAX_RETRIES, Outlier, ProbeKind, Resilience};
pub use settings::{
    AdminSettings, HealthSettings, Limits, Listen, LogSettings, MAX_BUFFER_LINES, PathLogging,
    Peering, PostgresSettings, RouteAction, RouteConfig, TunnelConfig, UpstreamAddr,
    UpstreamConfig, UpstreamId,
};
pub use shared::{MIN_SESSION_KEY_BYTES, RedisSettings, RedisTls, Secret, SharedSettings};
pub use tsig::{TsigKey, read_api_secret, read_tsig_key};

use std::path::Path;

/// Where the commands look for the config when `-c` does not say.
pub const DEFAULT_PATH: &str = "config/portcullis.toml";

use http::HeaderValue;
use ipnet::IpNet;

use crate::certs::CertStore;
use crate::networks::Environments;
use files::Files;
use problems::Problems;
use raw::RawConfig;
use validate::hsts_value;
use values::Values;

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
    /// The account the process runs as once bound, by name ([`Config::resolve`] looks it up).
    pub account: Account,
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
    /// The health listener for load balancers.
    pub health: Option<HealthSettings>,
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
    /// `[access] connection_rate`: new connections per client address.
    pub connection_rate: Option<Rate>,
    /// Legal values worth a second look: `check` prints them, start and reload log them.
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Reads a config file and takes it through the three phases: values, files, names.
    /// Relative paths are taken as they are, relative to the working directory, as with
    /// nginx's `-p`-less invocation.
    pub fn load(path: &Path) -> Result<(Self, Privileges), ConfigError> {
        let config = Self::from_parsed(Self::read_raw(path)?)?;
        let privileges = config.resolve()?;
        Ok((config, privileges))
    }

    /// Reads and parses a file without validating it.
    pub fn read_raw(path: &Path) -> Result<Parsed, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_file(&text, path)
    }

    /// Parses `text`, read from `path`: its relative paths are `path`'s directory's.
    pub fn parse_file(text: &str, path: &Path) -> Result<Parsed, ConfigError> {
        let mut parsed = parse::parse(text)?;
        parsed.raw.resolve_paths(&raw::base_of(path));
        Ok(parsed)
    }

    /// [`Config::from_raw`] on a parsed file, its problems reported with those of the keys the
    /// parse had to leave out.
    pub fn from_parsed(parsed: Parsed) -> Result<Self, ConfigError> {
        parsed.judge(Self::from_raw)
    }

    /// Phases 1 and 2: the values on their own (no IO), and the files they name. The two take
    /// nothing from each other, so their problems are reported together; what needs both (a
    /// certificate for every host) is checked once both passed. Nothing is written and no name
    /// is resolved: that is [`Config::resolve`].
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let (values, files) = match (values::check(&raw), files::read(&raw)) {
            (Ok(values), Ok(files)) => (values, files),
            (values, files) => {
                let mut problems = values.err().unwrap_or_default();
                problems.extend(files.err().unwrap_or_default());
                return Err(problems.into());
            }
        };
        coverage::check(
            &values.routes,
            &values.tunnels,
            values.acme.as_ref(),
            &files.certificates,
        )?;
        Ok(Self::assemble(raw, values, files))
    }

    /// Phase 3: the accounts of `[server]` and the upstream names, as this machine resolves
    /// them now. Start, reload and `check` run it; the connector checks names again at every
    /// connect.
    pub fn resolve(&self) -> Result<Privileges, ConfigError> {
        let mut problems = Problems::default();
        let privileges = resolve::privileges(&self.account, &mut problems);
        resolve::upstreams(&self.upstreams, &mut problems);
        Ok(problems.or(privileges)?)
    }

    fn assemble(raw: RawConfig, values: Values, files: Files) -> Self {
        let tunnels = files.with_database_roots(values.tunnels);
        let gateway = raw
            .gateway
            .as_ref()
            .zip(values.gateway)
            .zip(files.gateway)
            .map(|((raw, policy), files)| gateway::settings(raw, policy, files));
        Self {
            warnings: values.warnings.into_warnings(),
            files: process::file_access(&raw),
            hsts: hsts_value(&raw.hsts),
            environment: raw.environment,
            listen: values.listen,
            workers: raw.server.workers,
            account: values.account,
            snapshots: values.snapshots,
            certificates: files.certificates,
            environments: values.environments,
            upstreams: values.upstreams,
            routes: values.routes,
            tunnels,
            limits: values.limits,
            log: log_settings(&raw.log),
            peerings: values.peerings,
            refused_clients: values.refused_clients,
            connection_rate: values.connection_rate,
            stripped_headers: values.stripped_headers,
            admin: values.admin,
            health: values.health,
            acme: values.acme,
            gateway,
            shared: shared::settings(values.redis, files.shared),
        }
    }

    /// Every file and directory `raw` names, unchecked: what a restore may write.
    pub fn named_files(raw: &RawConfig) -> FileAccess {
        process::file_access(raw)
    }

    /// What `portcullis employees` needs, checked: `[gateway]`'s values and `[server]`'s
    /// account. The rest of phase 1 is judged apart ([`Enrolment::refused`]): a revocation
    /// must go through whatever else the config gets wrong, and an allow list naming a group
    /// nobody is in yet is what enrolling its first member mends.
    pub fn enrolment(raw: &RawConfig) -> Result<Enrolment, ConfigError> {
        let mut problems = Problems::default();
        let mut warnings = Problems::default();
        let lifetimes = raw
            .gateway
            .as_ref()
            .map(|g| gateway::policy(g, &mut problems, &mut warnings).lifetimes);
        let account = process::account(raw, &mut problems, &mut warnings);
        Ok(problems.or(Enrolment {
            lifetimes,
            log: log_settings(&raw.log),
            account,
            files: process::file_access(raw),
            refused: values::check(raw).err().map(ConfigError::from),
        })?)
    }

    /// The upstream a route forwards to or a tunnel opens to.
    pub fn upstream(&self, id: UpstreamId) -> &UpstreamConfig {
        // Ids are made by validation from this very list.
        &self.upstreams[id.index()]
    }
}

impl Account {
    /// This account as the machine knows it: phase 3 for `[server]` alone.
    pub fn resolve(&self) -> Result<Privileges, ConfigError> {
        let mut problems = Problems::default();
        let privileges = resolve::privileges(self, &mut problems);
        Ok(problems.or(privileges)?)
    }
}

/// What `portcullis employees` needs of a config whose values passed phase 1.
#[derive(Debug)]
pub struct Enrolment {
    /// `[gateway]`'s lifetimes, when there is a `[gateway]`.
    pub lifetimes: Option<Lifetimes>,
    /// Where the audit trail is.
    pub log: LogSettings,
    /// `[server]`'s account, which reads what `employees` writes.
    pub account: Account,
    /// What the serving process may read and write: the CA key must be outside all of it.
    pub files: FileAccess,
    /// What phase 1 finds wrong with the whole config, which the proxy would refuse.
    pub refused: Option<ConfigError>,
}

fn log_settings(raw: &raw::RawLog) -> LogSettings {
    LogSettings {
        dir: Some(raw.dir.clone()),
        retention_days: raw.retention_days,
        stdout: raw.stdout,
        client_hash: raw.client_hash,
        path: raw.path,
        buffer_lines: raw.buffer_lines,
    }
}
