//! A route's limit counted across instances, in the Redis they share: the same GCRA, run by one
//! script on the server by the server's clock, so that two instances cannot both let the last
//! request of a burst through. A client is named by a keyed digest (the shared session key), so
//! the store holds no address; its entry expires once its allowance has refilled.
//!
//! While the store cannot answer, the instance counts alone (as without a store) rather than
//! refusing every request on a limited route: availability of the app over exactness of the
//! count, as Envoy's global rate limit does by default.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use redis::Script;

use super::ClientKey;
use crate::config::Rate;
use crate::redis_link::{RedisLink, StoreError};

/// One request from KEYS[1]. ARGV: microseconds per request, burst. Returns {allowed, µs to
/// wait}: the theoretical arrival time moves one period on for each request let through, and
/// a request is let through while it is at most a burst's worth of periods ahead of now.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + period
local ahead = next_tat - now
if ahead > period * burst then
  return {0, ahead - period * burst}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil(ahead / 1000) + 1)
return {1, 0}
";

/// The store and what names clients in it.
#[derive(Debug)]
pub struct SharedCounts {
    link: Arc<RedisLink>,
    key: hmac::Key,
    take: Script,
}

impl SharedCounts {
    /// Counts in `link`'s store when there is one and a shared key to name clients by.
    pub fn of(link: Option<Arc<RedisLink>>, session_key: Option<&[u8]>) -> Option<Arc<Self>> {
        Some(Arc::new(Self::new(link?, session_key?)))
    }

    /// Counts in `link`'s store, naming clients by an HMAC under `session_key`.
    fn new(link: Arc<RedisLink>, session_key: &[u8]) -> Self {
        Self {
            link,
            key: hmac::Key::new(hmac::HMAC_SHA256, session_key),
            take: Script::new(TAKE),
        }
    }

    /// Takes one from `client`'s allowance under `limit`: `Ok(None)` let through,
    /// `Ok(Some(wait))` refused.
    pub(super) async fn take(
        &self,
        limit: &str,
        rate: Rate,
        client: ClientKey,
    ) -> Result<Option<Duration>, StoreError> {
        let micros = u64::try_from(rate.period().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.take.key(self.name(limit, rate, client));
        invocation.arg(micros).arg(rate.burst.get());
        let (allowed, wait): (u8, u64) = self
            .link
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        match allowed {
            1 if wait == 0 => Ok(None),
            0 => Ok(Some(Duration::from_micros(wait.max(1)))),
            _ => Err(StoreError::Lied("a rate limit answer out of range")),
        }
    }

    /// `portcullis:rate:` and a digest of the limit and the client under the session key.
    fn name(&self, limit: &str, rate: Rate, client: ClientKey) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(b"portcullis rate limit\0");
        context.update(limit.as_bytes());
        context.update(format!("\0{rate}\0").as_bytes());
        match client {
            ClientKey::V4(v4) => context.update(&v4.to_be_bytes()),
            ClientKey::V6(v6) => context.update(&v6.to_be_bytes()),
        }
        let tag = context.sign();
        format!("portcullis:rate:{}", hex::encode(&tag.as_ref()[..16]))
    }
}
