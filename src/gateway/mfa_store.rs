//! Second-factor state shared by every instance, in Redis: each user's last accepted time step,
//! wrong codes in a row and lockout, and the tunnel sessions a passed code opens. One script
//! judges an attempt atomically on the server, by the server's clock, so two instances cannot
//! both accept one code, and wrong codes sent to several instances add up.
//!
//! Users and certificates are keyed by a digest: the store holds no names. The connection is
//! the shared one (`redis_link.rs`); while the store cannot answer, codes are refused (`503`):
//! accepting them would forget the replay rule.
//!
//! The store is believed only about what it is for, memory: whatever answers on its address
//! cannot pass a code the proxy's own check failed, and cannot open a tunnel session (their
//! values are signed by the caller, and checked when read back).

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use crate::config::LockoutPolicy;
use crate::redis_link::RedisLink;
pub use crate::redis_link::StoreError;
/// How long a quiet user's state is kept: long past any code's validity.
const STATE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Judges one attempt. KEYS[1]: the user's state. ARGV: the code's time step (0: wrong code),
/// wrong codes before a lockout, first and longest lockout (ms), state lifetime (s). Returns
/// {outcome, ms, wrong codes in a row}: 0 passed, 1 failed, 2 failed and locked for ms,
/// 3 refused unread, locked for ms more.
const ATTEMPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 'last_step', 'in_a_row', 'lockouts', 'until')
local last_step = tonumber(s[1]) or 0
local in_a_row = tonumber(s[2]) or 0
local lockouts = tonumber(s[3]) or 0
local locked_until = tonumber(s[4]) or 0
if locked_until > now then
  return {3, locked_until - now, in_a_row}
end
local step = tonumber(ARGV[1])
local ttl = tonumber(ARGV[5])
if step > last_step then
  redis.call('HSET', KEYS[1], 'last_step', step, 'in_a_row', 0, 'lockouts', 0, 'until', 0)
  redis.call('EXPIRE', KEYS[1], ttl)
  return {0, 0, 0}
end
in_a_row = in_a_row + 1
local result = {1, 0, in_a_row}
if in_a_row >= tonumber(ARGV[2]) then
  local lockout = math.min(tonumber(ARGV[3]) * 2 ^ math.min(lockouts, 31), tonumber(ARGV[4]))
  lockouts = lockouts + 1
  locked_until = now + lockout
  result = {2, lockout, in_a_row}
end
redis.call('HSET', KEYS[1], 'in_a_row', in_a_row, 'lockouts', lockouts, 'until', locked_until)
redis.call('EXPIRE', KEYS[1], ttl)
return result
";

/// What became of one submitted code.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Attempt {
    /// Right and fresh.
    Passed,
    /// Wrong, expired or replayed; with the count and duration when it started a lockout.
    Failed { lockout: Option<(u32, Duration)> },
    /// Not even looked at: the user is locked out for this long.
    Locked(Duration),
    /// Not judged: the shared store cannot be reached.
    Unavailable,
}

/// See the module docs.
#[derive(Debug)]
pub struct MfaStore {
    link: Arc<RedisLink>,
    attempt: Script,
}

impl MfaStore {
    /// The second-factor state on `link`'s store. Nothing is connected until the first use.
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self {
            link,
            attempt: Script::new(ATTEMPT),
        }
    }

    /// Judges a code that checked out at time step `step` (`None`: a wrong code) for `user`.
    pub(super) async fn attempt(
        &self,
        user: &str,
        step: Option<u64>,
        policy: LockoutPolicy,
    ) -> Result<Attempt, StoreError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ttl = STATE_TTL
            .max(policy.max + Duration::from_secs(60))
            .as_secs();
        let mut invocation = self.attempt.key(key("user", user.as_bytes()));
        invocation
            .arg(step.unwrap_or(0))
            .arg(policy.max_failures)
            .arg(millis(policy.first))
            .arg(millis(policy.max))
            .arg(ttl);
        let (outcome, ms, in_a_row): (u8, u64, u32) = self
            .link
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        let duration = Duration::from_millis(ms);
        Ok(match outcome {
            0 if step.is_none() => return Err(StoreError::Lied("passed a wrong code")),
            0 => Attempt::Passed,
            2 => Attempt::Failed {
                lockout: Some((in_a_row, duration)),
            },
            3 => Attempt::Locked(duration),
            _ => Attempt::Failed { lockout: None },
        })
    }

    /// Keeps `token` as the tunnel session of the certificate `fingerprint` on `tunnel` for
    /// `session`.
    pub(super) async fn open_tunnel_session(
        &self,
        fingerprint: &[u8; 32],
        tunnel: &str,
        token: String,
        session: Duration,
    ) -> Result<(), StoreError> {
        let key = tunnel_key(fingerprint, tunnel);
        let ms = u64::try_from(session.as_millis()).unwrap_or(u64::MAX);
        self.link
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("PX")
                    .arg(ms)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    /// The token kept for the certificate `fingerprint` on `tunnel`, if any: the caller checks
    /// it.
    pub(super) async fn tunnel_session(
        &self,
        fingerprint: &[u8; 32],
        tunnel: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = tunnel_key(fingerprint, tunnel);
        self.link
            .run(|mut c| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
            })
            .await
    }
}

fn key(kind: &str, id: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id);
    format!(
        "portcullis:mfa:{kind}:{}",
        hex::encode(&digest.as_ref()[..16])
    )
}

fn tunnel_key(fingerprint: &[u8; 32], tunnel: &str) -> String {
    let mut id = fingerprint.to_vec();
    id.extend_from_slice(tunnel.as_bytes());
    key("tunnel", &id)
}
