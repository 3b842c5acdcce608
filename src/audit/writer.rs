//! The audit trail's writer thread: takes lines from the bounded queue, aggregates denials
//! and admin requests per minute, and writes them to the day's file.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::record::{AuditRecord, Timestamp};
use crate::daily::{DailyFile, utc_date};

/// Lines that may wait for the writer before new ones are dropped (and counted).
pub(super) const QUEUE_CAPACITY: usize = 65_536;

pub(super) enum Message {
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

type DenialKey = (String, String, &'static str);

pub(super) struct Writer {
    file: DailyFile,
    denials: BTreeMap<DenialKey, (Timestamp, u64)>,
    admin: BTreeMap<AdminKey, (Timestamp, u64)>,
    minute: u64,
}

impl Writer {
    pub(super) fn new(file: DailyFile) -> Self {
        Self {
            file,
            denials: BTreeMap::new(),
            admin: BTreeMap::new(),
            minute: current_minute(),
        }
    }

    pub(super) fn run(mut self, receiver: &Receiver<Message>) {
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
                self.flush_aggregates();
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
                        self.flush_aggregates();
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

    fn flush_aggregates(&mut self) {
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
