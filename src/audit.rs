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

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::access_log::{RouteLabel, logged_path};
use crate::config::{LogSettings, PathLogging};
use crate::daily::{DailyFile, LogHealth, utc_date};

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditRecord {
    /// A decision on an internal route that admitted someone or judged a second factor.
    Access {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The certificate's user.
        user: String,
        /// The route's name.
        route: String,
        /// Request method.
        method: String,
        /// Masked path, no query.
        path: String,
        /// What was decided.
        decision: Decision,
        /// Why.
        reason: String,
        /// The request's `X-Request-Id`, as in its access-log line; `-` when it has none.
        #[serde(default)]
        request_id: String,
    },
    /// Requests refused on an internal route within one minute, for one user and reason.
    Denied {
        /// The first refusal of the minute, RFC 3339 UTC.
        ts: Timestamp,
        /// The certificate's user, `-` without one.
        user: String,
        /// The route's name.
        route: String,
        /// Why.
        reason: String,
        /// How many.
        count: u64,
    },
    /// A tunnel the gateway opened: who, with which certificate, to what, and why.
    TunnelOpened {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The `CONNECT` request's id: joins this line to the tunnel's close line and to the
        /// request's access-log line.
        id: String,
        /// The certificate's user.
        user: String,
        /// SHA-256 of the client certificate, hex.
        fingerprint: String,
        /// The tunnel's name (`host CONNECT target:port`).
        tunnel: String,
        /// Always `allowed`: refusals are counted as [`AuditRecord::Denied`] lines.
        decision: Decision,
        /// Why.
        reason: String,
    },
    /// The end of a tunnel opened by a [`AuditRecord::TunnelOpened`] line with the same `id`.
    TunnelClosed {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The open line's `id`.
        id: String,
        /// The certificate's user.
        user: String,
        /// The tunnel's name.
        tunnel: String,
        /// From the open decision to the close.
        duration_ms: u64,
        /// Bytes the client sent to the target.
        bytes_from_client: u64,
        /// Bytes the target sent to the client.
        bytes_to_client: u64,
        /// Who or what ended it.
        closed_by: ClosedBy,
    },
    /// A configuration load or reload.
    Config {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// What caused the load.
        trigger: Trigger,
        /// Whether it went into service.
        outcome: Outcome,
        /// SHA-256 of the file in service before.
        old_digest: String,
        /// SHA-256 of the file read.
        new_digest: String,
    },
    /// A snapshot of the proxy's own state was written.
    Snapshot {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The archive's path.
        archive: String,
        /// How many files it holds.
        files: u64,
        /// Its size.
        bytes: u64,
    },
    /// An archive the backup policy no longer keeps was deleted.
    SnapshotPruned {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The archive's path.
        archive: String,
    },
    /// Retention deleted nothing because the clock disagrees with what is on disk (see
    /// `crate::daily::ClockDoubt`): said once per doubt, by the audit trail's own sweep and by
    /// each snapshot prune.
    RetentionHeld {
        /// RFC 3339 UTC, by the doubted clock.
        ts: Timestamp,
        /// What was not pruned: `audit` files or `snapshots`.
        kind: String,
        /// Why.
        reason: String,
        /// The newest item, which the clock disagrees with.
        newest: String,
    },
    /// Something in the snapshot directory named like an archive is not a regular file:
    /// pruning leaves it alone.
    SnapshotSkipped {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// Its path.
        path: String,
    },
    /// A snapshot could not be written or pruned.
    SnapshotFailed {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// Why.
        reason: String,
    },
    /// A request to the admin listener.
    Admin {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The employee, over mutual TLS; `-` on loopback.
        #[serde(default)]
        user: String,
        /// Request method.
        method: String,
        /// Endpoint.
        path: String,
        /// Status answered.
        status: u16,
        /// Requests alike in this minute (from the first one's `ts`); 1 in lines written
        /// before admin requests were aggregated.
        #[serde(default = "one")]
        count: u64,
    },
}

fn one() -> u64 {
    1
}

/// Lines that may wait for the writer before new ones are dropped (and counted).
const QUEUE_CAPACITY: usize = 65_536;

/// A decision on an internal route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The request was let through.
    Allowed,
    /// A correct TOTP code opened an MFA session.
    MfaPassed,
    /// A wrong, expired or replayed code.
    MfaFailed,
    /// Too many wrong codes: the user is locked out for a while.
    MfaLocked,
}

/// What ended a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// The client closed its side first, or went away.
    Client,
    /// The target closed its side first.
    Upstream,
    /// The target could not be reached: the tunnel never carried a byte.
    UpstreamFailed,
    /// No byte either way for the tunnel's `idle_timeout`.
    IdleTimeout,
    /// The proxy shut down and its grace period ended.
    Shutdown,
    /// A reload no longer trusts the client certificate (revoked, CA removed).
    Revoked,
    /// The client certificate, or a revocation list it depends on, is past its time.
    Expired,
    /// Not opened: its user had `max_tunnels_per_user` open, or no connection permit was left.
    OverLimit,
    /// A reload changed the tunnel's upstream, or now asks for a second factor it was opened
    /// without.
    Reconfigured,
    /// A reload removed the tunnel, or the user's grant on it.
    GrantRemoved,
}

/// One tunnel's two lines in the audit trail: [`open`](Self::open) writes the first, and the
/// close line is written when the tunnel ends, or when this is dropped without a close (the
/// client went away before the tunnel was set up).
#[derive(Debug)]
pub struct TunnelAudit {
    audit: std::sync::Arc<Audit>,
    id: String,
    user: String,
    tunnel: String,
    opened: std::time::Instant,
    closed: Option<(ClosedBy, u64, u64)>,
    /// Whether a second factor was passed to open it.
    pub second_factor: bool,
}

impl TunnelAudit {
    /// Writes the open line of a tunnel the gateway admitted, named by its request's id;
    /// `second_factor` when a code or a second-factor session admitted it.
    pub fn open(
        audit: std::sync::Arc<Audit>,
        id: String,
        (user, fingerprint): (&str, &[u8]),
        tunnel: &str,
        reason: &str,
        second_factor: bool,
    ) -> Self {
        audit.record(AuditRecord::TunnelOpened {
            ts: Timestamp::now(),
            id: id.clone(),
            user: user.to_owned(),
            fingerprint: hex::encode(fingerprint),
            tunnel: tunnel.to_owned(),
            decision: Decision::Allowed,
            reason: reason.to_owned(),
        });
        Self {
            audit,
            id,
            user: user.to_owned(),
            tunnel: tunnel.to_owned(),
            opened: std::time::Instant::now(),
            closed: None,
            second_factor,
        }
    }

    /// Writes the close line: who ended the tunnel and the bytes each way.
    pub fn close(mut self, by: ClosedBy, bytes_from_client: u64, bytes_to_client: u64) {
        self.closed = Some((by, bytes_from_client, bytes_to_client));
    }
}

impl Drop for TunnelAudit {
    fn drop(&mut self) {
        let (closed_by, bytes_from_client, bytes_to_client) =
            self.closed.unwrap_or((ClosedBy::Client, 0, 0));
        self.audit.record(AuditRecord::TunnelClosed {
            ts: Timestamp::now(),
            id: std::mem::take(&mut self.id),
            user: std::mem::take(&mut self.user),
            tunnel: std::mem::take(&mut self.tunnel),
            duration_ms: u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_from_client,
            bytes_to_client,
            closed_by,
        });
    }
}

/// What caused a configuration load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The process started.
    Startup,
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin listener.
    Admin,
}

/// Whether a loaded configuration went into service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It serves.
    Applied,
    /// It was invalid; the previous one serves on.
    Refused,
}

/// A moment as audit lines write it: RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_rfc3339_millis(self.0).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

enum Message {
    Record(AuditRecord),
    Denied {
        route: String,
        user: String,
        reason: &'static str,
    },
    Admin(AdminKey),
    Close,
}

/// An admin request as aggregated: caller, method, endpoint, status.
type AdminKey = (String, String, String, u16);

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

type DenialKey = (String, String, &'static str);

struct Writer {
    file: DailyFile,
    denials: BTreeMap<DenialKey, (Timestamp, u64)>,
    admin: BTreeMap<AdminKey, (Timestamp, u64)>,
    minute: u64,
}

impl Writer {
    fn new(file: DailyFile) -> Self {
        Self {
            file,
            denials: BTreeMap::new(),
            admin: BTreeMap::new(),
            minute: current_minute(),
        }
    }

    fn run(mut self, receiver: &Receiver<Message>) {
        loop {
            if let Some(held) = self.file.sweep_if_due() {
                self.write(&AuditRecord::RetentionHeld {
                    ts: Timestamp::now(),
                    kind: "audit".to_owned(),
                    reason: held.doubt.reason().to_owned(),
                    newest: held.newest,
                });
            }
            let first = receiver.recv_timeout(Duration::from_secs(1));
            if current_minute() != self.minute {
                self.flush_denials();
                self.minute = current_minute();
            }
            let mut next = match first {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Message::Close),
            };
            // Whatever else is queued goes out in the same batch, then one flush.
            while let Some(message) = next {
                match message {
                    Message::Record(record) => self.write(&record),
                    Message::Denied {
                        route,
                        user,
                        reason,
                    } => {
                        self.denials
                            .entry((route, user, reason))
                            .or_insert_with(|| (Timestamp::now(), 0))
                            .1 += 1;
                    }
                    Message::Admin(key) => {
                        self.admin
                            .entry(key)
                            .or_insert_with(|| (Timestamp::now(), 0))
                            .1 += 1;
                    }
                    Message::Close => {
                        self.flush_denials();
                        self.file.close();
                        return;
                    }
                }
                next = receiver.try_recv().ok();
            }
            self.file.flush();
            self.file.report_drops_if_due();
        }
    }

    fn flush_denials(&mut self) {
        for ((user, method, path, status), (ts, count)) in std::mem::take(&mut self.admin) {
            self.write(&AuditRecord::Admin {
                ts,
                user,
                method,
                path,
                status,
                count,
            });
        }
        for ((route, user, reason), (ts, count)) in std::mem::take(&mut self.denials) {
            self.write(&AuditRecord::Denied {
                ts,
                user,
                route,
                reason: reason.to_owned(),
                count,
            });
        }
    }

    fn write(&mut self, record: &AuditRecord) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        self.file.write(&utc_date(SystemTime::now()), line);
    }
}

fn current_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_unknown_decisions_are_not_read() {
        let line = r#"{"event":"access","ts":"2026-12-02T04:15:00.123Z","user":"alice","route":"tools/","method":"GET","path":"/","decision":"mfa_passed","reason":"r","request_id":"01a236e9-1b51-7fa1-adcc-62c8e671eab8"}"#;
        let record: AuditRecord = serde_json::from_str(line).unwrap();
        let AuditRecord::Access { ts, decision, .. } = &record else {
            panic!("{record:?}");
        };
        assert_eq!(*decision, Decision::MfaPassed);
        assert_eq!(ts.to_string(), "2026-12-02T04:15:00.123Z");
        assert_eq!(serde_json::to_string(&record).unwrap(), line);
        let typo = line.replace("mfa_passed", "allowd");
        assert!(serde_json::from_str::<AuditRecord>(&typo).is_err());
    }
}
