//! `[tls.acme]`, validated: names we route and do not also serve from files, a mailto contact,
//! a known or `https://` directory, and a cache directory we can write (mode 0700).

use std::path::{Path, PathBuf};

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
    if let Err(e) = check_cache_dir(&acme.cache_dir) {
        problems.push("tls.acme.cache_dir", ProblemKind::CacheDir(e));
    }
    if let Some(ca) = &acme.directory_ca
        && let Err(e) = crate::certs::load_roots(ca)
    {
        problems.push("tls.acme.directory_ca", e);
    }
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

/// Without touching anything: the directory, or the nearest existing parent it would be made
/// in, is a directory. Whether it can be written is learnt when the ACME task creates it.
fn check_cache_dir(dir: &Path) -> std::io::Result<()> {
    let existing = dir
        .ancestors()
        .find(|d| d.as_os_str().is_empty() || d.exists())
        .filter(|d| !d.as_os_str().is_empty());
    match existing {
        Some(d) if !std::fs::metadata(d)?.is_dir() => Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", d.display()),
        )),
        _ => Ok(()),
    }
}
