//! Networks, environments, upstream addresses, peerings and refused clients: every rule about
//! who may reach whom, checked once here and enforced at run time by `networks`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use http::uri::Authority;

use ipnet::IpNet;

use super::problems::{Key, Problems};
use super::raw::RawConfig;
use super::{Peering, ProblemKind, UpstreamAddr, UpstreamConfig};
use crate::networks::{Environments, NetworkRefusal, canonical_net, check_private, is_metadata};

/// `[networks]`: every environment declared, with the networks that passed, and the names of
/// those where one was refused (an address such a network would have held is not "outside"
/// the environment on top of the network's own problem).
pub(super) fn validate_networks(
    raw: &BTreeMap<String, Vec<String>>,
    problems: &mut Problems,
) -> (Environments, BTreeSet<String>) {
    let mut parsed: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    let mut incomplete = BTreeSet::new();
    for (env, nets) in raw {
        let mut passed = Vec::new();
        for (i, value) in nets.iter().enumerate() {
            let key = Key::new("networks").field(env).index(i);
            let net = match parse_net(value) {
                None => Err(ProblemKind::Network(value.clone())),
                Some(net) => check_private(&net)
                    .map(|()| net)
                    .map_err(|reason| ProblemKind::NotPrivate { net, reason }),
            };
            let net = match net {
                Ok(net) => net,
                Err(kind) => {
                    problems.push(key, kind);
                    incomplete.insert(env.clone());
                    continue;
                }
            };
            for (other_env, others) in &parsed {
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
            passed.push(net);
        }
        // Declared even when none of its networks passed: its upstreams are not then "in no
        // environment" on top of the networks' own problems.
        parsed.insert(env.clone(), passed);
    }
    (Environments::new(parsed), incomplete)
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
                    problems.push(Key::new(key).index(i), ProblemKind::Network(value.clone()))
                })
                .ok()
        })
        .collect()
}

pub(super) fn validate_upstreams(
    raw: &RawConfig,
    environments: &Environments,
    incomplete: &BTreeSet<String>,
    metadata: &[IpNet],
    problems: &mut Problems,
) -> Vec<UpstreamConfig> {
    let mut upstreams = Vec::new();
    for (name, upstream) in &raw.upstreams {
        let key = Key::new("upstreams").field(name);
        let env = &upstream.environment;
        let Some(networks) = environments.networks(env) else {
            problems.push(
                key.field("environment"),
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
                key.field("environment"),
                ProblemKind::CrossEnvironment {
                    upstream: env.clone(),
                    instance: raw.environment.clone(),
                },
            );
        }
        if upstream.addrs.is_empty() {
            problems.push(key.field("addrs"), ProblemKind::NoAddrs);
        }
        let incomplete = incomplete.contains(env);
        let addrs = upstream
            .addrs
            .iter()
            .enumerate()
            .filter_map(|(i, value)| {
                let key = key.field("addrs").index(i);
                parse_upstream_addr(value)
                    .and_then(|addr| {
                        if let Some(ip) = addr.ip {
                            match check_reachable(ip.ip(), value, env, networks, metadata) {
                                Err(ProblemKind::OutsideEnvironment { .. }) if incomplete => {}
                                outcome => outcome?,
                            }
                        }
                        Ok(addr)
                    })
                    .map_err(|kind| problems.push(key, kind))
                    .ok()
            })
            .collect();
        let resilience = super::resilience::validate(upstream, &key, problems);
        upstreams.push(UpstreamConfig {
            name: name.as_str().into(),
            resilience,
            environment: env.clone(),
            networks: networks.to_vec(),
            addrs,
            metadata_endpoints: metadata.to_vec(),
        });
    }
    upstreams
}

/// `ip:port` or `name:port`, as requests to it will be addressed.
fn parse_upstream_addr(value: &str) -> Result<UpstreamAddr, ProblemKind> {
    let bad = || ProblemKind::UpstreamAddr(value.to_owned());
    let ip = value.parse::<SocketAddr>().ok();
    if ip.is_none() {
        value
            .rsplit_once(':')
            .filter(|(host, port)| {
                port.parse::<u16>().is_ok() && crate::host::is_dns_name(&host.to_ascii_lowercase())
            })
            .ok_or_else(bad)?;
    }
    let authority = Authority::try_from(value.to_ascii_lowercase()).map_err(|_| bad())?;
    Ok(UpstreamAddr { authority, ip })
}

/// Refuses an upstream address outside the environment's networks: metadata endpoints, then
/// public addresses, then private ones of another environment. `shown` names it in the error.
pub(super) fn check_reachable(
    ip: IpAddr,
    shown: &str,
    env: &str,
    networks: &[IpNet],
    metadata: &[IpNet],
) -> Result<(), ProblemKind> {
    let ip = ip.to_canonical();
    if is_metadata(ip, metadata) {
        return Err(ProblemKind::MetadataUpstream(shown.to_owned()));
    }
    if networks.iter().any(|net| net.contains(&ip)) {
        return Ok(());
    }
    Err(match check_private(&IpNet::from(ip)) {
        Ok(()) => ProblemKind::OutsideEnvironment {
            addr: shown.to_owned(),
            env: env.to_owned(),
        },
        Err(NetworkRefusal::LinkLocal) => ProblemKind::MetadataUpstream(shown.to_owned()),
        Err(NetworkRefusal::NotPrivate) => ProblemKind::PublicUpstream {
            addr: shown.to_owned(),
            env: env.to_owned(),
        },
    })
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
        let peering_key = Key::new("peerings").index(i);
        let key = |field: &str| peering_key.field(field);
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

/// `listen.proxy_protocol_from`: private ranges only, since whoever sends from them chooses the
/// client address every other rule sees.
pub(super) fn validate_balancers(raw: &RawConfig, problems: &mut Problems) -> Vec<IpNet> {
    private_ranges(
        &raw.listen.proxy_protocol_from,
        "listen.proxy_protocol_from",
        problems,
    )
}

/// A list of networks under `key` that must all be private.
pub(super) fn private_ranges(values: &[String], key: &str, problems: &mut Problems) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let Some(net) = parse_net(value) else {
            problems.push(Key::new(key).index(i), ProblemKind::Network(value.clone()));
            continue;
        };
        match check_private(&net) {
            Ok(()) => nets.push(net),
            Err(reason) => problems.push(
                Key::new(key).index(i),
                ProblemKind::NotPrivate { net, reason },
            ),
        }
    }
    nets
}

/// `access.deny_clients`: any CIDR, public ones included.
pub(super) fn validate_denied(raw: &RawConfig, problems: &mut Problems) -> Vec<IpNet> {
    parse_list(&raw.access.deny_clients, "access.deny_clients", problems)
}
