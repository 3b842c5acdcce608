//! The audit trail: every decision on an internal route, every tunnel opened and closed, every
//! config change, every admin request and every snapshot, one JSON line each in `audit-YYYY-MM-DD.jsonl` beside the access log, under the same
//! retention. Employees' identities belong here and only here.
//!
//! Requests never wait for it: lines go through a bounded channel to a writer thread; when it
//! is full (a flood the writer cannot keep up with), a line is dropped and counted in
//! [`LogHealth`] as for the access log, never waited for. What matters (allowed requests,
//! second-factor outcomes, lockouts, config changes) is written line by line; each such line
//! stands for work an attacker cannot repeat cheaply (a granted certificate, a guess the
//! lockout counts). Denials and admin requests are noise any client or local process can make,
//! so they are aggregated: one [`AuditRecord::Denied`] line per route, user, reason and
//! minute, and one [`AuditRecord::Admin`] line per caller, endpoint, status and minute, each
//! with a count.

mod database;
mod record;
mod tunnel;
mod writer;

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use database::{DbSession, DbSessionNames, DbStatement, StatementOutcome};
pub use record::{
    AcmeIdentifier, AcmeOutcome, AcmeProblem, AcmeSubproblem, AuditRecord, Decision, Outcome,
    Timestamp, Trigger,
};
pub use tunnel::{ClosedBy, TunnelAudit};
use writer::{Message, QUEUE_CAPACITY, Writer};

use crate::access_log::{RouteLabel, logged_path};
use crate::config::{LogSettings, PathLogging};
use crate::daily::{DailyFile, LogHealth};

/// The audit trail's front: cheap, non-blocking sends to the writer thread.
#[derive(Debug)]
pub struct Audit {
    sender: Option<SyncSender<Message>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathLogging,
    health: Arc<LogHealth>,
}

impl Audit {
    /// The audit trail beside the access log in `[log] dir` (none: lines are dropped, as in
    /// tests without logs), under the same retention.
    pub fn new(settings: &LogSettings) -> std::io::Result<Self> {
        let Some(dir) = settings.dir.clone() else {
            return Ok(Self {
                sender: None,
                writer: Mutex::new(None),
                path: settings.path,
                health: Arc::default(),
            });
        };
        let (sender, receiver) = mpsc::sync_channel(QUEUE_CAPACITY);
        let health = Arc::new(LogHealth::default());
        let file = DailyFile::new(
            dir,
            "audit",
            settings.retention_days,
            settings.buffer_lines,
            health.clone(),
        );
        let writer = std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || Writer::new(file).run(&receiver))?;
        Ok(Self {
            sender: Some(sender),
            writer: Mutex::new(Some(writer)),
            path: settings.path,
            health,
        })
    }

    /// Lines held for the disk and lines lost. Lost audit lines are never silent: they are
    /// counted in `/metrics`, summarised in the operational log, and `/readyz` answers 503
    /// while lines cannot be written.
    pub fn health(&self) -> &LogHealth {
        &self.health
    }

    /// What an audit line writes of the path of a request on `route`, as the access log does.
    pub fn logged_path(&self, path: &str, route: &RouteLabel) -> String {
        logged_path(self.path, Some(path), Some(route))
    }

    /// Queues without waiting; a full queue drops the line and counts it.
    fn send(&self, message: Message) {
        if let Some(sender) = &self.sender
            && let Err(TrySendError::Full(_)) = sender.try_send(message)
        {
            self.health.dropped(1);
        }
    }

    /// Queues one line.
    pub fn record(&self, record: AuditRecord) {
        self.send(Message::Record(record));
    }

    /// Counts one refusal on `route` into the minute's [`AuditRecord::Denied`] line.
    pub fn deny(&self, route: &str, user: &str, reason: &'static str) {
        self.send(Message::Denied {
            route: route.to_owned(),
            user: user.to_owned(),
            reason,
        });
    }

    /// Counts one admin request into the minute's [`AuditRecord::Admin`] line of its caller
    /// (`-` on loopback), endpoint and status.
    pub fn admin(&self, user: &str, method: &str, path: &str, status: u16) {
        let key = (user.to_owned(), method.to_owned(), path.to_owned(), status);
        self.send(Message::Admin(key));
    }

    /// Writes everything queued, the open minute's aggregates included, and stops the writer.
    pub fn close(&self) {
        // Waits for room: the last line must get through.
        if let Some(sender) = &self.sender {
            let _ = sender.send(Message::Close);
        }
        if let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = writer.join();
        }
    }
}
