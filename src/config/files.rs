//! Phase 2, the load step: every file the config names, read once, each problem under its key.
//! Certificates and keys, the employee CA, revocation lists, TOTP secrets, the shared secrets
//! and the store's CA, the ACME directory's CA and cache directory, the snapshot directory.
//! It takes only paths from the config, so it runs beside phase 1 and its problems are reported
//! with those; nothing here writes: `check` leaves the disk as it found it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;

use super::problems::{Key, Problems};
use super::raw::{RawAcme, RawConfig, RawGateway};
use super::shared::SharedFiles;
use super::{CrlUpdate, ProblemKind, TunnelConfig};
use crate::certs::{CertStore, load_certificate, load_roots};

/// What the files hold.
pub(super) struct Files {
    pub(super) certificates: CertStore,
    /// `None` without a `[gateway]`.
    pub(super) gateway: Option<GatewayFiles>,
    pub(super) shared: SharedFiles,
    /// `[[tunnels]] tls_ca`, by path.
    database_roots: BTreeMap<PathBuf, Arc<rustls::RootCertStore>>,
}

impl Files {
    /// `tunnels` with their databases' CAs.
    pub(super) fn with_database_roots(&self, mut tunnels: Vec<TunnelConfig>) -> Vec<TunnelConfig> {
        for postgres in tunnels.iter_mut().filter_map(|t| t.postgres.as_mut()) {
            if let Some(roots) = self.database_roots.get(&postgres.tls_ca) {
                postgres.roots = roots.clone();
            }
        }
        tunnels
    }
}

/// Reads every file `raw` names.
pub(super) fn read(raw: &RawConfig) -> Result<Files, Problems> {
    let mut problems = Problems::default();
    let certificates = certificates(raw, &mut problems);
    let gateway = raw.gateway.as_ref().and_then(|g| gateway(g, &mut problems));
    if let Some(acme) = &raw.tls.acme {
        self::acme(acme, &mut problems);
    }
    let shared = super::shared::read(&raw.shared, &mut problems);
    let database_roots = raw
        .tunnels
        .iter()
        .enumerate()
        .filter_map(|(i, tunnel)| {
            let ca = tunnel.tls_ca.as_ref()?;
            load_roots(ca)
                .map_err(|e| problems.push(Key::new("tunnels").index(i).field("tls_ca"), e))
                .ok()
                .map(|roots| (ca.clone(), Arc::new(roots)))
        })
        .collect();
    // It holds the ACME account key: private like the cache it copies.
    if let Some(snapshots) = &raw.snapshots
        && snapshots.dir.is_dir()
        && let Err(e) = crate::secrets::require_private(&snapshots.dir)
    {
        problems.push("snapshots.dir", e);
    }
    problems.or(Files {
        certificates,
        gateway,
        shared,
        database_roots,
    })
}

/// What the gateway's files hold.
pub(super) struct GatewayFiles {
    pub(super) client_roots: Arc<rustls::RootCertStore>,
    pub(super) crls: Vec<CertificateRevocationListDer<'static>>,
    pub(super) crl_updates: Vec<CrlUpdate>,
    /// By user name, for users with a secret file that could be read.
    pub(super) totp: BTreeMap<String, Arc<totp_rs::Totp>>,
}

/// `tls.certificates`: each certificate with its key.
fn certificates(raw: &RawConfig, problems: &mut Problems) -> CertStore {
    let entries = raw
        .tls
        .certificates
        .iter()
        .enumerate()
        .filter_map(|(i, files)| {
            load_certificate(&files.cert, &files.key)
                .map_err(|e| problems.push(Key::new("tls.certificates").index(i), e))
                .ok()
                .map(Arc::new)
        })
        .collect();
    CertStore::new(entries)
}

/// `[gateway]`'s files: the employee CA, revocation lists and TOTP secrets.
fn gateway(gateway: &RawGateway, problems: &mut Problems) -> Option<GatewayFiles> {
    // Every file is read even when the CA is not, so that all their problems come at once.
    let client_roots = load_roots(&gateway.client_ca)
        .map_err(|e| problems.push("gateway.client_ca", e))
        .ok();
    let (crls, crl_updates) = gateway
        .crls
        .iter()
        .enumerate()
        .filter_map(|(i, path)| {
            let key = String::from(Key::new("gateway.crls").index(i));
            match load_crl(path) {
                Some((crl, next_update)) => Some((crl, CrlUpdate { key, next_update })),
                None => {
                    problems.push(key, ProblemKind::Crl(path.clone()));
                    None
                }
            }
        })
        .unzip();
    let totp = gateway
        .users
        .iter()
        .filter_map(|(name, user)| {
            let file = user.totp_secret_file.as_ref()?;
            let key = Key::new("gateway.users")
                .field(name)
                .field("totp_secret_file");
            load_totp(file)
                .map_err(|kind| problems.push(key, kind))
                .ok()
                .map(|totp| (name.clone(), totp))
        })
        .collect();
    Some(GatewayFiles {
        client_roots: Arc::new(client_roots?),
        crls,
        crl_updates,
        totp,
    })
}

/// A PEM revocation list and its `nextUpdate`.
fn load_crl(
    path: &Path,
) -> Option<(
    CertificateRevocationListDer<'static>,
    Option<std::time::SystemTime>,
)> {
    let crl = CertificateRevocationListDer::from_pem_file(path).ok()?;
    let (_, parsed) = x509_parser::parse_x509_crl(&crl).ok()?;
    let next_update = parsed
        .next_update()
        .map(|t| UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0)));
    Some((crl, next_update))
}

/// A base32 secret in a file only its owner can read.
fn load_totp(file: &Path) -> Result<Arc<totp_rs::Totp>, ProblemKind> {
    // The real cause: a reload that Landlock does not let read the file must say so, not
    // blame the secret.
    let unreadable = |source| ProblemKind::SecretFile {
        file: file.to_owned(),
        source,
    };
    crate::secrets::require_private(file)?;
    let text = std::fs::read_to_string(file).map_err(unreadable)?;
    let secret = totp_rs::Secret::try_from_base32(text.trim())
        .map_err(|_| ProblemKind::TotpSecret(file.to_owned()))?;
    totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .map(Arc::new)
        .map_err(|_| ProblemKind::TotpSecret(file.to_owned()))
}

/// `[tls.acme]`'s files: the directory's CA, the DNS-01 TSIG key, and a cache directory that is, or can become, a
/// directory (it is created, private, when the ACME task starts).
fn acme(acme: &RawAcme, problems: &mut Problems) {
    if acme.store.is_none()
        && let Err(kind) = check_cache_dir(&acme.cache_dir)
    {
        problems.push("tls.acme.cache_dir", kind);
    }
    if let Some(ca) = &acme.directory_ca
        && let Err(e) = load_roots(ca)
    {
        problems.push("tls.acme.directory_ca", e);
    }
    if let Some(dns) = &acme.dns {
        dns_files(dns, problems);
    }
}

/// `[tls.acme.dns]`'s secrets, private and usable, and the API's CA.
fn dns_files(dns: &super::raw::RawAcmeDns, problems: &mut Problems) {
    let key = |field: &str| Key::new("tls.acme.dns").field(field);
    if let Some(file) = &dns.tsig_key_file
        && let Err(e) = super::read_tsig_key(file)
    {
        problems.push(key("tsig_key_file"), e);
    }
    for (field, file) in [
        ("application_secret_file", &dns.application_secret_file),
        ("consumer_key_file", &dns.consumer_key_file),
    ] {
        if let Some(file) = file
            && let Err(e) = super::read_api_secret(file)
        {
            problems.push(key(field), e);
        }
    }
    if let Some(ca) = &dns.ca_file
        && let Err(e) = load_roots(ca)
    {
        problems.push(key("ca_file"), e);
    }
}

/// The directory, or the nearest existing parent it would be made in, is a directory; one
/// that exists already holds the account key, so it and all in it must be private. Whether it
/// can be written is learnt when the ACME task creates it.
fn check_cache_dir(dir: &Path) -> Result<(), ProblemKind> {
    if dir.is_dir() {
        return Ok(crate::secrets::require_private_dir(dir)?);
    }
    let existing = dir
        .ancestors()
        .find(|d| d.as_os_str().is_empty() || d.exists())
        .filter(|d| !d.as_os_str().is_empty());
    match existing {
        Some(d) if !d.is_dir() => Err(super::AcmeProblem::CacheDir(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", d.display()),
        ))
        .into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_totp_file_names_the_read_error_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be read as a file, as a file Landlock hides cannot.
        let file = dir.path().join("alice.totp");
        crate::secrets::create_private_dir(&file).unwrap();
        let problem = load_totp(&file).map(drop).unwrap_err();
        assert!(
            matches!(problem, ProblemKind::SecretFile { .. }),
            "{problem}"
        );
        let message = problem.to_string();
        assert!(message.starts_with("cannot read "), "{message}");
        std::fs::remove_dir(&file).unwrap();
        crate::secrets::create_private_dir(dir.path()).unwrap();
        std::fs::write(&file, "not base32!").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let problem = load_totp(&file).map(drop).unwrap_err();
        assert!(matches!(problem, ProblemKind::TotpSecret(_)), "{problem}");
    }
}
