//! `[[tunnels]]`, validated: each names one exact gateway host (whose certificate
//! `coverage.rs` checks once the files are read), one target name and port, an upstream (so
//! every upstream rule holds: private networks of its environment, metadata endpoints never),
//! and who may open it.

use std::time::Duration;

use super::gateway::access_rules;
use super::problems::{Key, Problems};
use super::raw::RawConfig;
use super::{ProblemKind, TunnelConfig, UpstreamConfig, UpstreamId};
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
        };
        if tunnels.iter().any(|t| t.name() == tunnel.name()) {
            problems.push(key("target"), ProblemKind::DuplicateTunnel(tunnel.name()));
        }
        tunnels.push(tunnel);
    }
    tunnels
}

fn is_address(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
}
