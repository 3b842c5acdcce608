//! Phase 1: the config's values, on their own and against each other. No file is read and no
//! name is resolved, so this is a function of the TOML alone (`tests.rs` gives it strings).
//! Each section's checks live in its own file; this one runs them in order.

use http::HeaderName;
use ipnet::IpNet;

use super::environments::{
    validate_denied, validate_metadata, validate_networks, validate_peerings, validate_upstreams,
};
use super::gateway::GatewayPolicy;
use super::problems::{Key, Problems};
use super::raw::RawConfig;
use super::shared::RedisPlace;
use super::validate::{
    hsts_warnings, require_certificates, validate_admin, validate_health, validate_limits,
    validate_listen, validate_routes,
};
use super::{
    Account, AcmeSettings, AdminSettings, HealthSettings, Limits, Listen, MAX_BUFFER_LINES,
    Peering, ProblemKind, RETENTION_DAYS, RouteConfig, SnapshotSettings, TunnelConfig,
    UpstreamConfig,
};
use crate::networks::Environments;

/// What phase 1 made of the values; the files' parts come from phase 2.
pub(super) struct Values {
    pub(super) listen: Listen,
    pub(super) limits: Limits,
    pub(super) environments: Environments,
    pub(super) peerings: Vec<Peering>,
    pub(super) refused_clients: Vec<IpNet>,
    pub(super) connection_rate: Option<super::Rate>,
    pub(super) upstreams: Vec<UpstreamConfig>,
    pub(super) routes: Vec<RouteConfig>,
    pub(super) tunnels: Vec<TunnelConfig>,
    pub(super) admin: Option<AdminSettings>,
    pub(super) health: Option<HealthSettings>,
    pub(super) acme: Option<AcmeSettings>,
    pub(super) gateway: Option<GatewayPolicy>,
    pub(super) redis: Option<RedisPlace>,
    pub(super) snapshots: Option<SnapshotSettings>,
    pub(super) account: Account,
    pub(super) stripped_headers: Vec<HeaderName>,
    pub(super) warnings: Problems,
}

/// Every value of `raw`, each problem reported once under its key.
pub(super) fn check(raw: &RawConfig) -> Result<Values, Problems> {
    let mut problems = Problems::default();
    let mut warnings = Problems::default();
    let listen = validate_listen(raw, &mut problems);
    let limits = validate_limits(&raw.limits, &mut problems);
    let (environments, incomplete) = validate_networks(&raw.networks, &mut problems);
    let peerings = validate_peerings(raw, &environments, &mut problems);
    let mut refused_clients = validate_denied(raw, &mut problems);
    // No other environment reaches ours: peerings only ever point away from us.
    refused_clients.extend(
        environments
            .iter()
            .filter(|(env, _)| *env != raw.environment)
            .flat_map(|(_, nets)| nets.iter().copied()),
    );
    let metadata = validate_metadata(raw, &mut problems);
    let connection_rate = raw.access.connection_rate.as_ref().and_then(|rate| {
        super::rates::rate(rate, &Key::new("access.connection_rate"), &mut problems)
    });
    let upstreams = validate_upstreams(raw, &environments, &incomplete, &metadata, &mut problems);
    require_certificates(raw, &mut problems);
    let stripped_headers = stripped_headers(raw, &mut problems);
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
    let snapshots = raw
        .snapshots
        .as_ref()
        .map(|s| super::process::validate_snapshots(s, &mut problems, &mut warnings));
    let account = super::process::account(raw, &mut problems, &mut warnings);
    let gateway = raw.gateway.as_ref().map(|g| {
        GatewayPolicy::check_jwks_dir(g, &mut problems);
        super::gateway::policy(g, &mut problems, &mut warnings).with_approvers(g, &mut problems)
    });
    let admin = validate_admin(raw, &mut problems);
    let health = validate_health(raw, &listen, &mut problems);
    let routes = validate_routes(raw, &upstreams, &limits, &mut problems);
    let tunnels = super::tunnels::validate_tunnels(raw, &upstreams, &mut problems);
    let acme = super::acme::validate_acme(raw, &routes, &mut problems);
    let redis = super::shared::check(raw, &upstreams, &mut problems, &mut warnings);
    hsts_warnings(&raw.hsts, &mut warnings);
    problems.or(Values {
        listen,
        limits,
        environments,
        peerings,
        refused_clients,
        connection_rate,
        upstreams,
        routes,
        tunnels,
        admin,
        health,
        acme,
        gateway,
        redis,
        snapshots,
        account,
        stripped_headers,
        warnings,
    })
}

/// `headers.strip`: names a header can have.
fn stripped_headers(raw: &RawConfig, problems: &mut Problems) -> Vec<HeaderName> {
    let key = Key::new("headers.strip");
    let mut names = Vec::new();
    for (i, name) in raw.headers.strip.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => names.push(header),
            Err(_) => problems.push(key.index(i), ProblemKind::HeaderName(name.clone())),
        }
    }
    names
}
