//! `[tls.acme]`, validated: names we route and do not also serve from files (wildcards with
//! DNS-01 only), a mailto contact, a known or `https://` directory, a challenge with what it
//! needs (a plain listener for HTTP-01, a zone holding every name for DNS-01). Its files are
//! checked by the load step (`files.rs`), and the names against certificate files by
//! `coverage.rs`.

use std::path::PathBuf;
use std::time::Duration;

use super::AcmeProblem;
use super::acme_dns::validate_dns;
use super::problems::{Key, Problems};
use super::raw::{RawAcme, RawAcmeStore, RawConfig};
use super::{ProblemKind, RouteConfig};
use crate::host::HostPattern;

pub use super::acme_dns::{AcmeDns, DnsProvider};
pub use super::raw::Challenge;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Certificates ordered and renewed over ACME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// Names to order, each a routed host.
    pub domains: Vec<String>,
    /// `mailto:` contacts for the account.
    pub contact: Vec<String>,
    /// The directory URL.
    pub directory: String,
    /// Account key and certificates.
    pub cache_dir: PathBuf,
    /// Trust root for the directory's own HTTPS (a test CA such as Pebble's); public roots
    /// otherwise.
    pub directory_ca: Option<PathBuf>,
    /// How names are validated.
    pub challenge: Challenge,
    /// The CA's certificate profile to order (draft-aaron-acme-profiles), e.g. `shortlived`.
    pub profile: Option<String>,
    /// Renew this long before expiry when the CA suggests no window (RFC 9773), or a third of
    /// the lifetime when that is shorter.
    pub renew_before: Duration,
    /// The object store several instances share the account and certificates in; `None`
    /// keeps them in `cache_dir`, for this instance alone.
    pub store: Option<AcmeStore>,
    /// Where DNS-01 records are written; set exactly when the challenge is DNS-01.
    pub dns: Option<AcmeDns>,
}

/// When a certificate valid from `not_before` to `not_after` is renewed when the CA suggests
/// no window: `renew_before` before it expires, or with a third of its lifetime left when
/// that comes later (a six-day certificate renews after four days, as certbot does).
pub fn renewal_without_window(
    not_before: std::time::SystemTime,
    not_after: std::time::SystemTime,
    renew_before: Duration,
) -> std::time::SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_after - renew_before.min(lifetime / 3)
}

/// `[tls.acme.store]`, validated: an S3 bucket (or an S3-compatible service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeStore {
    /// The bucket.
    pub bucket: String,
    /// Prepended to every object name, e.g. `prod/`.
    pub prefix: String,
    /// The bucket's region; the environment's (`AWS_REGION`) otherwise.
    pub region: Option<String>,
    /// Another S3-compatible endpoint; `http://` only on loopback.
    pub endpoint: Option<String>,
    /// How long the lease holder may go without renewing before another instance takes over.
    pub lease: Duration,
    /// How often every instance looks for new certificates and challenges in the store.
    pub poll: Duration,
}

pub(super) fn validate_acme(
    raw: &RawConfig,
    routes: &[RouteConfig],
    problems: &mut Problems,
) -> Option<AcmeSettings> {
    let acme = raw.tls.acme.as_ref()?;
    if acme.domains.is_empty() {
        problems.push("tls.acme.domains", AcmeProblem::NoDomains);
    }
    for (i, domain) in acme.domains.iter().enumerate() {
        let key = Key::new("tls.acme.domains").index(i);
        match HostPattern::parse(domain) {
            Ok(pattern) => {
                if !routed(&pattern, routes) {
                    problems.push(key.clone(), AcmeProblem::Unrouted(pattern.to_string()));
                }
                if matches!(pattern, HostPattern::Wildcard(_)) && acme.challenge != Challenge::Dns01
                {
                    problems.push(key, AcmeProblem::Wildcard);
                }
            }
            Err(e) => problems.push(key, e),
        }
    }
    for (i, contact) in acme.contact.iter().enumerate() {
        if !contact.starts_with("mailto:") || contact.len() <= "mailto:".len() {
            problems.push(
                Key::new("tls.acme.contact").index(i),
                AcmeProblem::Contact(contact.clone()),
            );
        }
    }
    if acme.challenge == Challenge::Http01 && raw.listen.http.is_none() {
        problems.push("tls.acme.challenge", AcmeProblem::HttpWithoutListener);
    }
    let dns = match (&acme.dns, acme.challenge) {
        (Some(dns), Challenge::Dns01) => Some(validate_dns(dns, &acme.domains, problems)),
        (None, Challenge::Dns01) => {
            problems.push("tls.acme.challenge", AcmeProblem::DnsMissing);
            None
        }
        (Some(_), _) => {
            problems.push("tls.acme.dns", AcmeProblem::DnsUnused);
            None
        }
        (None, _) => None,
    };
    if let Some(profile) = &acme.profile
        && (profile.is_empty()
            || !profile
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        problems.push("tls.acme.profile", AcmeProblem::Profile(profile.clone()));
    }
    let renew_before = match humantime::parse_duration(&acme.renew_before) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            let value = acme.renew_before.clone();
            problems.push("tls.acme.renew_before", ProblemKind::Duration(value));
            Duration::from_secs(1)
        }
    };
    let directory = match acme.directory.as_str() {
        "letsencrypt" => LETS_ENCRYPT.to_owned(),
        "letsencrypt-staging" => LETS_ENCRYPT_STAGING.to_owned(),
        url if url.starts_with("https://") => url.to_owned(),
        other => {
            problems.push(
                "tls.acme.directory",
                AcmeProblem::Directory(other.to_owned()),
            );
            String::new()
        }
    };
    let store = acme
        .store
        .as_ref()
        .map(|store| validate_store(store, problems));
    Some(AcmeSettings {
        store,
        dns,
        renew_before,
        ..settings(acme, directory)
    })
}

/// A name a route serves: a wildcard is served when a route's host is that wildcard, or a name
/// under it.
fn routed(pattern: &HostPattern, routes: &[RouteConfig]) -> bool {
    routes.iter().any(|r| match pattern {
        HostPattern::Exact(name) => r.host.matches(name),
        HostPattern::Wildcard(_) => {
            &r.host == pattern
                || matches!(&r.host, HostPattern::Exact(name) if pattern.matches(name))
        }
    })
}

fn validate_store(raw: &RawAcmeStore, problems: &mut Problems) -> AcmeStore {
    let key = |field: &str| Key::new("tls.acme.store").field(field);
    if raw.bucket.is_empty() {
        problems.push(key("bucket"), ProblemKind::Empty);
    }
    if let Some(endpoint) = &raw.endpoint
        && !endpoint_allowed(endpoint)
    {
        problems.push(
            key("endpoint"),
            AcmeProblem::StoreEndpoint(endpoint.clone()),
        );
    }
    if raw.renew_before.is_some() {
        problems.push(key("renew_before"), AcmeProblem::RenewBeforeMoved);
    }
    let mut duration = |field: &str, value: &str| match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            problems.push(key(field), ProblemKind::Duration(value.to_owned()));
            Duration::from_secs(1)
        }
    };
    let store = AcmeStore {
        bucket: raw.bucket.clone(),
        prefix: raw.prefix.clone(),
        region: raw.region.clone(),
        endpoint: raw.endpoint.clone(),
        lease: duration("lease", &raw.lease),
        poll: duration("poll", &raw.poll),
    };
    // The holder renews at a third of the lease; followers must see a published challenge well
    // within the wait the holder gives them (two polls).
    if store.poll >= store.lease {
        problems.push(key("poll"), AcmeProblem::PollNotBelowLease);
    }
    store
}

/// `https://` anywhere; `http://` only to this machine (a local S3-compatible server), since
/// the account key travels in it.
pub(super) fn endpoint_allowed(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return false;
    };
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(host)) => {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

fn settings(acme: &RawAcme, directory: String) -> AcmeSettings {
    AcmeSettings {
        domains: acme
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        contact: acme.contact.clone(),
        directory,
        cache_dir: acme.cache_dir.clone(),
        directory_ca: acme.directory_ca.clone(),
        challenge: acme.challenge,
        profile: acme.profile.clone(),
        renew_before: Duration::ZERO,
        store: None,
        dns: None,
    }
}
