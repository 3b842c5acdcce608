//! `[shared]`, validated: the secrets and the store that make several instances behind one
//! balancer act as one gateway. A session cookie signed by one is honoured by the others (and
//! survives a restart); a TOTP code used on one is refused on the others, and wrong codes are
//! counted together.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

use super::problems::{Key, Problems};
use super::raw::{RawConfig, RawShared};
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
    /// `rediss://`: the connection is TLS, and the server's certificate is checked.
    pub tls: Option<RedisTls>,
}

/// How a `rediss://` server proves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// The roots of `shared.redis_ca_file` (compared by content: a reload that changes them is
    /// refused like any other `[shared]` change).
    pub roots: Vec<CertificateDer<'static>>,
    /// The name its certificate must hold.
    pub server_name: ServerName<'static>,
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
    warnings: &mut Problems,
) -> SharedSettings {
    let RawShared {
        session_key_file,
        redis,
        redis_password_file,
        redis_ca_file,
        redis_server_name,
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
    let address = redis.as_deref().and_then(|value| {
        let parsed = RedisAddress::parse(value);
        if parsed.is_none() {
            problems.push(key("redis"), ProblemKind::RedisUrl(value.to_owned()));
        }
        parsed
    });
    if !address.as_ref().is_some_and(|a| a.tls) {
        for (field, set) in [
            ("redis_ca_file", redis_ca_file.is_some()),
            ("redis_server_name", redis_server_name.is_some()),
        ] {
            if set {
                problems.push(key(field), ProblemKind::RedisNotTls);
            }
        }
    }
    let redis = address.and_then(|address| {
        let upstream = upstreams.iter().position(|u| *u.name == *address.name);
        if upstream.is_none() && !raw.upstreams.contains_key(address.name) {
            problems.push(
                key("redis"),
                ProblemKind::UnknownUpstream(address.name.to_owned()),
            );
        }
        let tls = match address.tls {
            true => Some(redis_tls(&raw.shared, address.name, problems)?),
            false => None,
        };
        // A declared upstream missing here was refused with its own key.
        Some(RedisSettings {
            upstream: UpstreamId(upstream?),
            password,
            tls,
        })
    });
    if redis.is_some() && session_key_file.is_none() {
        warnings.push(key("session_key_file"), ProblemKind::StoreWithoutSharedKey);
    }
    SharedSettings { session_key, redis }
}

/// The CA and name a `rediss://` server is checked by.
fn redis_tls(shared: &RawShared, upstream: &str, problems: &mut Problems) -> Option<RedisTls> {
    let key = |field: &str| Key::new("shared").field(field);
    let roots = match &shared.redis_ca_file {
        None => {
            problems.push(key("redis_ca_file"), ProblemKind::RedisCaMissing);
            None
        }
        Some(file) => crate::certs::load_ca_certs(file)
            .map_err(|e| problems.push(key("redis_ca_file"), e))
            .ok(),
    };
    let (field, name) = match &shared.redis_server_name {
        Some(name) => ("redis_server_name", name.as_str()),
        None => ("redis", upstream),
    };
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|_| problems.push(key(field), ProblemKind::ServerName(name.to_owned())))
        .ok();
    Some(RedisTls {
        roots: roots?,
        server_name: server_name?,
    })
}

/// `shared.redis`, read: `NAME`, `redis://NAME` or `rediss://NAME`.
struct RedisAddress<'a> {
    name: &'a str,
    tls: bool,
}

impl<'a> RedisAddress<'a> {
    fn parse(value: &'a str) -> Option<Self> {
        let (name, tls) = match value.split_once("://") {
            None => (value, false),
            Some(("redis", name)) => (name, false),
            Some(("rediss", name)) => (name, true),
            Some(_) => return None,
        };
        (!name.is_empty() && !name.contains('/')).then_some(Self { name, tls })
    }
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
