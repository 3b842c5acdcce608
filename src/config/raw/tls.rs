//! `[tls]`, its ACME account and certificate files, and `[hsts]`, as written.

use std::path::PathBuf;

use serde::Deserialize;

/// `[tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    pub acme: Option<RawAcme>,
}

/// `[tls.acme]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub domains: Vec<String>,
    #[serde(default)]
    pub contact: Vec<String>,
    #[serde(default = "staging")]
    pub directory: String,
    #[serde(default = "acme_dir")]
    pub cache_dir: PathBuf,
    pub directory_ca: Option<PathBuf>,
    pub store: Option<RawAcmeStore>,
}

/// `[tls.acme.store]`: durations stay strings so that a bad one is reported with its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcmeStore {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    #[serde(default = "store_lease")]
    pub lease: String,
    #[serde(default = "store_poll")]
    pub poll: String,
    #[serde(default = "store_renew_before")]
    pub renew_before: String,
}

fn store_lease() -> String {
    "60s".to_owned()
}

fn store_poll() -> String {
    "10s".to_owned()
}

fn store_renew_before() -> String {
    "30d".to_owned()
}

fn staging() -> String {
    "letsencrypt-staging".to_owned()
}

fn acme_dir() -> PathBuf {
    PathBuf::from("acme")
}

/// `[[tls.certificates]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[hsts]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHsts {
    pub max_age: u64,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Default for RawHsts {
    fn default() -> Self {
        Self {
            max_age: 63_072_000,
            include_subdomains: true,
            preload: false,
        }
    }
}
