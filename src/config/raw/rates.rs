//! A rate limit as written: `{ rate = "20/s", burst = 40 }`.

use serde::Deserialize;

/// `limit`, `connection_rate`, `mfa_rate`, `connect_rate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    /// `N/s`, `N/m` or `N/h`.
    pub rate: String,
    /// How many may come at once; the rate's count without it.
    pub burst: Option<u32>,
}

impl RawRate {
    /// A default: `rate` with `burst`.
    pub fn new(rate: &str, burst: u32) -> Self {
        Self {
            rate: rate.to_owned(),
            burst: Some(burst),
        }
    }
}
