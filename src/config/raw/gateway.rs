//! `[gateway]` and its users, as written.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[gateway]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub client_ca: PathBuf,
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    #[serde(default = "mfa_session")]
    pub mfa_session: String,
    /// Wrong codes in a row before the first lockout.
    #[serde(default = "mfa_max_failures")]
    pub mfa_max_failures: u32,
    /// The first lockout; each further wrong code doubles it.
    #[serde(default = "mfa_lockout")]
    pub mfa_lockout: String,
    /// The longest lockout.
    #[serde(default = "mfa_lockout_max")]
    pub mfa_lockout_max: String,
    /// `CONNECT` tunnels one employee may have open at once, across connections.
    #[serde(default = "max_tunnels_per_user")]
    pub max_tunnels_per_user: u32,
    #[serde(default)]
    pub users: BTreeMap<String, RawUser>,
    /// How long certificates from `portcullis employees add`/`renew` are valid.
    #[serde(default = "certificate_validity")]
    pub certificate_validity: String,
    /// How long a revocation list signed by `portcullis employees` is valid (its nextUpdate).
    #[serde(default = "crl_validity")]
    pub crl_validity: String,
    /// The register of certificates `portcullis employees` issued and revoked; default
    /// `employees-issued.json` beside `client_ca`.
    pub issued: Option<PathBuf>,
    /// The access requests and time-bound grants of `portcullis employees request`; default
    /// `access-requests.json` beside `client_ca`.
    pub requests: Option<PathBuf>,
    /// Where the keys that verify `Portcullis-Assertion` are written, for upstreams that cannot
    /// reach `/.portcullis/jwks.json`.
    pub jwks_file: Option<PathBuf>,
    /// Who may approve an access request (`alice`, `group:security`); never their own.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Second-factor forms posted per client address, on top of the per-user lockout.
    #[serde(default = "mfa_rate")]
    pub mfa_rate: super::RawRate,
    /// Tunnel `CONNECT`s per client address.
    #[serde(default = "connect_rate")]
    pub connect_rate: super::RawRate,
}

fn mfa_rate() -> super::RawRate {
    super::RawRate::new("10/m", 10)
}

fn connect_rate() -> super::RawRate {
    super::RawRate::new("60/m", 30)
}

/// Where the access requests are when `[gateway] requests` does not say: beside `client_ca`.
const REQUESTS_FILE_NAME: &str = "access-requests.json";
/// Where the register of issued certificates is when `[gateway] issued` does not say.
pub const ISSUED_FILE_NAME: &str = "employees-issued.json";

impl RawGateway {
    /// The register of certificates `portcullis employees` issued and revoked.
    pub fn issued_file(&self) -> PathBuf {
        self.issued
            .clone()
            .unwrap_or_else(|| self.client_ca.with_file_name(ISSUED_FILE_NAME))
    }

    /// Where the access requests are.
    pub fn requests_file(&self) -> PathBuf {
        self.requests
            .clone()
            .unwrap_or_else(|| self.client_ca.with_file_name(REQUESTS_FILE_NAME))
    }
}

/// Short-lived, as smallstep recommends: a lost certificate dies by itself within a month.
fn certificate_validity() -> String {
    "30d".to_owned()
}

/// A week of slack for the hourly `portcullis-crl.timer`.
fn crl_validity() -> String {
    "7d".to_owned()
}

/// A few SSH sessions and database clients at once; a leaked certificate cannot hold thousands
/// of upstream sockets.
fn max_tunnels_per_user() -> u32 {
    8
}

fn mfa_session() -> String {
    "8h".to_owned()
}

fn mfa_max_failures() -> u32 {
    5
}

fn mfa_lockout() -> String {
    "1m".to_owned()
}

fn mfa_lockout_max() -> String {
    "1h".to_owned()
}

/// `[gateway.users.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    #[serde(default)]
    pub groups: Vec<String>,
    pub totp_secret_file: Option<PathBuf>,
}
