//! Why a config is refused: every problem with the key it concerns.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::certs::CertError;
use crate::host::BadHostPattern;
use crate::networks::NetworkRefusal;

use super::{MAX_BUFFER_LINES, MIN_HEADER_BYTES};

mod acme;
mod process;

pub use acme::AcmeProblem;
pub use process::ProcessProblem;

/// A config that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not UTF-8 text.
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    /// Not valid TOML, or a value of the wrong type, or an unknown key.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// Parsed, but some values break the rules.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

/// "did you mean" the nearest valid name, else the valid names.
fn hint(nearest: Option<&str>, expected: &[String]) -> String {
    match nearest {
        Some(nearest) => format!("; did you mean {nearest:?}?"),
        None if expected.is_empty() => String::new(),
        None => format!("; expected one of: {}", expected.join(", ")),
    }
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// One invalid value: the key path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {kind}")]
pub struct Problem {
    /// Dotted key path, e.g. `upstreams.app.addrs[1]`.
    pub key: String,
    /// What is wrong.
    #[source]
    pub kind: ProblemKind,
}

/// What can be wrong with a value.
#[derive(Debug, thiserror::Error)]
pub enum ProblemKind {
    /// A key the section does not have, or a value not among the allowed ones.
    #[error("unknown {what} {name:?}{}", hint(nearest.as_deref(), expected))]
    Unknown {
        /// `key` or `value`.
        what: &'static str,
        /// As written.
        name: String,
        /// The valid one closest to it, if any is close.
        nearest: Option<String>,
        /// Every valid one.
        expected: Vec<String>,
    },
    /// A key without a default, absent.
    #[error("is required")]
    Required,
    /// A value of the wrong type, as serde says.
    #[error("{0}")]
    Type(String),
    /// Not `ip:port`.
    #[error("{0:?} is not an ip:port socket address")]
    SocketAddr(String),
    /// Not a humantime duration.
    #[error("{0:?} is not a duration such as \"10s\", \"500ms\" or \"5m\"")]
    Duration(String),
    /// Zero where zero would disable a protection.
    #[error("must be greater than zero")]
    Zero,
    /// Legal, but turns HSTS off (RFC 6797 6.1.1: browsers forget the host).
    #[error("0 tells browsers to forget HSTS for our hosts: HTTPS is no longer enforced by them")]
    HstsOff,
    /// `preload` that preload lists refuse.
    #[error(
        "preload lists accept only include_subdomains = true and max_age of at least one year (31536000)"
    )]
    PreloadIneligible,
    /// Log retention outside the policy's range.
    #[error("{0} days is outside the retention policy of 15 to 30 days")]
    Retention(u32),
    /// A log buffer too small to ride out a disk fault, or too big for memory.
    #[error("{0} lines is outside 1 to {MAX_BUFFER_LINES}")]
    BufferLines(usize),
    /// Below hyper's minimum buffer.
    #[error("must be at least {MIN_HEADER_BYTES}")]
    TooSmall,
    /// An admin or health address reachable from outside.
    #[error("{0} is public; this listener must be on a loopback or private address")]
    PublicListener(SocketAddr),
    /// A non-loopback admin address without client certificates.
    #[error(
        "{0} is not a loopback address: set admin.allow to require employee certificates (mutual TLS) there"
    )]
    UnauthenticatedAdmin(SocketAddr),
    /// Not CIDR notation.
    #[error("{0:?} is not a network in CIDR notation")]
    Network(String),
    /// A network outside the private ranges.
    #[error("{net} {reason}")]
    NotPrivate {
        /// The network.
        net: IpNet,
        /// Which rule it breaks.
        #[source]
        reason: NetworkRefusal,
    },
    /// Two environments claim the same addresses.
    #[error("{net} overlaps {other} of environment {env:?}")]
    Overlap {
        /// This network.
        net: IpNet,
        /// The other one.
        other: IpNet,
        /// Its environment.
        env: String,
    },
    /// An environment with no `[networks]` entry.
    #[error("environment {0:?} has no entry in [networks]")]
    UnknownEnvironment(String),
    /// An upstream in an environment this instance may not reach.
    #[error(
        "upstream lives in environment {upstream:?}, but this instance runs in {instance:?} and may only reach its own environment and those it peers to"
    )]
    CrossEnvironment {
        /// The upstream's environment.
        upstream: String,
        /// The instance's.
        instance: String,
    },
    /// A peering that would let another environment reach this one.
    #[error(
        "only this instance's environment {instance:?} may be peered from; a peering from {from:?} would let it reach us"
    )]
    ForeignPeering {
        /// The peering's `from`.
        from: String,
        /// The instance's environment.
        instance: String,
    },
    /// A peering of an environment to itself.
    #[error("an environment cannot be peered to itself")]
    SelfPeering,
    /// A revocation list that cannot be read.
    #[error("{} is not a readable PEM certificate revocation list", .0.display())]
    Crl(PathBuf),
    /// A secret file or directory that others can read.
    #[error(transparent)]
    Exposed(#[from] crate::secrets::Exposure),
    /// A TOTP secret that cannot be used.
    #[error("{} does not hold a base32 TOTP secret of at least 128 bits", .0.display())]
    TotpSecret(PathBuf),
    /// A secret file that cannot be read.
    #[error("cannot read {}: {source}", file.display())]
    SecretFile {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A secret file with too little in it.
    #[error("{} holds fewer than {min} bytes", file.display())]
    ShortSecret {
        /// The file.
        file: PathBuf,
        /// The least it must hold.
        min: usize,
    },
    /// A value that must not be empty.
    #[error("must not be empty")]
    Empty,
    /// A Redis password without Redis.
    #[error("set shared.redis too, or remove this")]
    PasswordWithoutRedis,
    /// Legal, but sessions signed with a key of this instance's own.
    #[error(
        "not set while shared.redis is: each instance signs sessions with its own key, so a second-factor session (web or tunnel) opened on one is not honoured by the others"
    )]
    StoreWithoutSharedKey,
    /// A Redis address that is neither an upstream name nor one in a redis URL.
    #[error("{0:?} is not an [upstreams] name, redis://NAME or rediss://NAME")]
    RedisUrl(String),
    /// TLS to Redis without the CA to check its certificate by.
    #[error("rediss:// needs the CA file that signed the Redis certificate")]
    RedisCaMissing,
    /// A TLS setting for a Redis reached without TLS.
    #[error("applies to rediss:// only (shared.redis is plain TCP)")]
    RedisNotTls,
    /// A name no certificate could be checked against.
    #[error("{0:?} is not a DNS name or an IP address")]
    ServerName(String),
    /// A file the proxy writes in a directory of files it only reads: the sandbox would grant
    /// writing them all.
    #[error(
        "{0} also holds files the proxy only reads (the gateway's CA, lists or secrets): give it a directory of its own"
    )]
    SharedWriteDir(String),
    /// `allow`, `mfa` or `assertion` on a route that is not internal.
    #[error("`allow`, `mfa` and `assertion` apply to internal routes only (set `internal = true`)")]
    AccessOnPublicRoute,
    /// An internal route, tunnel or admin grant without a gateway.
    #[error("internal routes, tunnels and admin grants need a [gateway] section")]
    NoGateway,
    /// An allow entry naming nobody.
    #[error("{0:?} is neither a user in [gateway.users] nor a group one of them belongs to")]
    UnknownGrant(String),
    /// Lockout settings that do not lock, or shrink.
    #[error("mfa_lockout must be at least 1s and at most mfa_lockout_max")]
    Lockout,
    /// Employee certificates valid for longer than short-lived ones should be (a warning).
    #[error(
        "{} is longer than {} days: a lost laptop's certificate stays valid that long unless someone revokes it",
        humantime::format_duration(*.0),
        super::gateway::LONGEST_SHORT_LIVED.as_secs() / 86_400
    )]
    LongLivedCertificates(std::time::Duration),
    /// Revocation lists that expire before `portcullis-crl.timer` runs twice (a warning).
    #[error(
        "{} is shorter than two periods of portcullis-crl.timer ({}): one missed run and every employee certificate is refused",
        humantime::format_duration(*.0),
        humantime::format_duration(super::gateway::CRL_TIMER_PERIOD)
    )]
    ShortCrlValidity(std::time::Duration),
    /// A user admitted to an MFA route without a second factor.
    #[error("user {0:?} is allowed here but has no totp_secret_file")]
    NoSecondFactor(String),
    /// Not `ip:port` nor `host:port`.
    #[error("{0:?} is not ip:port or host:port")]
    UpstreamAddr(String),
    /// A public address (or a name resolving to one).
    #[error(
        "{addr} is a public address; upstreams must lie in a private network of environment {env:?}"
    )]
    PublicUpstream {
        /// The address.
        addr: String,
        /// The upstream's environment.
        env: String,
    },
    /// A cloud metadata endpoint (link-local, `fd00:ec2::254`, `100.100.100.200`, or listed in
    /// `access.metadata_endpoints`).
    #[error(
        "{0} is a cloud metadata endpoint (link-local, fd00:ec2::254, 100.100.100.200 or access.metadata_endpoints) and never an upstream"
    )]
    MetadataUpstream(String),
    /// A private address outside the upstream's environment.
    #[error("{addr} is not in any network of environment {env:?}")]
    OutsideEnvironment {
        /// The address.
        addr: String,
        /// The upstream's environment.
        env: String,
    },
    /// A name that does not resolve.
    #[error("{0} does not resolve")]
    Unresolvable(String),
    /// An upstream with no addresses.
    #[error("an upstream needs at least one address")]
    NoAddrs,
    /// More retries than a request may make.
    #[error("at most {0}: each retry waits for an upstream's answer")]
    TooManyRetries(u32),
    /// A share outside 0 to 1.
    #[error("must be a share between 0 and 1, such as 0.2")]
    Share,
    /// A percentage outside 1 to 100.
    #[error("must be a percentage from 1 to 100")]
    Percent,
    /// A health check with neither or both of `path` and `tcp`.
    #[error("a health check needs exactly one of `path` and `tcp = true`")]
    HealthProbe,
    /// A health check path that is not an origin-form target.
    #[error("{0:?} is not a path starting with '/'")]
    HealthPath(String),
    /// Not `"200-399"` or one status.
    #[error("{0:?} is not a status or a range of statuses such as \"200-399\" (100 to 599)")]
    StatusRange(String),
    /// A check that may still be waiting when the next one is due.
    #[error("must not exceed interval")]
    TimeoutOverInterval,
    /// A longest ejection shorter than the first.
    #[error("must not be shorter than base_ejection")]
    EjectionOrder,
    /// Not `N/s`, `N/m` or `N/h`.
    #[error("{0:?} is not a rate such as \"20/s\", \"100/m\" or \"1000/h\" (1 to 1000000)")]
    Rate(String),
    /// A burst of zero or too many.
    #[error("must be from 1 to {0}")]
    Burst(u32),
    /// A route with neither or both of `upstream` and `respond`.
    #[error("a route needs exactly one of `upstream` and `respond`")]
    RouteAction,
    /// A responder status outside 200..=599.
    #[error("{0} is not a final status (200 to 599)")]
    Status(u16),
    /// A route naming a missing upstream.
    #[error("no upstream named {0:?}")]
    UnknownUpstream(String),
    /// A bad host pattern.
    #[error(transparent)]
    Host(#[from] BadHostPattern),
    /// A route host that no certificate covers.
    #[error("no certificate in [[tls.certificates]] covers host {0:?}")]
    Uncovered(String),
    /// A path prefix not starting with `/` or not normal.
    #[error("{0:?} must start with '/' and contain no dot segments, '//' or '%'")]
    PathPrefix(String),
    /// A prefix in the proxy's own namespace.
    #[error("{0:?} lies in /.portcullis/, which the proxy keeps for itself on every host")]
    ReservedPrefix(String),
    /// Not a header name.
    #[error("{0:?} is not an HTTP header name")]
    HeaderName(String),
    /// Same host and prefix twice.
    #[error("another route already serves host {0:?} with this prefix")]
    DuplicateRoute(String),
    /// A tunnel host that is not one exact name.
    #[error("{0:?} must be one exact host name (the gateway's SNI), not a pattern")]
    TunnelHost(String),
    /// A tunnel target that is not a host name.
    #[error("{0:?} must be a host name (clients CONNECT to names, never to addresses)")]
    TunnelTarget(String),
    /// The same host, target and port twice.
    #[error("another tunnel already serves {0:?}")]
    DuplicateTunnel(String),
    /// A database key on a tunnel that carries bytes.
    #[error("only with protocol = \"postgres\"")]
    OnlyPostgres,
    /// A database tunnel without the CA its database's certificate chains to.
    #[error("protocol = \"postgres\" needs tls_ca: the database is reached over TLS only")]
    NoDatabaseCa,
    /// `allow_write` on a tunnel that is not read-only lets no one more through.
    #[error("means nothing without read_only = true")]
    AllowWriteWithoutReadOnly,

    /// No certificate at all.
    #[error("at least one certificate is required")]
    NoCertificate,
    /// A certificate that cannot be served.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// How the process runs: its account, the files it needs, its snapshots.
    #[error(transparent)]
    Process(#[from] ProcessProblem),
    /// `[tls.acme]`.
    #[error(transparent)]
    Acme(#[from] AcmeProblem),
}
