//! The writer thread: turns events into lines, writes one file per UTC day, deletes files past
//! retention, and never blocks the request path (it owns the disk; requests only enqueue).

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use super::{Event, Message, render};
use crate::logging::Throttle;

/// How long the writer sleeps once the queue is empty: the most a line waits for the disk.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// The retention sweep period.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Where and how long lines are kept.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Directory of `access-YYYY-MM-DD.jsonl` files; `None` writes no files.
    pub dir: Option<PathBuf>,
    /// Files dated more than this many days before today are deleted.
    pub retention_days: u32,
    /// Also write lines to stdout.
    pub stdout: bool,
    /// Add a keyed hash of the client IP, the key rotating with the UTC day.
    pub client_hash: bool,
}

/// The UTC date of `time` as `YYYY-MM-DD`.
pub fn utc_date(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()[..10].to_owned()
}

struct DailyFile {
    date: String,
    file: Option<BufWriter<File>>,
}

pub(super) fn run(settings: LogSettings, queue: Receiver<Message>) {
    let mut writer = Writer {
        daily: DailyFile {
            date: String::new(),
            file: None,
        },
        hash_key: (String::new(), RandomState::new()),
        errors: Throttle::new(Duration::from_secs(60)),
        stdout: std::io::stdout(),
        settings,
    };
    let mut last_sweep: Option<Instant> = None;
    loop {
        if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            if let Some(dir) = &writer.settings.dir {
                sweep(dir, writer.settings.retention_days, SystemTime::now());
            }
            last_sweep = Some(Instant::now());
        }
        // Polled, never blocked on: a receiver waiting in `recv` would make every request's
        // send a futex wake-up and a context switch on the proxy's core.
        match queue.try_recv() {
            Ok(Message::Event(event)) => writer.write(&event),
            Ok(Message::Close) | Err(TryRecvError::Disconnected) => {
                flush(&mut writer.daily);
                return;
            }
            Err(TryRecvError::Empty) => {
                flush(&mut writer.daily);
                std::thread::sleep(POLL_EVERY);
            }
        }
    }
}

struct Writer {
    settings: LogSettings,
    daily: DailyFile,
    hash_key: (String, RandomState),
    errors: Throttle,
    stdout: std::io::Stdout,
}

impl Writer {
    fn write(&mut self, event: &Event) {
        let date = utc_date(event.time);
        if self.hash_key.0 != date {
            self.hash_key = (date.clone(), RandomState::new());
        }
        let client_hash = self
            .settings
            .client_hash
            .then_some(event.client)
            .flatten()
            .map(|ip| format!("{:016x}", self.hash_key.1.hash_one(ip)));
        let line = render(event, client_hash);
        if line.len() <= 1 {
            return;
        }
        if self.settings.stdout {
            let _ = self.stdout.write_all(&line);
        }
        if let Some(dir) = &self.settings.dir {
            write_line(dir, &mut self.daily, &date, &line, &self.errors);
        }
    }
}

fn write_line(dir: &Path, daily: &mut DailyFile, date: &str, line: &[u8], errors: &Throttle) {
    if daily.date != date || daily.file.is_none() {
        flush(daily);
        daily.date = date.to_owned();
        let path = dir.join(format!("access-{date}.jsonl"));
        daily.file = std::fs::create_dir_all(dir)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&path))
            .map(BufWriter::new)
            .map_err(|e| {
                errors.warn(
                    |n| tracing::error!(error = %e, repeated = n, "cannot open access log file"),
                )
            })
            .ok();
    }
    if let Some(file) = &mut daily.file
        && let Err(e) = file.write_all(line)
    {
        errors.warn(|n| tracing::error!(error = %e, repeated = n, "cannot write access log"));
        daily.file = None;
    }
}

fn flush(daily: &mut DailyFile) {
    if let Some(file) = &mut daily.file
        && file.flush().is_err()
    {
        daily.file = None;
    }
}

/// Deletes `access-*.jsonl` and `audit-*.jsonl` files dated before `now - retention_days`.
pub fn sweep(dir: &Path, retention_days: u32, now: SystemTime) {
    let cutoff = utc_date(now - Duration::from_secs(86_400 * u64::from(retention_days)));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let date = ["access-", "audit-"]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .and_then(|rest| rest.strip_suffix(".jsonl"))
            .filter(|d| d.len() == 10 && d.as_bytes()[4] == b'-' && d.as_bytes()[7] == b'-');
        if let Some(date) = date
            && *date < *cutoff
        {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = name, "deleted log file past retention"),
                Err(e) => {
                    tracing::error!(file = name, error = %e, "cannot delete log file past retention")
                }
            }
        }
    }
}

impl Event {
    pub(super) fn method_name(&self) -> &'static str {
        use http::Method;
        const STANDARD: [(Method, &str); 9] = [
            (Method::GET, "GET"),
            (Method::HEAD, "HEAD"),
            (Method::POST, "POST"),
            (Method::PUT, "PUT"),
            (Method::DELETE, "DELETE"),
            (Method::CONNECT, "CONNECT"),
            (Method::OPTIONS, "OPTIONS"),
            (Method::TRACE, "TRACE"),
            (Method::PATCH, "PATCH"),
        ];
        STANDARD
            .iter()
            .find(|(m, _)| *m == self.method)
            .map_or("OTHER", |(_, name)| name)
    }
}
