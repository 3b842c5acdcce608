//! `portcullis access-report`: the periodic review of who reached which internal tool or tunnel
//! target, built from the audit trail: per user the routes and tunnels used, requests and
//! tunnels opened, last access and denials; the configured users who used nothing (candidates
//! for revocation); the grants nobody used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

mod databases;

pub use databases::{DatabaseChanges, Databases};

use crate::audit::{AuditRecord, Decision, Timestamp};
use crate::config::Config;
use crate::daily::utc_date;

/// The review for one period.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Start of the period.
    pub since: Timestamp,
    /// Everyone seen in the trail, by name.
    pub users: BTreeMap<String, UserActivity>,
    /// Configured users with no allowed access in the period.
    pub idle_users: Vec<String>,
    /// `route: grant` entries no allowed access used.
    pub unused_grants: Vec<String>,
    /// Access requests made, decided or ended in the period, by number.
    pub access_requests: BTreeMap<u64, RequestActivity>,
    /// Through database tunnels: by tunnel and employee, the changes made.
    pub databases: Databases,
}

/// One access request, as its audit lines tell it.
#[derive(Debug, Default, Serialize)]
pub struct RequestActivity {
    /// Who it is for.
    pub user: String,
    /// The route or tunnel.
    pub target: String,
    /// Why it was asked for.
    pub reason: String,
    /// Its latest line: `requested`, `approved`, `denied` or `expired`.
    pub state: String,
    /// The approver who approved or denied it.
    pub decided_by: Option<String>,
    /// When its grant ends.
    pub until: Option<Timestamp>,
    /// Requests and tunnels it let through.
    pub used: u64,
}

/// One person's activity.
#[derive(Debug, Default, Serialize)]
pub struct UserActivity {
    /// Routes and tunnels reached.
    pub routes: BTreeSet<String>,
    /// Allowed requests and tunnels opened.
    pub requests: u64,
    /// Time of the last allowed request or tunnel.
    pub last_access: Option<Timestamp>,
    /// Denied requests and failed second factors.
    pub denials: u64,
}

impl UserActivity {
    fn allowed(&mut self, route: &str, ts: Timestamp) {
        self.requests += 1;
        self.routes.insert(route.to_owned());
        if self.last_access.is_none_or(|last| last < ts) {
            self.last_access = Some(ts);
        }
    }
}

/// Reads the audit files in `dir` covering the last `period`.
pub fn read_audit(dir: &Path, period: Duration, now: SystemTime) -> (Timestamp, Vec<AuditRecord>) {
    let start = now - period;
    let since = Timestamp(start);
    let first_day = utc_date(start);
    let mut records = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (since, records);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(date) = name
            .strip_prefix("audit-")
            .and_then(|n| n.strip_suffix(".jsonl"))
        else {
            continue;
        };
        if date < first_day.as_str() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        records.extend(
            text.lines()
                .filter_map(|line| serde_json::from_str::<AuditRecord>(line).ok())
                .filter(|r| match r {
                    AuditRecord::Access { ts, .. }
                    | AuditRecord::Denied { ts, .. }
                    | AuditRecord::TunnelOpened { ts, .. }
                    | AuditRecord::AccessRequest { ts, .. } => *ts >= since,
                    AuditRecord::DbStatement(line) => line.ts >= since,
                    AuditRecord::DbSession(line) => line.ts >= since,
                    _ => false,
                }),
        );
    }
    (since, records)
}

/// Builds the review of `records` against the grants in `config`.
pub fn build(config: &Config, since: Timestamp, records: &[AuditRecord]) -> Report {
    let mut report = Report {
        since,
        users: BTreeMap::new(),
        idle_users: Vec::new(),
        unused_grants: Vec::new(),
        access_requests: BTreeMap::new(),
        databases: Databases::new(),
    };
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    // Read before or after the request's own lines: the trail's files come in any order.
    let mut uses = Vec::new();
    for record in records {
        match record {
            AuditRecord::Access {
                ts,
                user,
                route,
                decision,
                reason,
                ..
            } => {
                let activity = report.users.entry(user.clone()).or_default();
                match decision {
                    Decision::Allowed => {
                        activity.allowed(route, *ts);
                        used.insert((user.clone(), route.clone()));
                        uses.extend(request_named(reason));
                    }
                    Decision::MfaFailed => activity.denials += 1,
                    Decision::MfaPassed | Decision::MfaLocked => {}
                }
            }
            AuditRecord::TunnelOpened {
                ts,
                user,
                tunnel,
                reason,
                ..
            } => {
                report
                    .users
                    .entry(user.clone())
                    .or_default()
                    .allowed(tunnel, *ts);
                used.insert((user.clone(), tunnel.clone()));
                uses.extend(request_named(reason));
            }
            AuditRecord::AccessRequest {
                action,
                id,
                user,
                target,
                until,
                by,
                reason,
                ..
            } => {
                let request = report.access_requests.entry(*id).or_default();
                request.user.clone_from(user);
                request.target.clone_from(target);
                request.state.clone_from(action);
                if !reason.is_empty() {
                    request.reason.clone_from(reason);
                }
                if matches!(action.as_str(), "approved" | "denied") {
                    request.decided_by = Some(by.clone());
                }
                if until.is_some() {
                    request.until = *until;
                }
            }
            AuditRecord::Denied { user, count, .. } => {
                report.users.entry(user.clone()).or_default().denials += count;
            }
            AuditRecord::DbStatement(line) => databases::statement(&mut report.databases, line),
            AuditRecord::DbSession(line) => databases::session(&mut report.databases, line),
            AuditRecord::TunnelClosed { .. }
            | AuditRecord::Config { .. }
            | AuditRecord::Admin { .. }
            | AuditRecord::AcmeOrder { .. }
            | AuditRecord::Enrolment { .. }
            | AuditRecord::Snapshot { .. }
            | AuditRecord::Restore { .. }
            | AuditRecord::SnapshotPruned { .. }
            | AuditRecord::SnapshotFailed { .. }
            | AuditRecord::SnapshotSkipped { .. }
            | AuditRecord::RetentionHeld { .. } => {}
        }
    }
    for id in uses {
        if let Some(request) = report.access_requests.get_mut(&id) {
            request.used += 1;
        }
    }
    let Some(gateway) = &config.gateway else {
        return report;
    };
    report.idle_users = gateway
        .users
        .keys()
        .filter(|name| report.users.get(*name).is_none_or(|a| a.requests == 0))
        .cloned()
        .collect();
    let routes = config
        .routes
        .iter()
        .filter_map(|route| Some((route.name(), route.access.as_ref()?)));
    let tunnels = config.tunnels.iter().map(|t| (t.name(), &t.access));
    for (name, access) in routes.chain(tunnels) {
        for grant in &access.allow {
            let exercised = gateway.users.iter().any(|(user, settings)| {
                grant.admits(user, &settings.groups) && used.contains(&(user.clone(), name.clone()))
            });
            if !exercised {
                report.unused_grants.push(format!("{name}: {grant}"));
            }
        }
    }
    report
}

/// The access request an admission's `reason` names, if one does.
fn request_named(reason: &str) -> Option<u64> {
    reason
        .rsplit_once("access request ")
        .and_then(|(_, id)| id.parse().ok())
}

impl Report {
    /// The review as a terminal table.
    pub fn to_text(&self) -> String {
        let mut out = format!("Access review since {}\n\n", self.since);
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>8}  {:<24}  routes",
            "user", "requests", "denials", "last access"
        );
        for (user, a) in &self.users {
            let routes: Vec<&str> = a.routes.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "{user:<16} {:>8} {:>8}  {:<24}  {}",
                a.requests,
                a.denials,
                a.last_access
                    .map_or_else(|| "never".to_owned(), |t| t.to_string()),
                routes.join(", ")
            );
        }
        let section = |title: &str, items: &[String]| {
            let body = if items.is_empty() {
                "  none\n".to_owned()
            } else {
                items.iter().map(|i| format!("  {i}\n")).collect()
            };
            format!("\n{title}\n{body}")
        };
        out + &section(
            "Users with no access in this period (candidates for revocation):",
            &self.idle_users,
        ) + &section("Grants nobody used in this period:", &self.unused_grants)
            + &section("Access requests:", &self.request_lines())
            + &section(
                "Database changes, by tunnel and employee:",
                &databases::lines(&self.databases),
            )
    }

    fn request_lines(&self) -> Vec<String> {
        self.access_requests
            .iter()
            .map(|(id, r)| {
                let mut line = format!("#{id} {} {}: {}", r.user, r.target, r.state);
                if let Some(by) = &r.decided_by {
                    let _ = write!(line, " by {by}");
                }
                if let Some(until) = r.until {
                    let _ = write!(line, ", until {until}");
                }
                let _ = write!(line, ", used {} times; reason: {}", r.used, r.reason);
                line
            })
            .collect()
    }
}
