//! `[gateway]` and the access rules of internal routes, validated: a trusted employee CA,
//! revocation lists, one entry per person, TOTP secrets kept private, and grants that name
//! people and groups that exist.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateRevocationListDer;

use super::ProblemKind;
use super::files::GatewayFiles;
use super::problems::{Key, Problems};
use super::rates::{FALLBACK_RATE, Rate};
use super::raw::{RawGateway, RawRoute};

/// The gateway for internal routes.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Roots that issue employee certificates.
    pub client_roots: Arc<rustls::RootCertStore>,
    /// Revocation lists; unknown status fails closed, and so does a list past its next update.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Each list's key and next update, for `check` and the metrics.
    pub crl_updates: Vec<CrlUpdate>,
    /// How long a passed second factor lasts.
    pub mfa_session: Duration,
    /// How wrong TOTP codes are answered.
    pub lockout: LockoutPolicy,
    /// People, by certificate subject CN.
    pub users: BTreeMap<String, User>,
    /// `CONNECT` tunnels one employee may have open at once.
    pub max_tunnels_per_user: u32,
    /// `mfa_rate`: second-factor forms posted per client address.
    pub mfa_rate: Rate,
    /// `connect_rate`: tunnel `CONNECT`s per client address.
    pub connect_rate: Rate,
    /// How long what `portcullis employees` signs stays valid.
    pub lifetimes: Lifetimes,
    /// The access requests and their time-bound grants, re-read while serving.
    pub requests: std::path::PathBuf,
    /// Who may approve an access request.
    pub approvers: Vec<Grant>,
    /// Where the assertion keys are written, if anywhere.
    pub jwks_file: Option<std::path::PathBuf>,
}

/// When a revocation list should be replaced.
#[derive(Debug, Clone)]
pub struct CrlUpdate {
    /// Its config key, `gateway.crls[N]`.
    pub key: String,
    /// Its `nextUpdate`; `None` when it names none (it never expires).
    pub next_update: Option<SystemTime>,
}

impl GatewaySettings {
    /// The revocation lists past their next update at `now`.
    pub fn expired_crls(&self, now: SystemTime) -> impl Iterator<Item = &CrlUpdate> {
        self.crl_updates
            .iter()
            .filter(move |crl| crl.next_update.is_some_and(|next| next <= now))
    }
}

/// Wrong second-factor codes: after `max_failures` in a row the user is locked out for
/// `first`, and each further wrong code doubles the lockout, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Wrong codes in a row before the first lockout.
    pub max_failures: u32,
    /// The first lockout.
    pub first: Duration,
    /// The longest lockout.
    pub max: Duration,
}

impl LockoutPolicy {
    /// The lockout that the `nth` (0-based) lockout in a row lasts.
    pub fn lockout(&self, nth: u32) -> Duration {
        self.first
            .saturating_mul(2u32.saturating_pow(nth.min(31)))
            .min(self.max)
    }
}

/// One person.
#[derive(Debug, Clone)]
pub struct User {
    /// Groups they belong to.
    pub groups: Vec<String>,
    /// Their RFC 6238 second factor, if enrolled.
    pub totp: Option<Arc<totp_rs::Totp>>,
}

/// Who may use an internal route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAccess {
    /// Users (`alice`) and groups (`group:ops`); nobody else passes.
    pub allow: Vec<Grant>,
    /// Whether a current TOTP code is required once per session.
    pub mfa: bool,
    /// Whether the upstream gets a signed `Portcullis-Assertion`.
    pub assertion: bool,
}

/// One entry of an `allow` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A named person.
    User(String),
    /// Everyone in a group.
    Group(String),
}

impl Grant {
    /// True when this grant admits `user` with `groups`.
    pub fn admits(&self, user: &str, groups: &[String]) -> bool {
        match self {
            Self::User(name) => name == user,
            Self::Group(group) => groups.iter().any(|g| g == group),
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(name) => f.write_str(name),
            Self::Group(group) => write!(f, "group:{group}"),
        }
    }
}

/// Above this, `check` warns that employee certificates are not short-lived.
pub const LONGEST_SHORT_LIVED: Duration = Duration::from_secs(90 * 86_400);
/// How often `contrib/systemd/portcullis-crl.timer` re-signs the revocation list.
pub const CRL_TIMER_PERIOD: Duration = Duration::from_secs(3600);

/// `[gateway]`'s values, checked on their own; its files are read by `files.rs`.
pub(super) struct GatewayPolicy {
    mfa_session: Duration,
    lockout: LockoutPolicy,
    max_tunnels_per_user: u32,
    approvers: Vec<Grant>,
    pub(super) lifetimes: Lifetimes,
    mfa_rate: Option<Rate>,
    connect_rate: Option<Rate>,
}

/// How long what `portcullis employees` signs stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// A person's certificate.
    pub certificate: Duration,
    /// A revocation list: its nextUpdate is this long after it was signed.
    pub crl: Duration,
}

pub(super) fn policy(
    gateway: &RawGateway,
    problems: &mut Problems,
    warnings: &mut Problems,
) -> GatewayPolicy {
    let mfa_session = duration(problems, "mfa_session", &gateway.mfa_session)
        .unwrap_or(Duration::from_secs(8 * 3600));
    // A value that is not a duration is reported once: what stands in for it is legal.
    let lifetimes = Lifetimes {
        certificate: duration(
            problems,
            "certificate_validity",
            &gateway.certificate_validity,
        )
        .unwrap_or(LONGEST_SHORT_LIVED),
        crl: duration(problems, "crl_validity", &gateway.crl_validity)
            .unwrap_or(2 * CRL_TIMER_PERIOD),
    };
    let lockout = lockout_policy(gateway, problems);
    if gateway.max_tunnels_per_user == 0 {
        problems.push("gateway.max_tunnels_per_user", ProblemKind::Zero);
    }
    for (key, lifetime) in [
        ("gateway.certificate_validity", lifetimes.certificate),
        ("gateway.crl_validity", lifetimes.crl),
    ] {
        if lifetime.is_zero() {
            problems.push(key, ProblemKind::Zero);
        }
    }
    if lifetimes.certificate > LONGEST_SHORT_LIVED {
        warnings.push(
            "gateway.certificate_validity",
            ProblemKind::LongLivedCertificates(lifetimes.certificate),
        );
    }
    if lifetimes.crl < 2 * CRL_TIMER_PERIOD {
        warnings.push(
            "gateway.crl_validity",
            ProblemKind::ShortCrlValidity(lifetimes.crl),
        );
    }
    GatewayPolicy {
        mfa_session,
        lockout,
        max_tunnels_per_user: gateway.max_tunnels_per_user,
        approvers: Vec::new(),
        lifetimes,
        mfa_rate: super::rates::rate(&gateway.mfa_rate, &Key::new("gateway.mfa_rate"), problems),
        connect_rate: super::rates::rate(
            &gateway.connect_rate,
            &Key::new("gateway.connect_rate"),
            problems,
        ),
    }
}

impl GatewayPolicy {
    /// Checks that `[gateway] jwks_file`, whose directory the proxy writes, is not beside the
    /// files it reads of `[gateway]`.
    pub(super) fn check_jwks_dir(gateway: &RawGateway, problems: &mut Problems) {
        let Some(dir) = gateway.jwks_file.as_ref().map(|f| f.parent().unwrap_or(f)) else {
            return;
        };
        let totp = gateway
            .users
            .values()
            .filter_map(|u| u.totp_secret_file.as_ref());
        let read = [&gateway.client_ca]
            .into_iter()
            .chain(&gateway.crls)
            .chain(totp);
        if read.into_iter().any(|file| file.parent() == Some(dir)) {
            problems.push(
                "gateway.jwks_file",
                ProblemKind::SharedWriteDir(dir.display().to_string()),
            );
        }
    }

    /// The same, with `[gateway] approvers` naming configured people or their groups. Apart
    /// from the rest: `portcullis employees` enrols the people an approver list names, so it
    /// takes a config whose list names people still to come.
    pub(super) fn with_approvers(self, gateway: &RawGateway, problems: &mut Problems) -> Self {
        let key = Key::new("gateway").field("approvers");
        Self {
            approvers: grants(&gateway.approvers, &key, gateway, problems),
            ..self
        }
    }
}

/// The gateway, from its checked values and the files read for it.
pub(super) fn settings(
    gateway: &RawGateway,
    policy: GatewayPolicy,
    files: GatewayFiles,
) -> GatewaySettings {
    let mut totp = files.totp;
    let users = gateway
        .users
        .iter()
        .map(|(name, user)| {
            let user = User {
                groups: user.groups.clone(),
                totp: totp.remove(name),
            };
            (name.clone(), user)
        })
        .collect();
    GatewaySettings {
        client_roots: files.client_roots,
        crls: files.crls,
        crl_updates: files.crl_updates,
        mfa_session: policy.mfa_session,
        lockout: policy.lockout,
        users,
        max_tunnels_per_user: policy.max_tunnels_per_user,
        // Valid, or the policy's problems refused the config before its files were read.
        mfa_rate: policy.mfa_rate.unwrap_or(FALLBACK_RATE),
        connect_rate: policy.connect_rate.unwrap_or(FALLBACK_RATE),
        lifetimes: policy.lifetimes,
        requests: gateway.requests_file(),
        approvers: policy.approvers,
        jwks_file: gateway.jwks_file.clone(),
    }
}

fn lockout_policy(gateway: &RawGateway, problems: &mut Problems) -> LockoutPolicy {
    let policy = LockoutPolicy {
        max_failures: gateway.mfa_max_failures,
        first: duration(problems, "mfa_lockout", &gateway.mfa_lockout)
            .unwrap_or(Duration::from_secs(60)),
        max: duration(problems, "mfa_lockout_max", &gateway.mfa_lockout_max)
            .unwrap_or(Duration::from_secs(3600)),
    };
    if policy.max_failures == 0 {
        problems.push("gateway.mfa_max_failures", ProblemKind::Zero);
    }
    if policy.first < Duration::from_secs(1) || policy.first > policy.max {
        problems.push("gateway.mfa_lockout", ProblemKind::Lockout);
    }
    policy
}

/// `gateway.<key>` as a duration; `None`, and a problem, when it is not one.
fn duration(problems: &mut Problems, key: &str, raw: &str) -> Option<Duration> {
    let parsed = humantime::parse_duration(raw).ok();
    if parsed.is_none() {
        problems.push(
            Key::new("gateway").field(key),
            ProblemKind::Duration(raw.into()),
        );
    }
    parsed
}

/// The access rules of route `i`, checked against the gateway's people.
pub(super) fn route_access(
    i: usize,
    route: &RawRoute,
    gateway: Option<&RawGateway>,
    problems: &mut Problems,
) -> Option<RouteAccess> {
    let route_key = Key::new("routes").index(i);
    let key = |field: &str| route_key.field(field);
    if !route.internal {
        if !route.allow.is_empty() {
            problems.push(key("allow"), ProblemKind::AccessOnPublicRoute);
        }
        if route.mfa {
            problems.push(key("mfa"), ProblemKind::AccessOnPublicRoute);
        }
        if route.assertion {
            problems.push(key("assertion"), ProblemKind::AccessOnPublicRoute);
        }
        return None;
    }
    let Some(gateway) = gateway else {
        problems.push(key("internal"), ProblemKind::NoGateway);
        return None;
    };
    Some(RouteAccess {
        assertion: route.assertion,
        ..access_rules(&route.allow, route.mfa, &route_key, gateway, problems)
    })
}

/// The `allow` and `mfa` keys of the route or tunnel at `key`: grants naming people who exist,
/// and a second factor for everyone granted when `mfa` is set. Whether each secret file holds
/// a secret is the load step's to say, under the file's own key.
pub(super) fn access_rules(
    allow: &[String],
    mfa: bool,
    key: &Key,
    gateway: &RawGateway,
    problems: &mut Problems,
) -> RouteAccess {
    let allow = grants(allow, &key.field("allow"), gateway, problems);
    if mfa {
        for (name, user) in &gateway.users {
            if user.totp_secret_file.is_none() && allow.iter().any(|g| g.admits(name, &user.groups))
            {
                problems.push(key.field("mfa"), ProblemKind::NoSecondFactor(name.clone()));
            }
        }
    }
    RouteAccess {
        allow,
        mfa,
        assertion: false,
    }
}

/// An `allow` list at `key`, each entry naming a configured user or a group one of them is in.
pub(super) fn grants(
    entries: &[String],
    key: &Key,
    gateway: &RawGateway,
    problems: &mut Problems,
) -> Vec<Grant> {
    let mut allow = Vec::new();
    for (j, entry) in entries.iter().enumerate() {
        let grant = match entry.strip_prefix("group:") {
            Some(group) => Grant::Group(group.to_owned()),
            None => Grant::User(entry.clone()),
        };
        let known = match &grant {
            Grant::User(name) => gateway.users.contains_key(name),
            Grant::Group(group) => gateway.users.values().any(|u| u.groups.contains(group)),
        };
        if known {
            allow.push(grant);
        } else {
            problems.push(key.index(j), ProblemKind::UnknownGrant(entry.clone()));
        }
    }
    allow
}
