//! `[upstreams.NAME]` and how it is kept available: balancing, retries, health checks and
//! passive outlier ejection.

use serde::Deserialize;

/// `[upstreams.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub environment: String,
    pub addrs: Vec<String>,
    #[serde(default)]
    pub balance: RawBalance,
    /// Extra attempts for a request that may be retried.
    #[serde(default = "retries")]
    pub retries: u32,
    /// Retries allowed as a share of requests, over ten seconds, beyond a floor of 10 a second.
    #[serde(default = "retry_budget")]
    pub retry_budget: f64,
    /// Active checks; none unless configured.
    pub health: Option<RawHealthCheck>,
    #[serde(default)]
    pub outlier: RawOutlier,
}

/// `[upstreams.NAME] balance`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawBalance {
    /// Power of two choices over the fewest requests in flight.
    #[default]
    P2c,
    RoundRobin,
}

/// `[upstreams.NAME.health]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// An HTTP `GET` of this path...
    pub path: Option<String>,
    /// ... or only a TCP connect.
    #[serde(default)]
    pub tcp: bool,
    #[serde(default = "interval")]
    pub interval: String,
    #[serde(default = "timeout")]
    pub timeout: String,
    /// Failures in a row before an address is marked down.
    #[serde(default = "threshold")]
    pub unhealthy: u32,
    /// Successes in a row before it is back.
    #[serde(default = "threshold")]
    pub healthy: u32,
    /// The statuses that pass, `"200-399"` or one status.
    #[serde(default = "status")]
    pub status: String,
    /// The `Host` the probe sends; the address without it.
    pub host: Option<String>,
}

/// `[upstreams.NAME.outlier]`: addresses that fail requests are left out for a while.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    /// Failures in a row that eject an address; 0 turns ejection off.
    #[serde(default = "consecutive")]
    pub consecutive: u32,
    /// Which 5xx answers count as failures beside connect failures, resets and timeouts.
    #[serde(default)]
    pub count_5xx: RawCount5xx,
    /// The first ejection's length; each further one doubles it...
    #[serde(default = "base_ejection")]
    pub base_ejection: String,
    /// ... up to this.
    #[serde(default = "max_ejection")]
    pub max_ejection: String,
    /// The largest share of an upstream's addresses out at once; the last one never is.
    #[serde(default = "max_ejected_percent")]
    pub max_ejected_percent: u32,
}

impl Default for RawOutlier {
    fn default() -> Self {
        Self {
            consecutive: consecutive(),
            count_5xx: RawCount5xx::default(),
            base_ejection: base_ejection(),
            max_ejection: max_ejection(),
            max_ejected_percent: max_ejected_percent(),
        }
    }
}

/// `[upstreams.NAME.outlier] count_5xx`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawCount5xx {
    /// 502, 503 and 504: the upstream's own gateway failures.
    #[default]
    Gateway,
    /// Every 5xx.
    All,
    /// None: only connect failures, resets and timeouts count.
    None,
}

fn retries() -> u32 {
    1
}
fn retry_budget() -> f64 {
    0.2
}
fn interval() -> String {
    "2s".into()
}
fn timeout() -> String {
    "1s".into()
}
fn threshold() -> u32 {
    2
}
fn status() -> String {
    "200-399".into()
}
fn consecutive() -> u32 {
    5
}
fn base_ejection() -> String {
    "30s".into()
}
fn max_ejection() -> String {
    "5m".into()
}
fn max_ejected_percent() -> u32 {
    50
}
