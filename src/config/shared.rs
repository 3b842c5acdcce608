//! `[shared]`, validated: the secrets and the store that make several instances behind one
//! balancer act as one gateway. A session cookie signed by one is honoured by the others (and
//! survives a restart); a TOTP code used on one is refused on the others, and wrong codes are
//! counted together.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::raw::{RawConfig, RawShared};
use super::validate::{Key, Problems};
use super::{ProblemKind, UpstreamConfig, UpstreamId};

/// HMAC-SHA256 wants at least its output size in key material (RFC 2104 3).
pub const MIN_SESSION_KEY_BYTES: usize = 32;

/// `[shared]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedSettings {
    /// Signs second-factor session cookies; without it each instance makes its own at start.
    pub session_key: Option<Secret>,
    /// Where TOTP replay memory, wrong-code counts and tunnel MFA sessions are kept.
    pub redis: Option<RedisSettings>,
}

/// The Redis server, reached as one of our upstreams (so through the same environment checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Its `[upstreams]` entry.
    pub upstream: UpstreamId,
    /// The `AUTH` password, if the server wants one.
    pub password: Option<Secret>,
}

/// Bytes read from an owner-only file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

pub(super) fn validate_shared(
    raw: &RawConfig,
    upstreams: &[UpstreamConfig],
    problems: &mut Problems,
) -> SharedSettings {
    let RawShared {
        session_key_file,
        redis,
        redis_password_file,
    } = &raw.shared;
    let key = |field: &str| Key::new("shared").field(field);
    let session_key = session_key_file.as_deref().and_then(|file| {
        read_secret(file, MIN_SESSION_KEY_BYTES)
            .map_err(|kind| problems.push(key("session_key_file"), kind))
            .ok()
    });
    let password = redis_password_file.as_deref().and_then(|file| {
        read_secret(file, 1)
            .map_err(|kind| problems.push(key("redis_password_file"), kind))
            .ok()
    });
    if password.is_some() && redis.is_none() {
        problems.push(
            key("redis_password_file"),
            ProblemKind::PasswordWithoutRedis,
        );
    }
    let redis = redis.as_ref().and_then(|name| {
        let upstream = upstreams.iter().position(|u| *u.name == **name);
        if upstream.is_none() && !raw.upstreams.contains_key(name) {
            problems.push(key("redis"), ProblemKind::UnknownUpstream(name.clone()));
        }
        // A declared upstream missing here was refused with its own key.
        Some(RedisSettings {
            upstream: UpstreamId(upstream?),
            password: password.clone(),
        })
    });
    SharedSettings { session_key, redis }
}

/// The whole file, owner-only, at least `min` bytes once trailing whitespace is cut (a key
/// written with `echo` keeps its newline out of the key).
fn read_secret(file: &Path, min: usize) -> Result<Secret, ProblemKind> {
    crate::secrets::require_private(file)?;
    let bytes = std::fs::read(file).map_err(|source| ProblemKind::SecretFile {
        file: file.to_owned(),
        source,
    })?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end < min {
        return Err(ProblemKind::ShortSecret {
            file: file.to_owned(),
            min,
        });
    }
    Ok(Secret(Arc::from(&bytes[..end])))
}
