//! Rate limits per client address, by the generic cell rate algorithm (governor's keyed
//! limiter): one timestamp per client, one more request allowed every `per / count`, at most
//! `burst` at once. Used for a route's `limit`, `[access] connection_rate`, and the gateway's
//! `mfa_rate` and `connect_rate`.
//!
//! Limiters outlive reloads ([`RateLimits`] hands out the same one for the same name and rate),
//! so that a reload does not hand every client a fresh burst. Each instance counts alone, but
//! for routes' limits when the instances share a Redis and a session key ([`shared`]).

mod shared;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;

use crate::config::Rate;
use crate::logging::Throttle;
use crate::metrics::Metrics;
pub use shared::SharedCounts;

/// How often clients whose allowance has refilled are forgotten.
const SWEEP_PERIOD: Duration = Duration::from_secs(10);

/// A client as limits count it: an IPv4 address, or an IPv6 /64, which is what one host or one
/// subscriber usually gets: counting single IPv6 addresses would give one host 2^64 allowances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.to_bits()),
            IpAddr::V6(v6) => Self::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

/// Over a limit: when the client may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("over the rate limit: retry in {0:?}")]
pub struct RetryAfter(pub Duration);

/// Store failures are reported at most once a minute.
static STORE_FAILURES: Throttle = Throttle::new(Duration::from_secs(60));

/// One limit, counted per client.
#[derive(Debug)]
pub struct Limiter {
    name: Arc<str>,
    rate: Rate,
    /// Where the count is kept when the instances share it; here when `None`.
    shared: Option<Arc<SharedCounts>>,
    limiter: DefaultKeyedRateLimiter<ClientKey>,
    clock: DefaultClock,
    breaches: Counter,
}

impl Limiter {
    fn new(name: Arc<str>, rate: Rate, breaches: Counter) -> Self {
        // A period of zero cannot come from a validated rate: a count of at most a million per
        // second or more leaves a microsecond.
        let quota = Quota::with_period(rate.period())
            .unwrap_or_else(|| Quota::per_second(rate.count))
            .allow_burst(rate.burst);
        Self {
            name,
            rate,
            shared: None,
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            breaches,
        }
    }

    /// Counts one request or connection from `client`; over the limit, when it may come again.
    pub fn check(&self, client: IpAddr) -> Result<(), RetryAfter> {
        self.limiter
            .check_key(&ClientKey::from(client))
            .map_err(|not_until| {
                self.breaches.inc();
                RetryAfter(not_until.wait_time_from(self.clock.now()))
            })
    }

    /// Whether the count is kept in the store the instances share: [`Self::check_shared`] then
    /// asks it.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Counts one request from `client` here, then in the shared store. The store can only
    /// tighten the limit: whatever answers on its address cannot let a client past what this
    /// instance alone allows, and while it cannot answer the instance counts alone.
    pub async fn check_shared(&self, client: IpAddr) -> Result<(), RetryAfter> {
        self.check(client)?;
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        match shared
            .take(&self.name, self.rate, ClientKey::from(client))
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => {
                self.breaches.inc();
                Err(RetryAfter(wait))
            }
            Err(error) => {
                STORE_FAILURES.warn(|count| {
                    tracing::warn!(count, %error, "shared store unavailable: rate limits counted by this instance alone");
                });
                Ok(())
            }
        }
    }
}

/// Limiters by name and rate.
type ByName = HashMap<(Arc<str>, Rate), Arc<Limiter>>;

/// Every limiter of the process, by name and rate.
#[derive(Debug)]
pub struct RateLimits {
    limiters: Mutex<ByName>,
    metrics: Arc<Metrics>,
    shared: Option<Arc<SharedCounts>>,
}

impl RateLimits {
    /// An empty set whose breaches `metrics` counts; clients whose allowance has refilled are
    /// swept out every ten seconds while the set lives (when there is a runtime to do it on).
    /// Routes' limits are counted in `shared` when given.
    pub fn new(metrics: Arc<Metrics>, shared: Option<Arc<SharedCounts>>) -> Arc<Self> {
        let limits = Arc::new(Self {
            limiters: Mutex::default(),
            metrics,
            shared,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&limits)));
        }
        limits
    }

    /// The limiter named `name` with `rate`: the same one as before a reload when neither
    /// changed.
    pub fn limiter(&self, name: &str, rate: Rate) -> Arc<Limiter> {
        self.limiter_in(name, rate, None)
    }

    /// A route's limiter: counted across instances when they share a store.
    pub fn route_limiter(&self, name: &str, rate: Rate) -> Arc<Limiter> {
        self.limiter_in(name, rate, self.shared.clone())
    }

    fn limiter_in(
        &self,
        name: &str,
        rate: Rate,
        shared: Option<Arc<SharedCounts>>,
    ) -> Arc<Limiter> {
        let mut limiters = self.lock();
        let key = (Arc::<str>::from(name), rate);
        limiters
            .entry(key)
            .or_insert_with_key(|(name, rate)| {
                let mut limiter =
                    Limiter::new(name.clone(), *rate, self.metrics.rate_limited(name));
                limiter.shared = shared;
                Arc::new(limiter)
            })
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByName> {
        // A map of limiters: nothing a panicking holder could leave half done.
        self.limiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Forgets clients whose allowance has refilled, and limiters no generation uses any more.
async fn sweep(limits: Weak<RateLimits>) {
    loop {
        tokio::time::sleep(SWEEP_PERIOD).await;
        let Some(limits) = limits.upgrade() else {
            return;
        };
        let in_use: Vec<Arc<Limiter>> = {
            let mut limiters = limits.lock();
            limiters.retain(|_, limiter| Arc::strong_count(limiter) > 1);
            limiters.values().cloned().collect()
        };
        for limiter in in_use {
            limiter.limiter.retain_recent();
            limiter.limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn rate(count: u32, burst: u32) -> Rate {
        Rate {
            count: NonZeroU32::new(count).unwrap(),
            per: Duration::from_secs(60),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_while_another_is_served() {
        let limiter = Limiter::new(Arc::from("t"), rate(6, 3), Counter::default());
        let alice: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check(alice), Ok(()));
        }
        let RetryAfter(wait) = limiter.check(alice).unwrap_err();
        assert!(
            wait > Duration::from_secs(8) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert_eq!(limiter.check("192.0.2.2".parse().unwrap()), Ok(()));
        assert_eq!(limiter.breaches.get(), 1);
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let limiter = Limiter::new(Arc::from("t"), rate(1, 1), Counter::default());
        assert!(limiter.check("2001:db8:0:1::1".parse().unwrap()).is_ok());
        assert!(
            limiter
                .check("2001:db8:0:1::ffff".parse().unwrap())
                .is_err()
        );
        assert!(limiter.check("2001:db8:0:2::1".parse().unwrap()).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        assert!(limiter.check("198.51.100.7".parse().unwrap()).is_ok());
        assert!(
            limiter
                .check("::ffff:198.51.100.7".parse().unwrap())
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_reload_keeps_the_count_of_an_unchanged_limit() {
        let limits = RateLimits::new(Arc::new(Metrics::new()), None);
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(limits.limiter("app/", rate(1, 1)).check(client).is_ok());
        assert!(limits.limiter("app/", rate(1, 1)).check(client).is_err());
        // A changed rate is a new limit.
        assert!(limits.limiter("app/", rate(2, 2)).check(client).is_ok());
    }
}
