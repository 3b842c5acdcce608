//! The database part of the review: per database tunnel, who changed what kinds of statements
//! how often, from the `db_statement` and `db_session` lines (joined to the tunnel's own lines
//! by id in the trail itself).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::{DbSession, DbStatement, StatementOutcome};

/// One employee's changes through one database tunnel.
#[derive(Debug, Default, Serialize)]
pub struct DatabaseChanges {
    /// Database sessions opened.
    pub sessions: u64,
    /// Statements read, counted.
    pub reads: u64,
    /// Changes the database ran, by kind (`insert`, `update`, `create`, `unknown`, ...).
    pub executed: BTreeMap<String, u64>,
    /// Changes that failed.
    pub failed: u64,
    /// Changes the gateway refused (a read-only tunnel).
    pub refused: u64,
    /// Changes sent and never answered.
    pub unanswered: u64,
}

/// By tunnel, then by employee.
pub type Databases = BTreeMap<String, BTreeMap<String, DatabaseChanges>>;

fn of<'a>(databases: &'a mut Databases, tunnel: &str, user: &str) -> &'a mut DatabaseChanges {
    databases
        .entry(tunnel.to_owned())
        .or_default()
        .entry(user.to_owned())
        .or_default()
}

/// Counts one statement line.
pub fn statement(databases: &mut Databases, line: &DbStatement) {
    let changes = of(databases, &line.session.tunnel, &line.session.user);
    match line.outcome {
        StatementOutcome::Executed if line.kind == "read" => {}
        StatementOutcome::Executed => {
            *changes.executed.entry(line.kind.clone()).or_default() += 1;
        }
        StatementOutcome::Failed => changes.failed += 1,
        StatementOutcome::Refused => changes.refused += 1,
        StatementOutcome::Unanswered => changes.unanswered += 1,
    }
}

/// Counts one session line.
pub fn session(databases: &mut Databases, line: &DbSession) {
    let changes = of(databases, &line.session.tunnel, &line.session.user);
    changes.sessions += 1;
    changes.reads += line.reads;
}

/// The section's lines: a tunnel, then one line per employee.
pub fn lines(databases: &Databases) -> Vec<String> {
    let mut out = Vec::new();
    for (tunnel, users) in databases {
        out.push(tunnel.clone());
        for (user, c) in users {
            let kinds: Vec<String> = c.executed.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let kinds = if kinds.is_empty() {
                "no changes".to_owned()
            } else {
                kinds.join(", ")
            };
            out.push(format!(
                "  {user}: {kinds}; failed {}, refused {}, unanswered {}; {} sessions, {} reads",
                c.failed, c.refused, c.unanswered, c.sessions, c.reads
            ));
        }
    }
    out
}
