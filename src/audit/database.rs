//! The lines of a database session through a `protocol = "postgres"` tunnel: one for each
//! statement that changed or may have changed the database, and one when the session ends. They
//! keep a statement's shape and never its values: no literal, bind parameter, result or error
//! text is ever written; a failed statement keeps only its SQLSTATE.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Who a database session's lines are about, on each of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSessionNames {
    /// The tunnel's open line's id.
    pub id: String,
    /// The certificate's user: the employee.
    pub user: String,
    /// The tunnel's name.
    pub tunnel: String,
    /// The database role, from the session's startup message.
    pub db_user: String,
    /// The database, from the session's startup message.
    pub database: String,
}

/// One statement that changed, or may have changed, a database (or, with `log_reads`, a read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStatement {
    /// RFC 3339 UTC.
    pub ts: Timestamp,
    #[serde(flatten)]
    pub session: DbSessionNames,
    /// `insert`, `update`, `delete`, `create`, ..., `unknown` (may change), `unparsed`.
    pub kind: String,
    /// The tables it names.
    pub tables: Vec<String>,
    /// Its text with every literal replaced by `$n` and no comment; none when unparsed.
    pub statement: Option<String>,
    /// The first 16 hex digits of the SHA-256 of that text.
    pub digest: Option<String>,
    /// How it ended.
    pub outcome: StatementOutcome,
    /// The rows its `CommandComplete` reported.
    pub rows: Option<u64>,
    /// The SQLSTATE it failed with.
    pub sqlstate: Option<String>,
}

/// How a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementOutcome {
    /// The database ran it.
    Executed,
    /// The database refused it or it failed.
    Failed,
    /// The gateway refused it: the tunnel is read-only for its user. It never reached the
    /// database.
    Refused,
    /// Sent, and the session ended before the database answered.
    Unanswered,
}

/// The end of a database session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSession {
    /// RFC 3339 UTC.
    pub ts: Timestamp,
    #[serde(flatten)]
    pub session: DbSessionNames,
    /// Statements that only read, counted.
    pub reads: u64,
    /// Statements that changed or may have changed something.
    pub changes: u64,
    /// Statements the gateway refused.
    pub refused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditRecord;

    #[test]
    fn a_statement_line_reads_back_as_it_was_written() {
        let record = AuditRecord::DbStatement(DbStatement {
            ts: Timestamp::now(),
            session: DbSessionNames {
                id: "r1".into(),
                user: "alice".into(),
                tunnel: "gw CONNECT pg1:5432".into(),
                db_user: "app".into(),
                database: "orders".into(),
            },
            kind: "update".into(),
            tables: vec!["people".into()],
            statement: Some("UPDATE people SET a = $1".into()),
            digest: Some("0123456789abcdef".into()),
            outcome: StatementOutcome::Executed,
            rows: Some(1),
            sqlstate: None,
        });
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.starts_with(r#"{"event":"db_statement","#), "{line}");
        assert!(line.contains(r#""db_user":"app""#), "{line}");
        // Timestamps are written to the millisecond: the line read back writes the same line.
        let read: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), line);
    }
}
