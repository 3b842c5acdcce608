//! `portcullis employees list`: each person with their groups, every certificate issued to
//! them (serial, expiry, revoked or not) and when the audit trail last saw them admitted.
//! People the register knows but the config no longer names are listed too: a certificate
//! outlives a deleted config entry.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::register::{Register, seconds};
use crate::audit::{AuditRecord, Decision, Timestamp};
use crate::config::raw::RawGateway;

/// One person.
#[derive(Debug, Serialize)]
pub(super) struct Person {
    pub(super) name: String,
    pub(super) groups: Vec<String>,
    /// Whether `[gateway.users]` names them.
    pub(super) in_config: bool,
    /// Whether they have a TOTP secret file.
    pub(super) totp: bool,
    /// The last admission (request or tunnel) the audit trail holds.
    pub(super) last_use: Option<Timestamp>,
    /// Newest first.
    pub(super) certificates: Vec<Certificate>,
}

/// One certificate of theirs.
#[derive(Debug, Serialize)]
pub(super) struct Certificate {
    pub(super) serial: String,
    pub(super) fingerprint: String,
    pub(super) not_after: Option<Timestamp>,
    pub(super) state: State,
    pub(super) revoked_at: Option<Timestamp>,
}

/// Whether a certificate still opens the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum State {
    Valid,
    Expired,
    Revoked,
}

/// Everyone, by name.
pub(super) fn people(
    gateway: &RawGateway,
    register: &Register,
    records: &[AuditRecord],
    now: SystemTime,
) -> Vec<Person> {
    let mut last_use: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for record in records {
        let (user, ts) = match record {
            AuditRecord::Access {
                user,
                ts,
                decision: Decision::Allowed | Decision::MfaPassed,
                ..
            }
            | AuditRecord::TunnelOpened { user, ts, .. } => (user.as_str(), *ts),
            _ => continue,
        };
        let last = last_use.entry(user).or_insert(ts);
        *last = (*last).max(ts);
    }
    let mut names: Vec<&str> = gateway.users.keys().map(String::as_str).collect();
    for entry in &register.certificates {
        if entry.user != "-" && !names.contains(&entry.user.as_str()) {
            names.push(&entry.user);
        }
    }
    names.sort_unstable();
    names
        .into_iter()
        .map(|name| {
            let configured = gateway.users.get(name);
            Person {
                name: name.to_owned(),
                groups: configured.map(|u| u.groups.clone()).unwrap_or_default(),
                in_config: configured.is_some(),
                totp: configured.is_some_and(|u| u.totp_secret_file.is_some()),
                last_use: last_use.get(name).copied(),
                certificates: register
                    .of(name)
                    .map(|entry| {
                        let expired = entry.not_after.is_some_and(|until| until <= seconds(now));
                        Certificate {
                            serial: entry.serial.clone(),
                            fingerprint: entry.fingerprint.clone(),
                            not_after: entry.not_after.map(timestamp),
                            state: match (entry.revoked_at, expired) {
                                (Some(_), _) => State::Revoked,
                                (None, true) => State::Expired,
                                (None, false) => State::Valid,
                            },
                            revoked_at: entry.revoked_at.map(timestamp),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The table `list` prints.
pub(super) fn text(people: &[Person]) -> String {
    let mut out = String::new();
    for person in people {
        let groups = if person.groups.is_empty() {
            "-".to_owned()
        } else {
            person.groups.join(",")
        };
        let last = person
            .last_use
            .map_or_else(|| "never".to_owned(), |ts| ts.to_string());
        let _ = writeln!(
            out,
            "{}  groups: {groups}  totp: {}  last use: {last}{}",
            person.name,
            if person.totp { "yes" } else { "no" },
            if person.in_config {
                ""
            } else {
                "  (not in [gateway.users])"
            }
        );
        for cert in &person.certificates {
            let until = cert
                .not_after
                .map_or_else(|| "?".to_owned(), |ts| ts.to_string());
            let state = match (cert.state, cert.revoked_at) {
                (State::Revoked, Some(at)) => format!("revoked {at}"),
                (State::Valid, _) => "valid".to_owned(),
                (State::Expired, _) | (State::Revoked, None) => "expired".to_owned(),
            };
            let _ = writeln!(out, "  {}  until {until}  {state}", cert.serial);
        }
    }
    out
}

fn timestamp(seconds: u64) -> Timestamp {
    Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}
