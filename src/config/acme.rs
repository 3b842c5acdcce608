//! `[tls.acme]`, validated: names we route and do not also serve from files, a mailto contact,
//! a known or `https://` directory. Its files are checked by the load step (`files.rs`).

use std::path::PathBuf;

use super::raw::{RawAcme, RawConfig};
use super::validate::{Key, Problems};
use super::{ProblemKind, RouteConfig};
use crate::certs::CertStore;
use crate::host::HostPattern;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Certificates ordered and renewed over ACME (TLS-ALPN-01 on the HTTPS listener).
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
}

pub(super) fn validate_acme(
    raw: &RawConfig,
    files: &CertStore,
    routes: &[RouteConfig],
    problems: &mut Problems,
) -> Option<AcmeSettings> {
    let acme = raw.tls.acme.as_ref()?;
    if acme.domains.is_empty() {
        problems.push("tls.acme.domains", ProblemKind::NoAcmeDomains);
    }
    for (i, domain) in acme.domains.iter().enumerate() {
        let key = Key::new("tls.acme.domains").index(i);
        match HostPattern::parse(domain) {
            Ok(HostPattern::Exact(name)) => {
                if !routes.iter().any(|r| r.host.matches(&name)) {
                    problems.push(key, ProblemKind::AcmeUnrouted(name));
                } else if files.covers(&HostPattern::Exact(name.clone())) {
                    problems.push(key, ProblemKind::AcmeAndFile(name));
                }
            }
            Ok(HostPattern::Wildcard(_)) => problems.push(key, ProblemKind::AcmeWildcard),
            Err(e) => problems.push(key, e),
        }
    }
    for (i, contact) in acme.contact.iter().enumerate() {
        if !contact.starts_with("mailto:") || contact.len() <= "mailto:".len() {
            problems.push(
                Key::new("tls.acme.contact").index(i),
                ProblemKind::Contact(contact.clone()),
            );
        }
    }
    let directory = match acme.directory.as_str() {
        "letsencrypt" => LETS_ENCRYPT.to_owned(),
        "letsencrypt-staging" => LETS_ENCRYPT_STAGING.to_owned(),
        url if url.starts_with("https://") => url.to_owned(),
        other => {
            problems.push(
                "tls.acme.directory",
                ProblemKind::Directory(other.to_owned()),
            );
            String::new()
        }
    };
    Some(settings(acme, directory))
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
    }
}
