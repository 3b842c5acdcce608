//! How the process itself runs: the account it drops to after binding, the files it may
//! touch afterwards, and the snapshots of its own state.

use std::path::PathBuf;
use std::time::Duration;

use super::problems::{Key, Problems};
use super::raw::{RawConfig, RawGateway, RawSnapshots};
use super::{ProblemKind, ProcessProblem};

/// The policy's retention ranges for each snapshot tier.
pub const SIX_HOURLY_DAYS: std::ops::RangeInclusive<u32> = 2..=5;
#[allow(missing_docs)]
pub const DAILY_DAYS: std::ops::RangeInclusive<u32> = 7..=365;
#[allow(missing_docs)]
pub const WEEKLY_WEEKS: std::ops::RangeInclusive<u32> = 4..=52;
#[allow(missing_docs)]
pub const MONTHLY_MONTHS: std::ops::RangeInclusive<u32> = 13..=36;
/// The built-in schedule must fill the finest tier.
const EVERY: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(6 * 3600);

/// `[server]`'s account settings as written: names, not yet looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// `server.user`.
    pub user: Option<String>,
    /// `server.group`; only with a user.
    pub group: Option<String>,
    /// `server.allow_root`.
    pub allow_root: bool,
}

/// `[server]`'s account settings, looked up on this machine ([`super::Config::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// The account to switch to once the listeners are bound.
    pub run_as: Option<RunAs>,
    /// Keep running as root when started as root and no account is named.
    pub allow_root: bool,
}

/// An unprivileged account, as this machine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// `server.user`.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// `server.group`'s gid, or the user's primary group.
    pub gid: u32,
}

/// What the process needs of the file system once it serves: Landlock's allow-list. Files are
/// re-read at every reload; directories are written by the log, audit, ACME and snapshot tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAccess {
    /// Files read (certificates, keys, CAs, revocation lists, TOTP secrets).
    pub read: Vec<PathBuf>,
    /// Directories written.
    pub write: Vec<PathBuf>,
    /// Each of those under the key that names it, for `check` to judge as the account.
    pub named: Vec<Named>,
    /// Files the proxy never opens that a restore needs: the employees' register.
    pub kept: Vec<PathBuf>,
}

/// A path the config names, and what the process does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The key, e.g. `tls.certificates[0].key`.
    pub key: String,
    /// The path.
    pub path: PathBuf,
    /// Read, or written.
    pub need: Need,
}

/// What the process does with a path the config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A file read at start and at every reload.
    Read,
    /// A file read when it exists (the access requests): its absence is no problem.
    ReadIfPresent,
    /// A directory written (created first when missing).
    Write,
}

/// `[snapshots]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Where archives are written (and pruned).
    pub dir: PathBuf,
    /// Who can open an archive; with any, archives are encrypted to them and complete.
    pub recipients: Vec<super::AgeRecipient>,
    /// The built-in schedule, if any.
    pub every: Option<Duration>,
    /// How long each tier is kept.
    pub retention: Retention,
}

/// How long each tier of snapshots is kept, each within the policy's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// One snapshot per 6 hours, for this many days.
    pub six_hourly_days: u32,
    /// One per day.
    pub daily_days: u32,
    /// One per ISO week.
    pub weekly_weeks: u32,
    /// One per calendar month.
    pub monthly_months: u32,
}

/// `server.user`, `server.group`, `server.allow_root` as written; the accounts are looked up
/// by `resolve.rs`, so that `check` names one that does not exist rather than start failing
/// after binding.
pub(super) fn account(
    raw: &RawConfig,
    problems: &mut Problems,
    warnings: &mut Problems,
) -> Account {
    let server = &raw.server;
    if server.allow_root {
        warnings.push("server.allow_root", ProcessProblem::AllowRoot);
    }
    if server.user.is_none() && server.group.is_some() {
        problems.push("server.group", ProcessProblem::GroupWithoutUser);
    }
    Account {
        user: server.user.clone(),
        group: server.group.clone(),
        allow_root: server.allow_root,
    }
}

/// Where Debian and its kin keep the bundle of trusted roots (the file is granted, not
/// `/etc/ssl`, whose `private/` holds other services' keys).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `[tls.acme.dns]`'s secrets and CA; a provider's API over HTTPS without its own CA trusts
/// the system's roots.
fn dns_files(dns: &super::raw::RawAcmeDns, add: &mut impl FnMut(Key, &PathBuf, Need)) {
    let key = |field: &str| Key::new("tls.acme.dns").field(field);
    for (field, file) in [
        ("tsig_key_file", &dns.tsig_key_file),
        ("application_secret_file", &dns.application_secret_file),
        ("consumer_key_file", &dns.consumer_key_file),
        ("ca_file", &dns.ca_file),
    ] {
        if let Some(file) = file {
            add(key(field), file, Need::Read);
        }
    }
    let api = dns.provider != super::raw::DnsProviderKind::Rfc2136;
    if api && dns.ca_file.is_none() {
        add(key("provider"), &PathBuf::from(SYSTEM_ROOTS), Need::Read);
    }
}

/// Every file the config names and every directory it writes.
pub(super) fn file_access(raw: &RawConfig) -> FileAccess {
    let mut named = Vec::new();
    let mut add = |key: Key, path: &PathBuf, need| {
        named.push(Named {
            key: key.into(),
            path: path.clone(),
            need,
        });
    };
    for (i, c) in raw.tls.certificates.iter().enumerate() {
        let key = Key::new("tls.certificates").index(i);
        add(key.field("cert"), &c.cert, Need::Read);
        add(key.field("key"), &c.key, Need::Read);
    }
    add(Key::new("log.dir"), &raw.log.dir, Need::Write);
    if let Some(acme) = &raw.tls.acme {
        if let Some(ca) = &acme.directory_ca {
            add(Key::new("tls.acme.directory_ca"), ca, Need::Read);
        }
        if acme.store.is_some() {
            // The object store's HTTPS client trusts the system's roots (public certificates).
            add(
                Key::new("tls.acme.store"),
                &PathBuf::from(SYSTEM_ROOTS),
                Need::Read,
            );
        } else {
            add(Key::new("tls.acme.cache_dir"), &acme.cache_dir, Need::Write);
        }
        if let Some(dns) = &acme.dns {
            dns_files(dns, &mut add);
        }
    }
    if let Some(gateway) = &raw.gateway {
        add(
            Key::new("gateway.client_ca"),
            &gateway.client_ca,
            Need::Read,
        );
        add(
            Key::new("gateway.requests"),
            &gateway.requests_file(),
            Need::ReadIfPresent,
        );
        // Replaced whole, by rename: its directory is written.
        if let Some(file) = &gateway.jwks_file {
            let dir = match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            };
            add(Key::new("gateway.jwks_file"), &dir, Need::Write);
        }
        for (i, crl) in gateway.crls.iter().enumerate() {
            add(Key::new("gateway.crls").index(i), crl, Need::Read);
        }
        for (name, user) in &gateway.users {
            if let Some(file) = &user.totp_secret_file {
                let key = Key::new("gateway.users").field(name);
                add(key.field("totp_secret_file"), file, Need::Read);
            }
        }
    }
    for (i, tunnel) in raw.tunnels.iter().enumerate() {
        if let Some(ca) = &tunnel.tls_ca {
            add(Key::new("tunnels").index(i).field("tls_ca"), ca, Need::Read);
        }
    }
    if let Some(snapshots) = &raw.snapshots {
        add(Key::new("snapshots.dir"), &snapshots.dir, Need::Write);
    }
    let shared = &raw.shared;
    for (name, file) in [
        ("session_key_file", &shared.session_key_file),
        ("redis_password_file", &shared.redis_password_file),
        ("redis_ca_file", &shared.redis_ca_file),
    ] {
        if let Some(file) = file {
            add(Key::new("shared").field(name), file, Need::Read);
        }
    }
    let paths = |write: bool| {
        named
            .iter()
            .filter(|n| (n.need == Need::Write) == write)
            .map(|n| n.path.clone())
            .collect()
    };
    FileAccess {
        read: paths(false),
        write: paths(true),
        named,
        kept: raw.gateway.iter().map(RawGateway::issued_file).collect(),
    }
}

/// `[snapshots]`: each tier's retention within the policy's range.
pub(super) fn validate_snapshots(
    raw: &RawSnapshots,
    problems: &mut Problems,
    warnings: &mut Problems,
) -> SnapshotSettings {
    let recipients = super::recipients::parse(&raw.recipients, problems);
    if raw.recipients.is_empty() {
        warnings.push("snapshots.recipients", ProcessProblem::SnapshotsIncomplete);
    }
    let mut within = |name: &str, value: u32, range: std::ops::RangeInclusive<u32>, unit| {
        if !range.contains(&value) {
            problems.push(
                Key::new("snapshots").field(name),
                ProcessProblem::SnapshotRetention {
                    value,
                    unit,
                    min: *range.start(),
                    max: *range.end(),
                },
            );
        }
        value
    };
    let retention = Retention {
        six_hourly_days: within(
            "keep_six_hourly_days",
            raw.keep_six_hourly_days,
            SIX_HOURLY_DAYS,
            "days",
        ),
        daily_days: within("keep_daily_days", raw.keep_daily_days, DAILY_DAYS, "days"),
        weekly_weeks: within(
            "keep_weekly_weeks",
            raw.keep_weekly_weeks,
            WEEKLY_WEEKS,
            "weeks",
        ),
        monthly_months: within(
            "keep_monthly_months",
            raw.keep_monthly_months,
            MONTHLY_MONTHS,
            "months",
        ),
    };
    let every = raw
        .every
        .as_deref()
        .and_then(|value| match humantime::parse_duration(value) {
            Ok(every) if EVERY.contains(&every) => Some(every),
            Ok(_) => {
                problems.push("snapshots.every", ProcessProblem::SnapshotEvery);
                None
            }
            Err(_) => {
                problems.push("snapshots.every", ProblemKind::Duration(value.to_owned()));
                None
            }
        });
    SnapshotSettings {
        dir: raw.dir.clone(),
        recipients,
        every,
        retention,
    }
}
