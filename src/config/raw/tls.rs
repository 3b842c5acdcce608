//! `[tls]`, its ACME account, challenge and certificate files, and `[hsts]`, as written.

use std::path::PathBuf;

use serde::Deserialize;

/// `[tls.acme] challenge`: how the CA is shown that we hold a name (RFC 8555 8).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Challenge {
    /// A certificate shown on the HTTPS listener to clients offering `acme-tls/1` (RFC 8737).
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// A token served on the plain listener at `/.well-known/acme-challenge/` (RFC 8555 8.3).
    #[serde(rename = "http-01")]
    Http01,
    /// A TXT record at `_acme-challenge.NAME` (RFC 8555 8.4); the only one for wildcards.
    #[serde(rename = "dns-01")]
    Dns01,
}

impl Challenge {
    /// The name ACME gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
        }
    }
}

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
    #[serde(default)]
    pub challenge: Challenge,
    pub profile: Option<String>,
    #[serde(default = "renew_before")]
    pub renew_before: String,
    pub store: Option<RawAcmeStore>,
    pub dns: Option<RawAcmeDns>,
}

/// `[tls.acme.dns]`: where DNS-01 records are written. Each provider's keys are optional here
/// and required by validation, so that every missing one is reported under its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcmeDns {
    #[serde(default)]
    pub provider: DnsProviderKind,
    pub zone: String,
    /// The zone's authoritative servers, each asked for the record before the CA is told.
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default = "propagation_timeout")]
    pub propagation_timeout: String,
    /// `rfc2136`: the primary taking updates, and the key signing them.
    pub server: Option<String>,
    pub tsig_key_file: Option<PathBuf>,
    /// `ovh` (and `route53`, for an AWS-compatible service): the API.
    pub endpoint: Option<String>,
    /// `ovh`: the application's credentials.
    pub application_key: Option<String>,
    pub application_secret_file: Option<PathBuf>,
    pub consumer_key_file: Option<PathBuf>,
    /// A private CA for the API's HTTPS (a test fake); the system's roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// `route53`: the hosted zone, and the region (the environment's otherwise).
    pub hosted_zone_id: Option<String>,
    pub region: Option<String>,
}

/// `[tls.acme.dns] provider`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsProviderKind {
    /// RFC 2136 dynamic updates signed with TSIG: BIND, Knot, PowerDNS, most DNS front-ends.
    #[default]
    Rfc2136,
    /// OVH's signed REST API (cargo feature `dns-ovh`).
    Ovh,
    /// AWS Route53 through the AWS SDK (cargo feature `dns-route53`).
    Route53,
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
    /// Moved to `[tls.acme]`; kept here to say so under its old key.
    pub renew_before: Option<String>,
}

fn store_lease() -> String {
    "60s".to_owned()
}

fn store_poll() -> String {
    "10s".to_owned()
}

fn renew_before() -> String {
    "30d".to_owned()
}

fn propagation_timeout() -> String {
    "120s".to_owned()
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
