//! Tunnel second-factor sessions: a passed code lets the same certificate open the same tunnel
//! without a code for `mfa_session`. Kept in this process, or in the shared store as a token
//! signed like the web cookie, so that whatever answers on the store's address cannot open one:
//! a session is believed only when its signature and expiry check out here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;

use super::{MfaState, report, unix_now};
use crate::gateway::ClientIdentity;

/// Signs the store's tokens with a key of their own (derived from the session key), so that a
/// token can never pass for a cookie or the other way round.
const KEY_LABEL: &[u8] = b"portcullis tunnel mfa sessions";

#[derive(Debug)]
pub(super) struct TunnelSessions {
    key: hmac::Key,
    /// Without a store: (certificate fingerprint, tunnel name) -> end of its session.
    local: Mutex<HashMap<([u8; 32], String), Instant>>,
}

impl TunnelSessions {
    pub(super) fn new(session_key: &hmac::Key) -> Self {
        let derived = hmac::sign(session_key, KEY_LABEL);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            local: Mutex::new(HashMap::new()),
        }
    }

    /// `expiry.signature`, binding certificate, user, tunnel and expiry.
    fn token(&self, client: &ClientIdentity, tunnel: &str, expiry: u64) -> String {
        let tag = hmac::sign(&self.key, &signed_message(client, tunnel, expiry));
        format!("{expiry}.{}", hex::encode(tag.as_ref()))
    }

    /// True when `token` is this certificate's unexpired session on `tunnel`.
    fn verify(&self, token: &[u8], client: &ClientIdentity, tunnel: &str, now: u64) -> bool {
        let Some((expiry, tag)) = std::str::from_utf8(token)
            .ok()
            .and_then(|token| token.split_once('.'))
        else {
            return false;
        };
        let (Ok(expiry), Ok(tag)) = (expiry.parse::<u64>(), hex::decode(tag)) else {
            return false;
        };
        expiry > now
            && hmac::verify(&self.key, &signed_message(client, tunnel, expiry), &tag).is_ok()
    }
}

impl MfaState {
    /// Lets `client` open `tunnel` again without a code until `session` has passed.
    pub(in crate::gateway) async fn open_tunnel_session(
        &self,
        client: &ClientIdentity,
        tunnel: &str,
        session: Duration,
    ) {
        let sessions = &self.tunnel_sessions;
        if let Some(store) = &self.store {
            let token = sessions.token(client, tunnel, unix_now() + session.as_secs());
            // Not kept: the next tunnel asks for a code again, no worse than that.
            if let Err(error) = store
                .open_tunnel_session(&client.fingerprint, tunnel, token, session)
                .await
            {
                report(&error);
            }
            return;
        }
        let now = Instant::now();
        if let Ok(mut local) = sessions.local.lock() {
            // Bounded by people x tunnels: ended sessions go whenever one is added.
            local.retain(|_, until| *until > now);
            local.insert((client.fingerprint, tunnel.to_owned()), now + session);
        }
    }

    /// True while `client` has an unexpired second-factor session on `tunnel`.
    pub(in crate::gateway) async fn has_tunnel_session(
        &self,
        client: &ClientIdentity,
        tunnel: &str,
    ) -> bool {
        let sessions = &self.tunnel_sessions;
        if let Some(store) = &self.store {
            return match store.tunnel_session(&client.fingerprint, tunnel).await {
                Ok(token) => token.is_some_and(|t| sessions.verify(&t, client, tunnel, unix_now())),
                Err(error) => {
                    report(&error);
                    false
                }
            };
        }
        let now = Instant::now();
        sessions.local.lock().is_ok_and(|local| {
            local
                .get(&(client.fingerprint, tunnel.to_owned()))
                .is_some_and(|until| *until > now)
        })
    }
}

/// Length-prefixed fields, so that no two sessions sign the same bytes.
fn signed_message(client: &ClientIdentity, tunnel: &str, expiry: u64) -> Vec<u8> {
    let mut message = client.fingerprint.to_vec();
    message.extend_from_slice(&expiry.to_be_bytes());
    for field in [client.user.as_str(), tunnel] {
        message.extend_from_slice(&(field.len() as u64).to_be_bytes());
        message.extend_from_slice(field.as_bytes());
    }
    message
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;

    fn person(user: &str, fingerprint: u8) -> ClientIdentity {
        ClientIdentity {
            user: user.to_owned(),
            fingerprint: [fingerprint; 32],
            chain: Arc::from([]),
            expires: SystemTime::now(),
        }
    }

    #[test]
    fn a_token_holds_for_its_certificate_user_tunnel_and_time_only() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[1; 32]);
        let sessions = TunnelSessions::new(&key);
        let alice = person("alice", 1);
        let token = sessions.token(&alice, "vault", 1_000);
        assert!(sessions.verify(token.as_bytes(), &alice, "vault", 999));
        assert!(
            !sessions.verify(token.as_bytes(), &alice, "vault", 1_000),
            "expired"
        );
        assert!(
            !sessions.verify(token.as_bytes(), &alice, "db1", 999),
            "other tunnel"
        );
        assert!(!sessions.verify(token.as_bytes(), &person("alice", 2), "vault", 999));
        assert!(!sessions.verify(token.as_bytes(), &person("bob", 1), "vault", 999));
        let (_, tag) = token.split_once('.').unwrap();
        let later = format!("2000.{tag}");
        assert!(
            !sessions.verify(later.as_bytes(), &alice, "vault", 999),
            "expiry moved"
        );
        let other_key = TunnelSessions::new(&hmac::Key::new(hmac::HMAC_SHA256, &[2; 32]));
        assert!(!other_key.verify(token.as_bytes(), &alice, "vault", 999));
        // The web cookie's key is not the token's: a cookie signature is not a token.
        let cookie_tag = hmac::sign(&key, &signed_message(&alice, "vault", 1_000));
        let as_token = format!("1000.{}", hex::encode(cookie_tag.as_ref()));
        assert!(!sessions.verify(as_token.as_bytes(), &alice, "vault", 999));
        for junk in ["", "1", "x.y", "1000.zz", "\u{ff}"] {
            assert!(
                !sessions.verify(junk.as_bytes(), &alice, "vault", 999),
                "{junk:?}"
            );
        }
    }
}
