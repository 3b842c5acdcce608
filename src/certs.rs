//! Certificates and trust roots read from PEM files, checked so that what loads can be served,
//! and indexed by the names they cover. Both the config check and the TLS listener use it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use crate::host::{HostMap, HostPattern};

/// Why a certificate/key pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read or holds no PEM of the right kind.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{} holds no certificate", .0.display())]
    Empty(PathBuf),
    /// A stored key and chain are not the PEM they should be.
    #[error("not a PEM private key and certificate chain: {0}")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// The leaf certificate is not valid X.509.
    #[error("leaf certificate cannot be parsed")]
    Parse,
    /// The key is of a kind rustls cannot sign with.
    #[error("unsupported private key: {0}")]
    UnsupportedKey(#[source] rustls::Error),
    /// The leaf is not one rustls can serve (an unknown critical extension, say).
    #[error("certificate cannot be served: {0}")]
    Unservable(#[source] rustls::Error),
    /// The key does not belong to the leaf certificate.
    #[error("private key does not match the certificate")]
    KeyMismatch,
    /// The leaf certificate's validity period has ended.
    #[error("certificate has expired")]
    Expired,
    /// The leaf certificate's validity period has not begun.
    #[error("certificate is not valid before {0}")]
    NotYetValid(String),
    /// The leaf certificate does not cover a name it is meant for.
    #[error("certificate does not cover {0}")]
    NotFor(String),
    /// The leaf certificate names no DNS name or IP address.
    #[error("certificate has no DNS or IP subject alternative names")]
    NoNames,
    /// The private key file can be read by others than its owner.
    #[error(transparent)]
    ExposedKey(#[from] crate::secrets::Exposure),
}

/// One loaded certificate chain with its key and the names it covers.
#[derive(Debug)]
pub struct CertEntry {
    /// The SANs of the leaf, as host patterns.
    pub names: Arc<[HostPattern]>,
    /// When the leaf stops being valid.
    pub not_after: std::time::SystemTime,
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
}

impl CertEntry {
    /// True when this certificate is valid for `host` (normalised, as from `request_host`).
    pub fn covers(&self, host: &str) -> bool {
        crate::host::any_covers(&self.names, host)
    }
}

/// Loads a PEM chain and key, refusing what could not be served correctly.
pub fn load_certificate(cert: &Path, key: &Path) -> Result<CertEntry, CertError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CertError::Read { path, source }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(read_err(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(cert))?;
    if chain.is_empty() {
        return Err(CertError::Empty(cert.into()));
    }
    crate::secrets::require_private(key)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(read_err(key))?;
    certified(chain, key_der)
}

/// A key and chain from one PEM text (as ACME stores them), checked as a file pair is, and
/// covering every name of `names`.
pub fn certificate_from_pem(pem: &[u8], names: &[String]) -> Result<CertEntry, CertError> {
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(CertError::Pem)?;
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CertError::Pem)?;
    let entry = certified(chain, key)?;
    match names
        .iter()
        .find(|name| !entry.covers(&name.to_ascii_lowercase()))
    {
        Some(name) => Err(CertError::NotFor(name.clone())),
        None => Ok(entry),
    }
}

/// The pair rustls would serve, refused when the leaf is unreadable, outside its validity
/// period or nameless, or when the key is not the leaf's.
fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertEntry, CertError> {
    let (names, not_after) = leaf_names(chain.first().ok_or(CertError::Parse)?)?;
    let signing_key = aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(CertError::UnsupportedKey)?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key that cannot tell its public half is judged by the first handshake.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => return Err(CertError::KeyMismatch),
        Err(other) => return Err(CertError::Unservable(other)),
    }
    Ok(CertEntry {
        names: names.into(),
        not_after,
        key: Arc::new(certified),
    })
}

fn leaf_names(
    leaf: &CertificateDer<'_>,
) -> Result<(Vec<HostPattern>, std::time::SystemTime), CertError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|_| CertError::Parse)?;
    let validity = parsed.validity();
    if validity.not_before > x509_parser::time::ASN1Time::now() {
        return Err(CertError::NotYetValid(validity.not_before.to_string()));
    }
    if validity.time_to_expiration().is_none() {
        return Err(CertError::Expired);
    }
    let san = parsed
        .subject_alternative_name()
        .map_err(|_| CertError::Parse)?;
    let names: Vec<HostPattern> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => HostPattern::parse(dns).ok(),
            GeneralName::IPAddress(bytes) => {
                ip_from_bytes(bytes).map(|ip| HostPattern::Exact(ip.to_canonical().to_string()))
            }
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Err(CertError::NoNames);
    }
    let seconds = u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0);
    Ok((
        names,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
    ))
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A client of our one crypto provider that trusts `roots` and presents no certificate: the
/// ACME directory's, the shared stores' (S3 and Redis).
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The public web's roots (Mozilla's, compiled in).
pub fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Reads a PEM bundle of trust roots.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, CertError> {
    read_roots(path).map(|(_, roots)| roots)
}

/// The certificates of a PEM bundle of trust roots, each one a usable root, at least one.
pub fn load_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    read_roots(path).map(|(certs, _)| certs)
}

fn read_roots(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, rustls::RootCertStore), CertError> {
    let read_err = |source| CertError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(CertError::Empty(path.to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|_| CertError::Parse)?;
    }
    Ok((certs, roots))
}

/// The certificates in service, indexed by the names they cover.
#[derive(Debug, Clone, Default)]
pub struct CertStore {
    entries: Vec<Arc<CertEntry>>,
    by_name: HostMap<usize>,
}

impl CertStore {
    /// Indexes `entries`; on a name claimed twice, the first certificate wins.
    pub fn new(entries: Vec<Arc<CertEntry>>) -> Self {
        let mut store = Self {
            entries,
            ..Self::default()
        };
        for (index, entry) in store.entries.iter().enumerate() {
            for name in entry.names.iter() {
                store.by_name.entry(name.clone()).or_insert(index);
            }
        }
        store
    }

    /// The certificate for a ClientHello's SNI: no SNI gets the first one; an SNI that no
    /// certificate covers gets none, so the handshake fails instead of showing our names to a
    /// scanner.
    pub fn for_sni(&self, sni: Option<&str>) -> Option<&Arc<CertEntry>> {
        let index = match sni {
            None => Some(0),
            Some(name) => self.by_name.get(&name.to_ascii_lowercase()).copied(),
        }?;
        self.entries.get(index)
    }

    /// The certificates, in file order.
    pub fn entries(&self) -> &[Arc<CertEntry>] {
        &self.entries
    }

    /// True when some certificate covers `host` (an exact name or a wildcard pattern); a
    /// lookup in the index, so a config check stays linear in its routes.
    pub fn covers(&self, host: &HostPattern) -> bool {
        match host {
            HostPattern::Exact(name) => self.by_name.get(name).is_some(),
            HostPattern::Wildcard(_) => self.by_name.get_pattern(host).is_some(),
        }
    }
}
