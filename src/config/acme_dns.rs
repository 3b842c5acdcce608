//! `[tls.acme.dns]`, validated: a zone holding every name, the servers to ask, and one
//! provider's keys, each missing one reported under its key and another provider's refused.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::AcmeProblem;
use super::problems::{Key, Problems};
use super::raw::{DnsProviderKind, RawAcmeDns};
use super::{ProblemKind, acme::endpoint_allowed};
use crate::host::HostPattern;

/// OVH's European API, where a `.fr` or `.eu` company's zones are.
pub const OVH_EU: &str = "https://eu.api.ovh.com/1.0";

/// `[tls.acme.dns]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeDns {
    /// Who writes the records.
    pub provider: DnsProvider,
    /// The zone, lowercase, without the final dot.
    pub zone: String,
    /// The servers asked for each record before the CA is told to look.
    pub nameservers: Vec<SocketAddr>,
    /// How long to wait for all of them.
    pub propagation_timeout: Duration,
}

/// How records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsProvider {
    /// RFC 2136 updates to the primary, signed with TSIG; the primary is asked first.
    Rfc2136 {
        server: SocketAddr,
        /// As `tsig-keygen` writes it (read when ACME starts; checked by `check`).
        tsig_key_file: PathBuf,
    },
    /// OVH's signed REST API (files read when ACME starts; checked by `check`).
    Ovh {
        endpoint: String,
        application_key: String,
        application_secret_file: PathBuf,
        consumer_key_file: PathBuf,
        ca_file: Option<PathBuf>,
    },
    /// AWS Route53, credentials from the environment or the instance's role.
    Route53 {
        hosted_zone_id: String,
        region: Option<String>,
        /// Another AWS-compatible endpoint; `http://` only on loopback.
        endpoint: Option<String>,
    },
}

impl DnsProvider {
    /// The files it reads, by key, for the load step.
    pub fn secret_files(&self) -> Vec<(&'static str, &PathBuf)> {
        match self {
            Self::Rfc2136 { tsig_key_file, .. } => vec![("tsig_key_file", tsig_key_file)],
            Self::Ovh {
                application_secret_file,
                consumer_key_file,
                ..
            } => vec![
                ("application_secret_file", application_secret_file),
                ("consumer_key_file", consumer_key_file),
            ],
            Self::Route53 { .. } => Vec::new(),
        }
    }
}

pub(super) fn validate_dns(
    raw: &RawAcmeDns,
    domains: &[String],
    problems: &mut Problems,
) -> AcmeDns {
    let key = |field: &str| Key::new("tls.acme.dns").field(field);
    let mut address = |field: &str, value: &str| {
        value.parse().unwrap_or_else(|_| {
            problems.push(key(field), AcmeProblem::DnsServer(value.to_owned()));
            SocketAddr::from(([127, 0, 0, 1], 53))
        })
    };
    let nameservers: Vec<SocketAddr> = raw
        .nameservers
        .iter()
        .map(|n| address("nameservers", n))
        .collect();
    let server = raw.server.as_deref().map(|s| address("server", s));
    let zone = raw.zone.trim_end_matches('.').to_ascii_lowercase();
    if !matches!(HostPattern::parse(&zone), Ok(HostPattern::Exact(_))) {
        problems.push(key("zone"), AcmeProblem::Zone(raw.zone.clone()));
    }
    for (i, domain) in domains.iter().enumerate() {
        let name = domain.trim_start_matches("*.").to_ascii_lowercase();
        if name != zone && !name.ends_with(&format!(".{zone}")) {
            let problem = AcmeProblem::OutsideZone {
                name: domain.clone(),
                zone: zone.clone(),
            };
            problems.push(Key::new("tls.acme.domains").index(i), problem);
        }
    }
    let propagation_timeout = match humantime::parse_duration(&raw.propagation_timeout) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            let value = raw.propagation_timeout.clone();
            problems.push(key("propagation_timeout"), ProblemKind::Duration(value));
            Duration::from_secs(1)
        }
    };
    let provider = provider(raw, server, &nameservers, problems);
    AcmeDns {
        provider,
        zone,
        nameservers,
        propagation_timeout,
    }
}

/// The provider's keys: each it needs present, each of another absent.
fn provider(
    raw: &RawAcmeDns,
    server: Option<SocketAddr>,
    nameservers: &[SocketAddr],
    problems: &mut Problems,
) -> DnsProvider {
    let key = |field: &str| Key::new("tls.acme.dns").field(field);
    let mut require = |field: &str, present: bool, used: bool| {
        if used && !present {
            problems.push(key(field), AcmeProblem::DnsKeyMissing);
        } else if !used && present {
            problems.push(key(field), AcmeProblem::DnsKeyUnused);
        }
    };
    let (rfc2136, ovh, route53) = (
        raw.provider == DnsProviderKind::Rfc2136,
        raw.provider == DnsProviderKind::Ovh,
        raw.provider == DnsProviderKind::Route53,
    );
    require("server", raw.server.is_some(), rfc2136);
    require("tsig_key_file", raw.tsig_key_file.is_some(), rfc2136);
    require("application_key", raw.application_key.is_some(), ovh);
    require(
        "application_secret_file",
        raw.application_secret_file.is_some(),
        ovh,
    );
    require("consumer_key_file", raw.consumer_key_file.is_some(), ovh);
    require("hosted_zone_id", raw.hosted_zone_id.is_some(), route53);
    for (field, present, used) in [
        ("endpoint", raw.endpoint.is_some(), ovh || route53),
        ("ca_file", raw.ca_file.is_some(), ovh),
        ("region", raw.region.is_some(), route53),
    ] {
        if present && !used {
            problems.push(key(field), AcmeProblem::DnsKeyUnused);
        }
    }
    if let Some(endpoint) = &raw.endpoint
        && !endpoint_allowed(endpoint)
    {
        problems.push(
            key("endpoint"),
            AcmeProblem::StoreEndpoint(endpoint.clone()),
        );
    }
    let path = |p: &Option<PathBuf>| p.clone().unwrap_or_default();
    match raw.provider {
        DnsProviderKind::Rfc2136 => DnsProvider::Rfc2136 {
            server: server.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 53))),
            tsig_key_file: path(&raw.tsig_key_file),
        },
        DnsProviderKind::Ovh => {
            if !cfg!(feature = "dns-ovh") {
                problems.push(key("provider"), AcmeProblem::NotBuilt("dns-ovh"));
            }
            // No primary to ask: the zone's servers say when the record is there.
            if nameservers.is_empty() {
                problems.push(key("nameservers"), AcmeProblem::NameserversNeeded);
            }
            let endpoint = raw.endpoint.clone().unwrap_or_else(|| OVH_EU.to_owned());
            DnsProvider::Ovh {
                endpoint: endpoint.trim_end_matches('/').to_owned(),
                application_key: raw.application_key.clone().unwrap_or_default(),
                application_secret_file: path(&raw.application_secret_file),
                consumer_key_file: path(&raw.consumer_key_file),
                ca_file: raw.ca_file.clone(),
            }
        }
        DnsProviderKind::Route53 => {
            if !cfg!(feature = "dns-route53") {
                problems.push(key("provider"), AcmeProblem::NotBuilt("dns-route53"));
            }
            DnsProvider::Route53 {
                hosted_zone_id: raw.hosted_zone_id.clone().unwrap_or_default(),
                region: raw.region.clone(),
                endpoint: raw.endpoint.clone(),
            }
        }
    }
}
