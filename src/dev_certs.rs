//! A local certificate authority and a `localhost` certificate for development, so that
//! `cargo run` gives a working https://localhost with nothing to set up.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, date_time_ymd,
};

use crate::config::raw::RawConfig;

/// File names inside the dev-certificate directory.
pub const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
/// The leaf certificate.
pub const LEAF_CERT: &str = "localhost.crt";
/// The leaf key.
pub const LEAF_KEY: &str = "localhost.key";
/// The directory name that marks certificate paths as generated development ones.
pub const DEV_DIR_NAME: &str = "certs-dev";

/// Why dev certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// Key or certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Creates the CA and leaf in `dir` unless all files exist; returns true when it wrote them.
pub fn ensure(dir: &Path) -> Result<bool, DevCertError> {
    let files = [CA_CERT, CA_KEY, LEAF_CERT, LEAF_KEY];
    if files.iter().all(|f| dir.join(f).is_file()) {
        return Ok(false);
    }
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| DevCertError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let year = current_year();

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name("Portcullis development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = date_time_ymd(year - 1, 1, 1);
    ca_params.not_after = date_time_ymd(year + 10, 1, 1);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut leaf_params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    leaf_params.distinguished_name = name("localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.not_before = date_time_ymd(year - 1, 1, 1);
    leaf_params.not_after = date_time_ymd(year + 2, 1, 1);
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

    write(&dir.join(CA_CERT), ca.pem().as_bytes(), 0o644).map_err(write_err(&dir.join(CA_CERT)))?;
    write(
        &dir.join(CA_KEY),
        ca.key().serialize_pem().as_bytes(),
        0o600,
    )
    .map_err(write_err(&dir.join(CA_KEY)))?;
    write(&dir.join(LEAF_CERT), leaf.pem().as_bytes(), 0o644)
        .map_err(write_err(&dir.join(LEAF_CERT)))?;
    write(
        &dir.join(LEAF_KEY),
        leaf_key.serialize_pem().as_bytes(),
        0o600,
    )
    .map_err(write_err(&dir.join(LEAF_KEY)))?;
    Ok(true)
}

/// The `certs-dev` directory a config takes certificates from, when files are missing there.
pub fn missing_for_config(raw: &RawConfig) -> Option<&Path> {
    raw.tls.certificates.iter().find_map(|files| {
        let dir = files.cert.parent()?;
        let is_dev =
            dir.file_name().is_some_and(|n| n == DEV_DIR_NAME) && files.key.parent() == Some(dir);
        (is_dev && (!files.cert.exists() || !files.key.exists())).then_some(dir)
    })
}

/// For a config whose certificates live in a `certs-dev` directory that is missing files,
/// generates them there. Returns the directory when it did.
pub fn ensure_for_config(raw: &RawConfig) -> Result<Option<PathBuf>, DevCertError> {
    match missing_for_config(raw) {
        Some(dir) if ensure(dir)? => Ok(Some(dir.to_owned())),
        _ => Ok(None),
    }
}

/// `path` as the operator would type it from here: relative to the working directory when
/// inside it.
pub fn from_here(path: &Path) -> &Path {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok())
        .unwrap_or(path)
}

/// How to trust the development CA in `dir`, for `https://localhost` on `port` when known.
pub fn trust_hint(dir: &Path, port: Option<&str>) -> String {
    let ca = from_here(dir).join(CA_CERT);
    let url = match port {
        Some(port) if !matches!(port, "443" | "0") => format!("https://localhost:{port}/"),
        _ => "https://localhost/".to_owned(),
    };
    format!(
        "trust the development CA to use {url} without warnings:\n  curl --cacert {ca} {url}\n  browsers: import {ca} as an authority (Chrome/Firefox: Settings > Certificates > Authorities)",
        ca = ca.display()
    )
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn current_year() -> i32 {
    time::OffsetDateTime::now_utc().year()
}

#[cfg(unix)]
fn write(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)
}
