//! How an upstream is kept available, validated: balancing, retries, active health checks and
//! passive outlier ejection. Defaults follow the field: p2c over the fewest requests in flight,
//! one retry within a 20% budget (Envoy, linkerd), HAProxy's check timing, Envoy's ejection.

use std::ops::RangeInclusive;
use std::time::Duration;

use http::HeaderValue;
use http::uri::PathAndQuery;

use super::ProblemKind;
use super::problems::{Key, Problems};
use super::raw::{RawBalance, RawCount5xx, RawHealthCheck, RawOutlier, RawUpstream};

/// The most retries one request may make: each waits for an upstream's answer.
pub const MAX_RETRIES: u32 = 5;

/// How an upstream's address is picked for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// The less busy of two addresses picked at random: a slow address, with more requests in
    /// flight, gets fewer new ones.
    P2c,
    /// Each address in turn.
    RoundRobin,
}

/// `[upstreams.NAME]`'s availability settings.
#[derive(Debug, Clone)]
pub struct Resilience {
    /// How an address is picked.
    pub balance: Balance,
    /// Extra attempts for a request that may be retried.
    pub retries: u32,
    /// Retries allowed as a share of requests (0 to 1), beyond a floor.
    pub retry_budget: f32,
    /// Active checks, when configured.
    pub health: Option<HealthCheck>,
    /// Passive ejection, unless `consecutive = 0`.
    pub outlier: Option<Outlier>,
}

/// What a health check asks of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 `GET` of this path, answered with a status in `status`.
    Http {
        /// Origin-form target.
        path: PathAndQuery,
        /// The statuses that pass.
        status: RangeInclusive<u16>,
        /// The `Host` sent; the address when `None`.
        host: Option<HeaderValue>,
    },
}

/// `[upstreams.NAME.health]`, validated.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// What is asked.
    pub probe: ProbeKind,
    /// Between two checks of one address.
    pub interval: Duration,
    /// For one check, connect included.
    pub timeout: Duration,
    /// Failures in a row that mark an address down.
    pub unhealthy: u32,
    /// Successes in a row that bring it back.
    pub healthy: u32,
}

/// Which answers count as an address's failures, beside connect failures, resets and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count5xx {
    /// 502, 503 and 504.
    Gateway,
    /// Every 5xx.
    All,
    /// No answer counts.
    None,
}

impl Count5xx {
    /// Whether an answer with `status` counts as a failure.
    pub fn counts(self, status: u16) -> bool {
        match self {
            Self::Gateway => matches!(status, 502..=504),
            Self::All => (500..600).contains(&status),
            Self::None => false,
        }
    }
}

/// `[upstreams.NAME.outlier]`, validated.
#[derive(Debug, Clone)]
pub struct Outlier {
    /// Failures in a row that eject an address (at least 1).
    pub consecutive: u32,
    /// Which answers count.
    pub count_5xx: Count5xx,
    /// The first ejection's length, doubled by each further one...
    pub base_ejection: Duration,
    /// ... up to this.
    pub max_ejection: Duration,
    /// The largest share of addresses out at once, in percent (1 to 100).
    pub max_ejected_percent: u32,
}

/// Validates an upstream's availability settings; `key` is `upstreams.NAME`.
pub(super) fn validate(raw: &RawUpstream, key: &Key, problems: &mut Problems) -> Resilience {
    if raw.retries > MAX_RETRIES {
        problems.push(
            key.field("retries"),
            ProblemKind::TooManyRetries(MAX_RETRIES),
        );
    }
    if !(0.0..=1.0).contains(&raw.retry_budget) {
        problems.push(key.field("retry_budget"), ProblemKind::Share);
    }
    Resilience {
        balance: match raw.balance {
            RawBalance::P2c => Balance::P2c,
            RawBalance::RoundRobin => Balance::RoundRobin,
        },
        retries: raw.retries.min(MAX_RETRIES),
        // Within 0..=1, checked above: the narrowing loses nothing a budget needs.
        #[allow(clippy::cast_possible_truncation)]
        retry_budget: raw.retry_budget.clamp(0.0, 1.0) as f32,
        health: raw
            .health
            .as_ref()
            .and_then(|h| health(h, &key.field("health"), problems)),
        outlier: outlier(&raw.outlier, &key.field("outlier"), problems),
    }
}

fn health(raw: &RawHealthCheck, key: &Key, problems: &mut Problems) -> Option<HealthCheck> {
    let interval = duration(&raw.interval, key.field("interval"), problems);
    let timeout = duration(&raw.timeout, key.field("timeout"), problems);
    if let (Some(interval), Some(timeout)) = (interval, timeout)
        && timeout > interval
    {
        problems.push(key.field("timeout"), ProblemKind::TimeoutOverInterval);
    }
    for (name, value) in [("unhealthy", raw.unhealthy), ("healthy", raw.healthy)] {
        if value == 0 {
            problems.push(key.field(name), ProblemKind::Zero);
        }
    }
    let probe = match (&raw.path, raw.tcp) {
        (Some(path), false) => {
            let path = path
                .parse::<PathAndQuery>()
                .ok()
                .filter(|p| p.as_str().starts_with('/'));
            if path.is_none() {
                let shown = raw.path.clone().unwrap_or_default();
                problems.push(key.field("path"), ProblemKind::HealthPath(shown));
            }
            let status = status_range(&raw.status);
            if status.is_none() {
                problems.push(
                    key.field("status"),
                    ProblemKind::StatusRange(raw.status.clone()),
                );
            }
            let host = match &raw.host {
                Some(host) if crate::host::is_dns_name(&host.to_ascii_lowercase()) => {
                    HeaderValue::from_str(host).ok()
                }
                Some(host) => {
                    problems.push(key.field("host"), ProblemKind::TunnelTarget(host.clone()));
                    None
                }
                None => None,
            };
            Some(ProbeKind::Http {
                path: path?,
                status: status?,
                host,
            })
        }
        (None, true) => Some(ProbeKind::Tcp),
        _ => {
            problems.push(key.clone(), ProblemKind::HealthProbe);
            None
        }
    };
    Some(HealthCheck {
        probe: probe?,
        interval: interval?,
        timeout: timeout?,
        unhealthy: raw.unhealthy,
        healthy: raw.healthy,
    })
}

fn outlier(raw: &RawOutlier, key: &Key, problems: &mut Problems) -> Option<Outlier> {
    let base = duration(&raw.base_ejection, key.field("base_ejection"), problems);
    let max = duration(&raw.max_ejection, key.field("max_ejection"), problems);
    if let (Some(base), Some(max)) = (base, max)
        && base > max
    {
        problems.push(key.field("max_ejection"), ProblemKind::EjectionOrder);
    }
    if !(1..=100).contains(&raw.max_ejected_percent) {
        problems.push(key.field("max_ejected_percent"), ProblemKind::Percent);
    }
    (raw.consecutive > 0).then_some(())?;
    Some(Outlier {
        consecutive: raw.consecutive,
        count_5xx: match raw.count_5xx {
            RawCount5xx::Gateway => Count5xx::Gateway,
            RawCount5xx::All => Count5xx::All,
            RawCount5xx::None => Count5xx::None,
        },
        base_ejection: base?,
        max_ejection: max?,
        max_ejected_percent: raw.max_ejected_percent.clamp(1, 100),
    })
}

/// A positive humantime duration; `None`, and a problem under `key`, otherwise.
fn duration(raw: &str, key: Key, problems: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(raw) {
        Ok(d) if d.is_zero() => {
            problems.push(key, ProblemKind::Zero);
            None
        }
        Ok(d) => Some(d),
        Err(_) => {
            problems.push(key, ProblemKind::Duration(raw.to_owned()));
            None
        }
    }
}

/// `"200-399"` or `"204"`, within 100..=599.
fn status_range(raw: &str) -> Option<RangeInclusive<u16>> {
    let (low, high) = raw.split_once('-').unwrap_or((raw, raw));
    let low = low.trim().parse::<u16>().ok()?;
    let high = high.trim().parse::<u16>().ok()?;
    (100 <= low && low <= high && high <= 599).then_some(low..=high)
}

#[cfg(test)]
mod tests {
    use super::status_range;

    #[test]
    fn status_ranges_are_read_and_bounded() {
        assert_eq!(status_range("200-399"), Some(200..=399));
        assert_eq!(status_range("204"), Some(204..=204));
        for bad in ["", "399-200", "200-600", "99", "2xx", "200-"] {
            assert_eq!(status_range(bad), None, "{bad}");
        }
    }
}
