//! The second factor: a current RFC 6238 code, entered once per session in a small built-in
//! form that posts to the proxy's own `/.portcullis/mfa`, then a short-lived signed cookie.
//!
//! - A code is accepted once (RFC 6238 5.2): each user's last accepted time step is remembered
//!   and nothing at or before it passes again.
//! - Wrong codes are counted per user across connections (a certificate names one user, so this
//!   also bounds every certificate): past `max_failures` in a row the user is locked out, for a
//!   time that doubles with each further wrong code (RFC 6238 5.2 asks for such throttling).
//! - All this is kept in this process, or for every instance in Redis (`mfa_store.rs`); the
//!   cookie key is made at start, or read from `[shared] session_key_file`.
//! - Tunnels have no browser: the code comes in a `CONNECT` header, and the session is kept
//!   here, per certificate and tunnel, for the same `mfa_session`.
//! - The cookie is `__Host-` prefixed (host-only, `Secure`, `Path=/`), one per route, and its
//!   signature binds certificate, user, host, route and expiry: it is worth nothing anywhere
//!   else, and the proxy strips it from every forwarded request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Limited};

use self::tunnel_sessions::TunnelSessions;
pub(super) use super::mfa_store::Attempt;
use super::mfa_store::{MfaStore, StoreError};
use super::{ClientIdentity, FormBody};
use crate::config::LockoutPolicy;
use crate::cookies::{OWN_COOKIE_PREFIX, cookie_pairs};
use crate::logging::Throttle;
use crate::path::{escaped_bytes, normalize_path};
use crate::routing::Route;

mod page;
mod tunnel_sessions;

pub(super) use page::{form, locked, passed};

/// Where the form posts: in the reserved namespace, so no route can send it upstream.
pub const MFA_PATH: &str = "/.portcullis/mfa";
/// A form body is a code, a route name and a path; anything longer is not one.
const MAX_FORM_BYTES: usize = 4096;
const FORM_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Session signing key, replay memory and lockouts, kept across reloads: in this process, or
/// in the shared store when `[shared] redis` names one.
#[derive(Debug)]
pub struct MfaState {
    key: hmac::Key,
    store: Option<MfaStore>,
    users: Mutex<HashMap<String, UserState>>,
    tunnel_sessions: TunnelSessions,
}

/// Store failures are reported at most once a minute (each refused code is audited anyway).
static STORE_FAILURES: Throttle = Throttle::new(Duration::from_secs(60));

/// What the gateway remembers of one user's codes.
#[derive(Debug, Default)]
struct UserState {
    /// The last accepted time step: no code at or before it passes again.
    last_step: u64,
    failures: Failures,
}

/// Wrong codes in a row, and the lockout they earned.
#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    in_a_row: u32,
    lockouts: u32,
    until: Option<Instant>,
}

impl Failures {
    /// How long the user is still locked out at `now`.
    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Counts a wrong code; returns the count and the lockout when this one starts one.
    fn fail(&mut self, now: Instant, policy: LockoutPolicy) -> Option<(u32, Duration)> {
        self.in_a_row = self.in_a_row.saturating_add(1);
        if self.in_a_row < policy.max_failures {
            return None;
        }
        let lockout = policy.lockout(self.lockouts);
        self.lockouts = self.lockouts.saturating_add(1);
        self.until = Some(now + lockout);
        Some((self.in_a_row, lockout))
    }
}

/// The fields the form posts.
#[derive(Debug, Default)]
pub(super) struct Form {
    pub code: String,
    pub route: String,
    pub back: String,
}

impl MfaState {
    /// Sessions signed with `session_key` (`[shared] session_key_file`), else with a fresh key
    /// that does not outlive the process; codes judged in `store` if there is one.
    pub fn new(
        session_key: Option<&[u8]>,
        store: Option<MfaStore>,
    ) -> Result<Self, aws_lc_rs::error::Unspecified> {
        let key = match session_key {
            Some(bytes) => hmac::Key::new(hmac::HMAC_SHA256, bytes),
            None => hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())?,
        };
        Ok(Self {
            tunnel_sessions: TunnelSessions::new(&key),
            key,
            store,
            users: Mutex::new(HashMap::new()),
        })
    }

    /// Judges a submitted code for `user`.
    pub(super) async fn attempt(
        &self,
        user: &str,
        totp: &totp_rs::Totp,
        code: &str,
        policy: LockoutPolicy,
    ) -> Attempt {
        let Some(store) = &self.store else {
            return self.attempt_at(
                user,
                |unix| totp.check(code.trim(), unix),
                policy,
                Instant::now(),
            );
        };
        let step = totp.check(code.trim(), unix_now());
        store
            .attempt(user, step, policy)
            .await
            .unwrap_or_else(|error| {
                report(&error);
                Attempt::Unavailable
            })
    }

    /// [`attempt`](Self::attempt) with the code check and the clock passed in, for tests.
    fn attempt_at(
        &self,
        user: &str,
        check: impl FnOnce(u64) -> Option<u64>,
        policy: LockoutPolicy,
        now: Instant,
    ) -> Attempt {
        let Ok(mut users) = self.users.lock() else {
            return Attempt::Locked(policy.max);
        };
        let state = users.entry(user.to_owned()).or_default();
        if let Some(left) = state.failures.remaining(now) {
            return Attempt::Locked(left);
        }
        match check(unix_now()) {
            Some(step) if step > state.last_step => {
                state.last_step = step;
                state.failures = Failures::default();
                Attempt::Passed
            }
            _ => Attempt::Failed {
                lockout: state.failures.fail(now, policy),
            },
        }
    }

    fn signature(
        &self,
        client: &ClientIdentity,
        host: &str,
        route: &Route,
        expiry: u64,
    ) -> hmac::Tag {
        hmac::sign(&self.key, &signed_message(client, host, route, expiry))
    }

    /// The `Set-Cookie` value of a new session on `route`.
    pub(super) fn session_cookie(
        &self,
        client: &ClientIdentity,
        host: &str,
        route: &Route,
        session: Duration,
    ) -> Option<HeaderValue> {
        let expiry = unix_now() + session.as_secs();
        let tag = self.signature(client, host, route, expiry);
        let cookie = format!(
            "{}={expiry}.{}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            cookie_name(route),
            hex::encode(tag.as_ref()),
            session.as_secs()
        );
        HeaderValue::from_str(&cookie).ok()
    }

    /// True when `headers` carry an unexpired session of this certificate for this host and
    /// route.
    pub(super) fn has_session(
        &self,
        headers: &HeaderMap,
        client: &ClientIdentity,
        host: &str,
        route: &Route,
    ) -> bool {
        let name = cookie_name(route);
        let now = unix_now();
        cookie_pairs(headers)
            .filter_map(|pair| pair.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
            .filter_map(|value| std::str::from_utf8(value).ok())
            .any(|value| {
                let Some((expiry, tag)) = value.split_once('.') else {
                    return false;
                };
                let (Ok(expiry), Some(tag)) = (expiry.parse::<u64>(), hex::decode(tag).ok()) else {
                    return false;
                };
                expiry > now
                    && hmac::verify(
                        &self.key,
                        &signed_message(client, host, route, expiry),
                        &tag,
                    )
                    .is_ok()
            })
    }
}

fn report(error: &StoreError) {
    STORE_FAILURES.warn(|count| {
        tracing::warn!(count, %error, "MFA store unavailable: second-factor codes refused");
    });
}

/// One cookie per route, so sessions on two MFA routes of a host do not overwrite each other.
fn cookie_name(route: &Route) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, route.label.name.as_bytes());
    format!(
        "{OWN_COOKIE_PREFIX}-mfa-{}",
        hex::encode(&digest.as_ref()[..6])
    )
}

/// A session is this certificate, this user, on this host and route, until this time. Each
/// variable field is length-prefixed, so no two sessions sign the same bytes.
fn signed_message(client: &ClientIdentity, host: &str, route: &Route, expiry: u64) -> Vec<u8> {
    let mut message = client.fingerprint.to_vec();
    message.extend_from_slice(&expiry.to_be_bytes());
    for field in [client.user.as_str(), host, &route.label.name] {
        message.extend_from_slice(&(field.len() as u64).to_be_bytes());
        message.extend_from_slice(field.as_bytes());
    }
    message
}

/// The posted form, read within a size and time limit; missing fields are empty.
pub(super) async fn read_form<B: FormBody>(request: &mut Request<B>) -> Form {
    let body = tokio::time::timeout(
        FORM_READ_TIMEOUT,
        Limited::new(request.body_mut(), MAX_FORM_BYTES).collect(),
    )
    .await;
    let Ok(Ok(body)) = body else {
        return Form::default();
    };
    let mut form = Form::default();
    for (key, value) in form_urlencoded::parse(&body.to_bytes()) {
        match key.as_ref() {
            "code" => form.code = value.into_owned(),
            "route" => form.route = value.into_owned(),
            "return" => form.back = value.into_owned(),
            _ => {}
        }
    }
    form
}

/// Where to send the employee after the form: `raw` when it is an origin-relative path on this
/// host (one leading `/`, printable ASCII only, no backslash, no encoded slash, backslash or
/// control character) that `same_route` accepts; `None` otherwise. Browsers drop tabs and
/// newlines and read `\` as `/`, so `/\t/evil.example` would leave the site.
pub(super) fn return_path(raw: &str, same_route: impl Fn(&str) -> bool) -> Option<String> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/')
        || matches!(bytes.get(1), Some(b'/' | b'\\'))
        || bytes
            .iter()
            .any(|&b| !(0x21..=0x7e).contains(&b) || b == b'\\')
    {
        return None;
    }
    let escapes_safe = escaped_bytes(raw).is_ok_and(|bytes| {
        bytes
            .iter()
            .all(|&b| b >= 0x20 && b != 0x7f && b != b'/' && b != b'\\')
    });
    let target = PathAndQuery::try_from(raw).ok()?;
    let path = normalize_path(target.path()).ok()?;
    (escapes_safe && !path.starts_with("//") && same_route(&path)).then(|| raw.to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        max_failures: 3,
        first: Duration::from_secs(60),
        max: Duration::from_secs(3600),
    };

    #[test]
    fn wrong_codes_lock_out_for_doubling_times() {
        let state = MfaState::new(None, None).unwrap();
        let start = Instant::now();
        let wrong = |at: Duration| state.attempt_at("alice", |_| None, POLICY, start + at);
        assert_eq!(wrong(Duration::ZERO), Attempt::Failed { lockout: None });
        assert_eq!(wrong(Duration::ZERO), Attempt::Failed { lockout: None });
        assert_eq!(
            wrong(Duration::ZERO),
            Attempt::Failed {
                lockout: Some((3, Duration::from_secs(60)))
            }
        );
        // Locked: the code is not even looked at, a right one included.
        assert_eq!(
            state.attempt_at("alice", Some, POLICY, start + Duration::from_secs(59)),
            Attempt::Locked(Duration::from_secs(1))
        );
        assert_eq!(
            wrong(Duration::from_secs(60)),
            Attempt::Failed {
                lockout: Some((4, Duration::from_secs(120)))
            }
        );
        let mut at = Duration::from_secs(180);
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            let Attempt::Failed {
                lockout: Some((_, lockout)),
            } = wrong(at)
            else {
                panic!("every wrong code after the first lockout locks again");
            };
            at += lockout;
            last = lockout;
        }
        assert_eq!(last, POLICY.max, "lockouts stop growing at the maximum");
        // Other users are not affected; a right code clears the count.
        assert_eq!(
            state.attempt_at("bob", Some, POLICY, start),
            Attempt::Passed
        );
        assert_eq!(
            state.attempt_at("alice", |s| Some(s + 1), POLICY, start + at),
            Attempt::Passed
        );
        assert_eq!(wrong(at), Attempt::Failed { lockout: None });
    }

    #[test]
    fn return_paths_stay_on_the_route() {
        let anywhere = |_: &str| true;
        for good in ["/admin/x", "/admin/x?y=1", "/admin/caf%C3%A9"] {
            assert_eq!(return_path(good, anywhere).as_deref(), Some(good), "{good}");
        }
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "/\t/evil.example/",
            "/%09/evil.example/",
            "/%2F/evil.example",
            "/%5cevil.example",
            "https://evil.example/",
            "evil",
            "/a b",
            "",
        ] {
            assert_eq!(return_path(bad, anywhere), None, "{bad:?}");
        }
        assert_eq!(return_path("/public", |p| p.starts_with("/admin")), None);
    }
}
