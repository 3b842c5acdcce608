//! Networks, environments, upstream addresses, peerings and refused clients: every rule about
//! who may reach whom, checked once here and enforced at run time by `networks`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use ipnet::IpNet;

use super::raw::RawConfig;
use super::validate::Problems;
use super::{Peering, ProblemKind, UpstreamAddr, UpstreamConfig};
use crate::networks::{Environments, NetworkRefusal, canonical_net, check_private, is_metadata};

pub(super) fn validate_networks(
    raw: &BTreeMap<String, Vec<String>>,
    problems: &mut Problems,
) -> Environments {
    let mut parsed: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for (env, nets) in raw {
        for (i, value) in nets.iter().enumerate() {
            let key = format!("networks.{env}[{i}]");
            let Some(net) = parse_net(value) else {
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

/// A CIDR network from the config, canonical (IPv4-mapped written as IPv4).
fn parse_net(value: &str) -> Option<IpNet> {
    value.parse::<IpNet>().ok().map(|net| canonical_net(&net))
}

/// `access.metadata_endpoints`: more addresses that are never an upstream.
pub(super) fn validate_metadata(raw: &RawConfig, problems: &mut Problems) -> Vec<IpNet> {
    parse_list(
        &raw.access.metadata_endpoints,
        "access.metadata_endpoints",
        problems,
    )
}

fn parse_list(values: &[String], key: &str, problems: &mut Problems) -> Vec<IpNet> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, value)| {
            parse_net(value)
                .ok_or_else(|| {
                    problems.push(format!("{key}[{i}]"), ProblemKind::Network(value.clone()))
                })
                .ok()
        })
        .collect()
}

pub(super) fn validate_upstreams(
    raw: &RawConfig,
    environments: &Environments,
    metadata: &[IpNet],
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
        let peered = raw
            .peerings
            .iter()
            .any(|p| p.from == raw.environment && p.to == *env);
        if *env != raw.environment && !peered {
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
                check_upstream_addr(value, env, networks, metadata)
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
                metadata_endpoints: metadata.to_vec(),
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
    metadata: &[IpNet],
) -> Result<UpstreamAddr, ProblemKind> {
    let addr = if let Ok(addr) = value.parse::<SocketAddr>() {
        UpstreamAddr::Ip(addr)
    } else {
        let (host, port) = value
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .filter(|(h, _)| crate::host::is_dns_name(&h.to_ascii_lowercase()))
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
        let shown = if matches!(addr, UpstreamAddr::Ip(_)) {
            value.to_owned()
        } else {
            format!("{value} (resolves to {ip})")
        };
        if is_metadata(ip, metadata) {
            return Err(ProblemKind::MetadataUpstream(shown));
        }
        if networks.iter().any(|net| net.contains(&ip)) {
            continue;
        }
        let host_net = IpNet::from(ip);
        return Err(match check_private(&host_net) {
            Ok(()) => ProblemKind::OutsideEnvironment {
                addr: shown,
                env: env.to_owned(),
            },
            Err(NetworkRefusal::LinkLocal) => ProblemKind::MetadataUpstream(shown),
            Err(NetworkRefusal::NotPrivate) => ProblemKind::PublicUpstream {
                addr: shown,
                env: env.to_owned(),
            },
        });
    }
    Ok(addr)
}

/// Peerings must name declared environments and start at the instance's own: this config can
/// only speak for where *we* may go.
pub(super) fn validate_peerings(
    raw: &RawConfig,
    environments: &Environments,
    problems: &mut Problems,
) -> Vec<Peering> {
    let mut peerings = Vec::new();
    for (i, peering) in raw.peerings.iter().enumerate() {
        let key = |field: &str| format!("peerings[{i}].{field}");
        for (field, env) in [("from", &peering.from), ("to", &peering.to)] {
            if environments.networks(env).is_none() {
                problems.push(key(field), ProblemKind::UnknownEnvironment(env.clone()));
            }
        }
        if peering.from != raw.environment {
            problems.push(
                key("from"),
                ProblemKind::ForeignPeering {
                    from: peering.from.clone(),
                    instance: raw.environment.clone(),
                },
            );
        } else if peering.from == peering.to {
            problems.push(key("to"), ProblemKind::SelfPeering);
        } else if let Some(networks) = environments.networks(&peering.to) {
            peerings.push(Peering {
                from: peering.from.clone(),
                to: peering.to.clone(),
                to_networks: networks.to_vec(),
            });
        }
    }
    peerings
}

/// `access.deny_clients`: any CIDR, public ones included.
pub(super) fn validate_denied(raw: &RawConfig, problems: &mut Problems) -> Vec<IpNet> {
    parse_list(&raw.access.deny_clients, "access.deny_clients", problems)
}
