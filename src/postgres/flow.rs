//! Which statement each of the database's answers is for. Every client message the server
//! answers is queued before it is passed on, so an answer always finds its entry: the server
//! answers in order, and after an error skips to the next `Sync` (extended protocol) or the
//! end of the `Query` (simple protocol), as "Message Flow" in PostgreSQL's docs describes.

use std::collections::VecDeque;
use std::sync::Arc;

use super::statements::{Classified, Kind};

/// A client message waiting for its answer.
#[derive(Debug)]
pub enum Pending {
    /// `Parse`; with the statement when the gateway refused it (and sent one that fails).
    Parse(Option<Arc<Classified>>),
    Bind,
    Describe,
    Close,
    Sync,
    /// `Execute` of a portal, with its statement when the gateway saw it prepared.
    Execute(Option<Arc<Classified>>),
    /// A protocol-level `FunctionCall`.
    Function(Arc<Classified>),
    /// A simple `Query`: its statements, answered one `CommandComplete` each, then
    /// `ReadyForQuery`; `refused` when the gateway sent one that fails instead.
    Query {
        statements: Vec<Arc<Classified>>,
        next: usize,
        refused: bool,
    },
}

/// How a statement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Executed {
        rows: Option<u64>,
    },
    Failed {
        sqlstate: Option<String>,
    },
    Refused,
    /// Sent, and the session ended before the database answered.
    Unanswered,
}

/// A statement worth an audit line.
#[derive(Debug)]
pub struct Done {
    pub statement: Arc<Classified>,
    pub outcome: Outcome,
}

/// The answers a session waits for, and what it counted.
#[derive(Debug, Default)]
pub struct Flow {
    pending: VecDeque<Pending>,
    log_reads: bool,
    pub reads: u64,
    pub changes: u64,
    pub refused: u64,
}

impl Flow {
    /// A flow that writes a line for every read too when `log_reads`.
    pub fn new(log_reads: bool) -> Self {
        Self {
            log_reads,
            ..Self::default()
        }
    }

    pub fn push(&mut self, pending: Pending) {
        self.pending.push_back(pending);
    }

    fn record(&mut self, statement: &Arc<Classified>, outcome: Outcome, out: &mut Vec<Done>) {
        match (&outcome, statement.kind) {
            (Outcome::Refused, _) => self.refused += 1,
            (_, Kind::Read) => {
                self.reads += 1;
                if !self.log_reads {
                    return;
                }
            }
            _ => self.changes += 1,
        }
        out.push(Done {
            statement: statement.clone(),
            outcome,
        });
    }

    /// An answer that only moves the flow on: `ParseComplete`, `BindComplete`,
    /// `CloseComplete`, `NoData`, `RowDescription`, `EmptyQueryResponse`, `PortalSuspended`,
    /// `FunctionCallResponse`.
    pub fn on_reply(&mut self, tag: u8) -> Vec<Done> {
        let mut out = Vec::new();
        let pops = match (tag, self.pending.front()) {
            (b'1', Some(Pending::Parse(_)))
            | (b'2', Some(Pending::Bind))
            | (b'3', Some(Pending::Close))
            | (b'n' | b'T', Some(Pending::Describe))
            | (b'I', Some(Pending::Execute(_))) => true,
            (b's' | b'V', Some(Pending::Execute(Some(s)) | Pending::Function(s))) => {
                let s = s.clone();
                self.record(&s, Outcome::Executed { rows: None }, &mut out);
                true
            }
            (b's' | b'V', Some(Pending::Execute(None))) => true,
            _ => false,
        };
        if pops {
            self.pending.pop_front();
        }
        out
    }

    /// `CommandComplete` with its command tag (`UPDATE 3`).
    pub fn on_complete(&mut self, tag: &str) -> Vec<Done> {
        let rows = rows(tag);
        let mut out = Vec::new();
        match self.pending.front_mut() {
            Some(Pending::Execute(statement)) => {
                let statement = statement.clone();
                self.pending.pop_front();
                if let Some(s) = statement {
                    self.record(&s, Outcome::Executed { rows }, &mut out);
                }
            }
            Some(Pending::Query {
                statements, next, ..
            }) => {
                let statement = statements.get(*next).cloned();
                *next += 1;
                if let Some(s) = statement {
                    self.record(&s, Outcome::Executed { rows }, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    /// `ErrorResponse` with its SQLSTATE: the statement it ends failed, or was the one the
    /// gateway refused (then `Some(kind)`: the answer is to be replaced by the refusal).
    pub fn on_error(&mut self, sqlstate: Option<String>) -> (Option<Kind>, Vec<Done>) {
        let mut out = Vec::new();
        let failed = Outcome::Failed { sqlstate };
        let Some(front) = self.pending.pop_front() else {
            return (None, out);
        };
        let mut refusal = None;
        // An error before the statement ran (its Parse or Bind) is put on the first
        // statement it kept from running.
        let mut owed = None;
        match front {
            Pending::Query {
                statements,
                next,
                refused,
            } => {
                if refused {
                    for s in statements.iter().filter(|s| s.kind.changes()) {
                        refusal.get_or_insert(s.kind);
                        self.record(s, Outcome::Refused, &mut out);
                    }
                } else if let Some(s) = statements.get(next) {
                    self.record(s, failed, &mut out);
                }
                // Its ReadyForQuery ends it.
                self.pending.push_front(Pending::Query {
                    statements: Vec::new(),
                    next: 0,
                    refused: false,
                });
                return (refusal, out);
            }
            Pending::Parse(Some(s)) => {
                refusal = Some(s.kind);
                self.record(&s, Outcome::Refused, &mut out);
            }
            Pending::Execute(Some(s)) | Pending::Function(s) => self.record(&s, failed, &mut out),
            Pending::Sync => {
                self.pending.push_front(Pending::Sync);
                return (None, out);
            }
            _ => owed = Some(failed),
        }
        while let Some(pending) = self.pending.front() {
            match pending {
                Pending::Sync | Pending::Query { .. } => break,
                Pending::Execute(Some(s)) => {
                    if let Some(failed) = owed.take() {
                        let s = s.clone();
                        self.record(&s, failed, &mut out);
                    }
                }
                _ => {}
            }
            self.pending.pop_front();
        }
        (refusal, out)
    }

    /// `ReadyForQuery`: the end of a `Query`, or the answer to a `Sync`.
    pub fn on_ready(&mut self) {
        while let Some(pending) = self.pending.pop_front() {
            if matches!(
                pending,
                Pending::Sync | Pending::Query { .. } | Pending::Function(_)
            ) {
                break;
            }
        }
    }

    /// The session ended: the changes sent and never answered.
    pub fn finish(&mut self) -> Vec<Done> {
        let mut out = Vec::new();
        while let Some(pending) = self.pending.pop_front() {
            match pending {
                Pending::Execute(Some(s)) | Pending::Function(s) if s.kind.changes() => {
                    self.record(&s, Outcome::Unanswered, &mut out);
                }
                Pending::Parse(Some(s)) => self.record(&s, Outcome::Refused, &mut out),
                Pending::Query {
                    statements,
                    next,
                    refused,
                } => {
                    let outcome = if refused {
                        Outcome::Refused
                    } else {
                        Outcome::Unanswered
                    };
                    for s in statements.iter().skip(next).filter(|s| s.kind.changes()) {
                        self.record(s, outcome.clone(), &mut out);
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// The row count a command tag ends with (`INSERT 0 5`, `UPDATE 3`, `COPY 10`), for the
/// commands that report one.
fn rows(tag: &str) -> Option<u64> {
    let mut words = tag.split_ascii_whitespace();
    let command = words.next()?;
    let counted = matches!(
        command,
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "SELECT" | "COPY" | "FETCH" | "MOVE"
    );
    counted.then(|| words.last()?.parse().ok()).flatten()
}

#[cfg(test)]
mod tests;
