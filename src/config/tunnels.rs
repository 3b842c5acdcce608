//! `[[tunnels]]`, validated: each names one exact gateway host (whose certificate
//! `coverage.rs` checks once the files are read), one target name and port, an upstream (so
//! every upstream rule holds: private networks of its environment, metadata endpoints never),
//! and who may open it.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::gateway::{access_rules, grants};
use super::problems::{Key, Problems};
use super::raw::{RawConfig, RawGateway, RawProtocol, RawTunnel};
use super::{PostgresSettings, ProblemKind, TunnelConfig, UpstreamConfig, UpstreamId};
use crate::host::{HostPattern, is_dns_name};

pub(super) fn validate_tunnels(
    raw: &RawConfig,
    upstreams: &[UpstreamConfig],
    problems: &mut Problems,
) -> Vec<TunnelConfig> {
    let mut tunnels: Vec<TunnelConfig> = Vec::new();
    for (i, tunnel) in raw.tunnels.iter().enumerate() {
        let tunnel_key = Key::new("tunnels").index(i);
        let key = |field: &str| tunnel_key.field(field);
        let host = match HostPattern::parse(&tunnel.host) {
            // SNI carries names only, never addresses.
            Ok(HostPattern::Exact(host)) if is_dns_name(&host) && !is_address(&host) => Some(host),
            Ok(_) => {
                problems.push(key("host"), ProblemKind::TunnelHost(tunnel.host.clone()));
                None
            }
            Err(e) => {
                problems.push(key("host"), e);
                None
            }
        };
        let target = tunnel.target.to_ascii_lowercase();
        if !is_dns_name(&target) || is_address(&target) {
            problems.push(
                key("target"),
                ProblemKind::TunnelTarget(tunnel.target.clone()),
            );
        }
        if tunnel.port == 0 {
            problems.push(key("port"), ProblemKind::Zero);
        }
        let upstream = upstreams.iter().position(|u| *u.name == *tunnel.upstream);
        if upstream.is_none() && !raw.upstreams.contains_key(&tunnel.upstream) {
            problems.push(
                key("upstream"),
                ProblemKind::UnknownUpstream(tunnel.upstream.clone()),
            );
        }
        let idle_timeout = match humantime::parse_duration(&tunnel.idle_timeout) {
            Ok(timeout) if !timeout.is_zero() => timeout,
            _ => {
                problems.push(
                    key("idle_timeout"),
                    ProblemKind::Duration(tunnel.idle_timeout.clone()),
                );
                Duration::ZERO
            }
        };
        let Some(gateway) = &raw.gateway else {
            problems.push(key("allow"), ProblemKind::NoGateway);
            continue;
        };
        let access = access_rules(&tunnel.allow, tunnel.mfa, &tunnel_key, gateway, problems);
        let postgres = database(tunnel, &target, &tunnel_key, gateway, problems);
        // A declared upstream missing here was refused with its own key.
        let (Some(host), Some(upstream)) = (host, upstream) else {
            continue;
        };
        let tunnel = TunnelConfig {
            host,
            target,
            port: tunnel.port,
            upstream: UpstreamId(upstream),
            access,
            idle_timeout,
            postgres,
        };
        if tunnels.iter().any(|t| t.name() == tunnel.name()) {
            problems.push(key("target"), ProblemKind::DuplicateTunnel(tunnel.name()));
        }
        tunnels.push(tunnel);
    }
    tunnels
}

/// A `protocol = "postgres"` tunnel's keys; each of them on a `tcp` tunnel is refused, as it
/// would do nothing there.
fn database(
    tunnel: &RawTunnel,
    target: &str,
    key: &Key,
    gateway: &RawGateway,
    problems: &mut Problems,
) -> Option<PostgresSettings> {
    if tunnel.protocol == RawProtocol::Tcp {
        let set = [
            ("tls_ca", tunnel.tls_ca.is_some()),
            ("server_name", tunnel.server_name.is_some()),
            ("read_only", tunnel.read_only),
            ("allow_write", !tunnel.allow_write.is_empty()),
            ("log_reads", tunnel.log_reads),
        ];
        for (field, _) in set.iter().filter(|(_, set)| *set) {
            problems.push(key.field(field), ProblemKind::OnlyPostgres);
        }
        return None;
    }
    let name = tunnel.server_name.as_deref().unwrap_or(target);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|_| {
            problems.push(
                key.field("server_name"),
                ProblemKind::ServerName(name.to_owned()),
            )
        })
        .ok();
    if !tunnel.allow_write.is_empty() && !tunnel.read_only {
        problems.push(
            key.field("allow_write"),
            ProblemKind::AllowWriteWithoutReadOnly,
        );
    }
    let allow_write = grants(
        &tunnel.allow_write,
        &key.field("allow_write"),
        gateway,
        problems,
    );
    let Some(tls_ca) = tunnel.tls_ca.clone() else {
        problems.push(key.field("tls_ca"), ProblemKind::NoDatabaseCa);
        return None;
    };
    Some(PostgresSettings {
        tls_ca,
        roots: Arc::new(rustls::RootCertStore::empty()),
        server_name: server_name?,
        read_only: tunnel.read_only,
        allow_write,
        log_reads: tunnel.log_reads,
    })
}

fn is_address(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
}
