//! The audit trail: every decision on an internal route, every config change and every admin
//! request, one JSON line each in `audit-YYYY-MM-DD.jsonl` beside the access log, under the same
//! retention. Employees' identities belong here and only here.
//!
//! Written synchronously: internal traffic is light, and an audit line must not be lost to a
//! full queue.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::access_log::utc_date;
use crate::logging::Throttle;

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditRecord {
    /// A decision on an internal route.
    Access {
        /// RFC 3339 UTC.
        ts: String,
        /// The certificate's user, `-` without one.
        user: String,
        /// The route's name.
        route: String,
        /// Request method.
        method: String,
        /// Masked path, no query.
        path: String,
        /// `allowed`, `denied`, `mfa_passed` or `mfa_failed`.
        decision: String,
        /// Why.
        reason: String,
    },
    /// A configuration load or reload.
    Config {
        /// RFC 3339 UTC.
        ts: String,
        /// `startup`, `signal` or `admin`.
        trigger: String,
        /// `applied` or `refused`.
        outcome: String,
        /// SHA-256 of the file in service before.
        old_digest: String,
        /// SHA-256 of the file read.
        new_digest: String,
    },
    /// A request to the admin listener.
    Admin {
        /// RFC 3339 UTC.
        ts: String,
        /// Request method.
        method: String,
        /// Endpoint.
        path: String,
        /// Status answered.
        status: u16,
    },
}

/// Now, as audit lines write it.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Appends audit lines to the day's file.
#[derive(Debug)]
pub struct Audit {
    dir: Option<PathBuf>,
    file: Mutex<Option<(String, File)>>,
    errors: Throttle,
}

impl Audit {
    /// An audit trail in `dir` (none: lines are dropped, as in tests without logs).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            file: Mutex::new(None),
            errors: Throttle::new(Duration::from_secs(60)),
        }
    }

    /// Writes one line; a failure is an operational error, never a crash.
    pub fn record(&self, record: &AuditRecord) {
        let Some(dir) = &self.dir else { return };
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        let date = utc_date(SystemTime::now());
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        if guard.as_ref().is_none_or(|(d, _)| *d != date) {
            let path = dir.join(format!("audit-{date}.jsonl"));
            *guard = std::fs::create_dir_all(dir)
                .and_then(|()| OpenOptions::new().create(true).append(true).open(path))
                .map(|file| (date, file))
                .map_err(|e| {
                    self.errors.warn(
                        |n| tracing::error!(error = %e, repeated = n, "cannot open audit file"),
                    )
                })
                .ok();
        }
        if let Some((_, file)) = guard.as_mut()
            && let Err(e) = file.write_all(&line)
        {
            self.errors
                .warn(|n| tracing::error!(error = %e, repeated = n, "cannot write audit line"));
            *guard = None;
        }
    }
}
