//! What a statement does, judged from its syntax tree (sqlparser's PostgreSQL dialect): a read,
//! a change of data, schema or grants, or something that may change anything (`CALL`, `DO`,
//! `EXECUTE`, a function the list below does not know). Whatever is not known to be a read is
//! a change: a read-only tunnel refuses it and the audit trail has a line for it.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use serde::Serialize;
use sqlparser::ast::{
    CopyTarget, Expr, ObjectName, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::normal::{digest, normalise};

/// What a statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Reads, or changes only the session (`SET`, `BEGIN`, `COMMIT`, ...): counted, not logged.
    Read,
    Insert,
    Update,
    Delete,
    Merge,
    Truncate,
    /// `COPY ... FROM`: rows in.
    CopyFrom,
    /// `COPY ... TO 'file'` or `PROGRAM`: the server writes a file or runs a command.
    CopyOut,
    Create,
    Alter,
    Drop,
    Grant,
    Revoke,
    /// May change anything: `CALL`, `DO`, `EXECUTE`, a function not known to be read-only, a
    /// protocol-level function call.
    Unknown,
    /// Could not be parsed: may be anything.
    Unparsed,
    /// Another change (`VACUUM`, `COMMENT`, `REFRESH`, ...).
    Other,
}

impl Kind {
    /// Whether it may change anything: all but reads.
    pub fn changes(self) -> bool {
        self != Self::Read
    }

    /// How the audit line and the refusal name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Merge => "merge",
            Self::Truncate => "truncate",
            Self::CopyFrom => "copy_from",
            Self::CopyOut => "copy_out",
            Self::Create => "create",
            Self::Alter => "alter",
            Self::Drop => "drop",
            Self::Grant => "grant",
            Self::Revoke => "revoke",
            Self::Unknown => "unknown",
            Self::Unparsed => "unparsed",
            Self::Other => "other",
        }
    }
}

/// One statement as the audit trail may keep it: its kind, the tables it names, its shape
/// without values and that shape's digest. An unparsed statement keeps only a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub kind: Kind,
    pub tables: Vec<String>,
    pub normalised: Option<String>,
    pub digest: Option<String>,
}

/// The statements of one `Query` or `Parse` message, in order; one [`Kind::Unparsed`] when the
/// text does not parse, or when what it means depends on a setting the gateway cannot know
/// (below). The shape and digest of a read are kept only when `keep_reads`: reads are counted,
/// not written, unless `log_reads` says so.
pub fn classify(sql: &str, keep_reads: bool) -> Vec<Classified> {
    let unparsed = || {
        let normalised = normalise(sql);
        // sqlparser has no `DO`: an anonymous code block, which may do anything.
        let code_block = normalised.as_deref().is_some_and(|n| {
            n.split_whitespace()
                .next()
                .is_some_and(|first| first.eq_ignore_ascii_case("DO"))
        });
        vec![Classified {
            kind: if code_block {
                Kind::Unknown
            } else {
                Kind::Unparsed
            },
            tables: Vec::new(),
            digest: normalised.as_deref().map(digest),
            normalised: None,
        }]
    };
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return unparsed();
    };
    // With `standard_conforming_strings = off` (a client may set it), a backslash escapes a
    // quote in '...' and the string ends elsewhere than this tokenizer (which follows the
    // default, on) says: `SELECT 'a\', ' ; DELETE FROM t; -- '` is one read here and a DELETE
    // there. The two readings agree up to the first backslash in such a string, so a
    // statement without one means the same either way, and one with one is not judged.
    let ambiguous = tokens.iter().any(|t| {
        matches!(t, Token::SingleQuotedString(text) | Token::NationalStringLiteral(text) if text.contains('\\'))
    });
    let Some(stack) = super::guard::stack_needed(&tokens).filter(|_| !ambiguous) else {
        return unparsed();
    };
    // The tree is judged, printed and dropped on the same stack: each of those recurses too.
    let judged = stacker::maybe_grow(stack, stack * 2, || {
        let statements = Parser::new(&dialect).with_tokens(tokens).parse_statements();
        let judged: Option<Vec<Classified>> = statements
            .ok()
            .map(|all| all.iter().map(|s| one(s, keep_reads)).collect());
        judged
    });
    judged.unwrap_or_else(unparsed)
}

fn one(statement: &Statement, keep_reads: bool) -> Classified {
    let mut seen = Seen::default();
    let _ = statement.visit(&mut seen);
    let kind = match (kind(statement), statement) {
        // A plan runs nothing it holds.
        (_, Statement::Explain { analyze: false, .. }) => Kind::Read,
        (Kind::Read, _) => match seen.nested_change {
            Some(nested) => nested,
            None if seen.unknown_call => Kind::Unknown,
            None => Kind::Read,
        },
        (kind, _) => kind,
    };
    let normalised = (keep_reads || kind.changes())
        .then(|| normalise(&statement.to_string()))
        .flatten();
    Classified {
        kind,
        tables: seen.tables.into_iter().collect(),
        digest: normalised.as_deref().map(digest),
        normalised,
    }
}

/// The kind of the statement itself; what it holds (a data-changing `WITH`, a function) is
/// judged by [`Seen`].
fn kind(statement: &Statement) -> Kind {
    match statement {
        Statement::Query(query) => match query.body.as_ref() {
            SetExpr::Select(select) if select.into.is_some() => Kind::Create,
            _ => Kind::Read,
        },
        Statement::Explain {
            analyze, statement, ..
        } => match kind(statement) {
            // EXPLAIN ANALYZE runs the statement.
            inner if *analyze => inner,
            _ => Kind::Read,
        },
        // A read-only session is read-only in the database too
        // (`default_transaction_read_only`, set at its start): changing that is a change.
        Statement::Set(_) | Statement::StartTransaction { .. } | Statement::Reset(_)
            if read_write(statement) =>
        {
            Kind::Other
        }
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::Set(_)
        | Statement::Reset(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Declare { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. } => Kind::Read,
        Statement::Prepare { statement, .. } => kind(statement),
        Statement::Insert(_) => Kind::Insert,
        Statement::Update(_) => Kind::Update,
        Statement::Delete(_) => Kind::Delete,
        Statement::Merge(_) => Kind::Merge,
        Statement::Truncate(_) => Kind::Truncate,
        Statement::Copy { to: false, .. } => Kind::CopyFrom,
        Statement::Copy {
            target: CopyTarget::Stdout,
            ..
        } => Kind::Read,
        Statement::Copy { .. } => Kind::CopyOut,
        Statement::Grant(_) | Statement::GrantRole(_) | Statement::AlterDefaultPrivileges(_) => {
            Kind::Grant
        }
        Statement::Revoke(_) | Statement::RevokeRole(_) => Kind::Revoke,
        Statement::Call(_) | Statement::Execute { .. } => Kind::Unknown,
        other => ddl(other),
    }
}

/// Whether a `SET`, `RESET` or `BEGIN` touches whether transactions may write.
fn read_write(statement: &Statement) -> bool {
    let text = statement.to_string().to_ascii_uppercase();
    text.contains("READ_ONLY") || text.contains("READ WRITE") || text.contains("RESET ALL")
}

/// CREATE, ALTER and DROP by the name the statement prints with: sqlparser has a variant for
/// each kind of object, and a new one must not fall through as a read.
fn ddl(statement: &Statement) -> Kind {
    let text = statement.to_string();
    let first = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    match first.as_str() {
        "CREATE" => Kind::Create,
        "ALTER" => Kind::Alter,
        "DROP" => Kind::Drop,
        _ => Kind::Other,
    }
}

/// What a statement holds: the tables it names, a statement inside that changes data (`WITH x
/// AS (DELETE ...) SELECT`), and calls to functions not known to be read-only.
#[derive(Default)]
struct Seen {
    tables: BTreeSet<String>,
    nested_change: Option<Kind>,
    unknown_call: bool,
}

impl Visitor for Seen {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.tables.insert(relation.to_string());
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        // `FROM f(...)`: a function, not a table.
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = factor
        {
            self.tables.remove(&name.to_string());
            self.unknown_call |= !read_only_function(name);
        }
        if matches!(
            factor,
            TableFactor::Function { .. } | TableFactor::TableFunction { .. }
        ) {
            self.unknown_call = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            self.unknown_call |= !read_only_function(&function.name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        let inner = kind(statement);
        if inner.changes() && self.nested_change.is_none() {
            self.nested_change = Some(inner);
        }
        ControlFlow::Continue(())
    }
}

/// Built-in functions that read and compute only. Any other function may write (`nextval`,
/// `set_config`, `lo_import`, `dblink_exec`, one of the database's own), so a statement that
/// calls one is [`Kind::Unknown`].
const READ_ONLY_FUNCTIONS: &[&str] = &[
    "abs",
    "array_agg",
    "array_length",
    "avg",
    "bool_and",
    "bool_or",
    "btrim",
    "ceil",
    "ceiling",
    "char_length",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "current_database",
    "current_date",
    "current_schema",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "date_part",
    "date_trunc",
    "every",
    "exists",
    "extract",
    "floor",
    "format",
    "format_type",
    "greatest",
    "has_table_privilege",
    "json_agg",
    "jsonb_agg",
    "jsonb_build_object",
    "json_build_object",
    "least",
    "left",
    "length",
    "localtime",
    "localtimestamp",
    "lower",
    "lpad",
    "ltrim",
    "max",
    "md5",
    "min",
    "now",
    "nullif",
    "octet_length",
    "pg_backend_pid",
    "pg_get_userbyid",
    "pg_table_is_visible",
    "position",
    "replace",
    "right",
    "round",
    "row_number",
    "rank",
    "dense_rank",
    "rpad",
    "rtrim",
    "session_user",
    "split_part",
    "statement_timestamp",
    "string_agg",
    "strpos",
    "substr",
    "substring",
    "sum",
    "to_char",
    "to_date",
    "to_number",
    "to_timestamp",
    "transaction_timestamp",
    "trim",
    "trunc",
    "upper",
    "version",
];

fn read_only_function(name: &ObjectName) -> bool {
    let text = name.to_string().to_ascii_lowercase();
    let bare = text.strip_prefix("pg_catalog.").unwrap_or(&text);
    READ_ONLY_FUNCTIONS.contains(&bare)
}

#[cfg(test)]
mod tests;
