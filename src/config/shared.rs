//! `[shared]`, validated: the secrets and the store that make several instances behind one
//! balancer act as one gateway. A session cookie signed by one is honoured by the others (and
//! survives a restart); a TOTP code used on one is refused on the others, and wrong codes are
//! counted together.

use std::fmt;
use std::path::{Path, PathBuf};
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

/// Where the shared store is, checked on its own: an upstream, and for `rediss://` the name
/// its certificate must hold.
pub(super) struct RedisPlace {
    upstream: UpstreamId,
    server_name: Option<ServerName<'static>>,
}

/// `[shared]`'s values; the secret and CA files are read by [`read`].
pub(super) fn check(
    raw: &RawConfig,
    upstreams: &[UpstreamConfig],
    problems: &mut Problems,
    warnings: &mut Problems,
) -> Option<RedisPlace> {
    let shared = &raw.shared;
    let key = |field: &str| Key::new("shared").field(field);
    if shared.redis_password_file.is_some() && shared.redis.is_none() {
        problems.push(
            key("redis_password_file"),
            ProblemKind::PasswordWithoutRedis,
        );
    }
    let address = shared.redis.as_deref().and_then(|value| {
        let parsed = RedisAddress::parse(value);
        if parsed.is_none() {
            problems.push(key("redis"), ProblemKind::RedisUrl(value.to_owned()));
        }
        parsed
    });
    if !address.as_ref().is_some_and(|a| a.tls) {
        for (field, set) in [
            ("redis_ca_file", shared.redis_ca_file.is_some()),
            ("redis_server_name", shared.redis_server_name.is_some()),
        ] {
            if set {
                problems.push(key(field), ProblemKind::RedisNotTls);
            }
        }
    }
    let place = address.and_then(|address| {
        let upstream = upstreams.iter().position(|u| *u.name == *address.name);
        if upstream.is_none() && !raw.upstreams.contains_key(address.name) {
            problems.push(
                key("redis"),
                ProblemKind::UnknownUpstream(address.name.to_owned()),
            );
        }
        let server_name = match address.tls {
            true => Some(server_name(shared, address.name, problems)?),
            false => None,
        };
        // A declared upstream missing here was refused with its own key.
        Some(RedisPlace {
            upstream: UpstreamId(upstream?),
            server_name,
        })
    });
    if place.is_some() && shared.session_key_file.is_none() {
        warnings.push(key("session_key_file"), ProblemKind::StoreWithoutSharedKey);
    }
    place
}

/// The name a `rediss://` server's certificate must hold; its CA file is required.
fn server_name(
    shared: &RawShared,
    upstream: &str,
    problems: &mut Problems,
) -> Option<ServerName<'static>> {
    let key = |field: &str| Key::new("shared").field(field);
    if shared.redis_ca_file.is_none() {
        problems.push(key("redis_ca_file"), ProblemKind::RedisCaMissing);
    }
    let (field, name) = match &shared.redis_server_name {
        Some(name) => ("redis_server_name", name.as_str()),
        None => ("redis", upstream),
    };
    ServerName::try_from(name.to_owned())
        .map_err(|_| problems.push(key(field), ProblemKind::ServerName(name.to_owned())))
        .ok()
}

/// What `[shared]`'s files hold.
pub(super) struct SharedFiles {
    session_key: Option<Secret>,
    password: Option<Secret>,
    redis_roots: Option<Vec<CertificateDer<'static>>>,
}

/// Reads the files `[shared]` names, whatever its other values say.
pub(super) fn read(shared: &RawShared, problems: &mut Problems) -> SharedFiles {
    let key = |field: &str| Key::new("shared").field(field);
    let mut secret = |file: &Option<PathBuf>, field, min| {
        let file = file.as_deref()?;
        read_secret(file, min)
            .map_err(|kind| problems.push(key(field), kind))
            .ok()
    };
    let session_key = secret(
        &shared.session_key_file,
        "session_key_file",
        MIN_SESSION_KEY_BYTES,
    );
    let password = secret(&shared.redis_password_file, "redis_password_file", 1);
    let redis_roots = shared.redis_ca_file.as_deref().and_then(|file| {
        crate::certs::load_ca_certs(file)
            .map_err(|e| problems.push(key("redis_ca_file"), e))
            .ok()
    });
    SharedFiles {
        session_key,
        password,
        redis_roots,
    }
}

/// `[shared]` from its checked values and its files.
pub(super) fn settings(place: Option<RedisPlace>, files: SharedFiles) -> SharedSettings {
    let redis = place.map(|place| RedisSettings {
        upstream: place.upstream,
        password: files.password,
        // Phase 1 requires the CA file with `rediss://` and the load step read it; were it
        // missing all the same, no roots trust no server: the store fails closed, never plain.
        tls: place.server_name.map(|server_name| RedisTls {
            roots: files.redis_roots.unwrap_or_default(),
            server_name,
        }),
    });
    SharedSettings {
        session_key: files.session_key,
        redis,
    }
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
