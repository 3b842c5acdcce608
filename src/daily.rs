//! One JSON-lines file per UTC day (`{kind}-YYYY-MM-DD.jsonl`), deleted past retention: the
//! storage shared by the access log and the audit trail. Each writer thread owns its own
//! [`DailyFile`] and sweeps only its own kind.
//!
//! A disk that cannot be written (full, read-only, immutable, gone) loses no line while it
//! lasts: lines wait in memory, in order, up to `[log] buffer_lines`, and are written once the
//! file can be written again. Only lines beyond that are dropped; each is counted in
//! [`LogHealth`] (metrics, `/readyz`) and summarised in the operational log.

mod health;
mod retention;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use health::DropReport;
pub use health::LogHealth;
use retention::sweep;
pub use retention::{ClockDoubt, RetentionHeld};

use crate::logging::Throttle;

/// The UTC date of `time` as `YYYY-MM-DD`.
pub fn utc_date(time: SystemTime) -> String {
    let date = time::OffsetDateTime::from(time).date();
    let format = time::macros::format_description!("[year]-[month]-[day]");
    // Only a year past 9999 fails to format; the clock is not read from a client.
    date.format(format)
        .unwrap_or_else(|_| "9999-12-31".to_owned())
}

/// How often files past retention are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// After a failed write, how long before the next try: often enough that a repaired disk is
/// used within a moment, rarely enough that a broken one costs nothing.
const RETRY_EVERY: Duration = Duration::from_millis(200);
/// Held bytes that make a write worth a system call before the writer's next pause.
const WRITE_AT: usize = 64 * 1024;

/// A line waiting for the disk, with the day whose file it belongs in.
struct Held {
    date: [u8; 10],
    line: Vec<u8>,
}

/// The day's file of one kind, opened on the first line of each day.
pub struct DailyFile {
    dir: PathBuf,
    kind: &'static str,
    retention_days: u32,
    open: Option<([u8; 10], File)>,
    held: VecDeque<Held>,
    held_bytes: usize,
    /// Bytes of the first held line already in the file (a write cut short).
    front_written: usize,
    capacity: usize,
    retry_at: Option<Instant>,
    health: Arc<LogHealth>,
    drops: DropReport,
    errors: Throttle,
    last_sweep: Option<Instant>,
    /// The doubt the last sweep had about the clock, said once until it changes.
    doubt: Option<ClockDoubt>,
}

impl DailyFile {
    /// `{kind}-YYYY-MM-DD.jsonl` files in `dir`, kept `retention_days`, holding up to
    /// `capacity` lines while the disk fails; the directory is created on first write.
    pub fn new(
        dir: PathBuf,
        kind: &'static str,
        retention_days: u32,
        capacity: usize,
        health: Arc<LogHealth>,
    ) -> Self {
        Self {
            dir,
            kind,
            retention_days,
            open: None,
            held: VecDeque::new(),
            held_bytes: 0,
            front_written: 0,
            capacity,
            retry_at: None,
            health,
            drops: DropReport::new(kind),
            errors: Throttle::new(Duration::from_secs(60)),
            last_sweep: None,
            doubt: None,
        }
    }

    /// Queues `line` for the file of `date` (`YYYY-MM-DD`), writing when enough is queued.
    /// With `capacity` lines already waiting for a failed disk, the line is dropped and counted.
    pub fn write(&mut self, date: &str, line: Vec<u8>) {
        let Ok(date) = <[u8; 10]>::try_from(date.as_bytes()) else {
            return;
        };
        if self.held.len() >= self.capacity {
            // Full because the writer has not written yet, or because the disk fails.
            self.flush();
            if self.held.len() >= self.capacity {
                self.health.dropped(1);
                return;
            }
        }
        self.held_bytes += line.len();
        self.held.push_back(Held { date, line });
        self.health.set_held(self.held.len());
        if self.held_bytes >= WRITE_AT {
            self.flush();
        }
    }

    /// Writes what is held, oldest first, unless a recent failure says to wait. A failure
    /// keeps every line not fully written for the next try.
    pub fn flush(&mut self) {
        if self.held.is_empty() || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let mut batch = Vec::with_capacity(self.held_bytes.min(WRITE_AT * 4));
        while let Some(date) = self.held.front().map(|h| h.date) {
            if let Err(e) = self.write_held(date, &mut batch) {
                self.failed(&e);
                return;
            }
        }
        if self.retry_at.take().is_some() {
            self.health.set_failing(false);
            tracing::warn!(
                kind = self.kind,
                "log file writable again; held lines written"
            );
        }
    }

    /// Writes the held lines of `date` at the front, as many as fit a batch.
    fn write_held(&mut self, date: [u8; 10], batch: &mut Vec<u8>) -> std::io::Result<()> {
        batch.clear();
        let mut first = self.front_written;
        for held in self.held.iter().take_while(|h| h.date == date) {
            batch.extend_from_slice(&held.line[first..]);
            first = 0;
            if batch.len() >= WRITE_AT * 4 {
                break;
            }
        }
        let file = self.file_for(date)?;
        let mut written = 0;
        let outcome = loop {
            match file.write(&batch[written..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
            if written == batch.len() {
                break Ok(());
            }
        };
        self.forget_written(written);
        outcome
    }

    /// Drops the first `bytes` of held lines, which are now in the file.
    fn forget_written(&mut self, mut bytes: usize) {
        while let Some(front) = self.held.front() {
            let rest = front.line.len() - self.front_written;
            if bytes < rest {
                self.front_written += bytes;
                break;
            }
            bytes -= rest;
            self.held_bytes -= front.line.len();
            self.front_written = 0;
            self.held.pop_front();
        }
        self.health.set_held(self.held.len());
    }

    fn file_for(&mut self, date: [u8; 10]) -> std::io::Result<&mut File> {
        if self.open.as_ref().is_none_or(|(d, _)| *d != date) {
            self.open = None;
            let name = format!("{}-{}.jsonl", self.kind, String::from_utf8_lossy(&date));
            std::fs::create_dir_all(&self.dir)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))?;
            self.open = Some((date, file));
        }
        match &mut self.open {
            Some((_, file)) => Ok(file),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        let (kind, held) = (self.kind, self.held.len());
        self.errors.warn(|n| {
            tracing::error!(error = %e, kind, held, repeated = n, "cannot write log file; holding lines until it can be written");
        });
        // Reopened on the next try: the file may have been replaced or its directory remade.
        self.open = None;
        self.retry_at = Some(Instant::now() + RETRY_EVERY);
        self.health.set_failing(true);
    }

    /// Says in the operational log how many lines were dropped since it last said so.
    pub fn report_drops_if_due(&mut self) {
        self.drops.report_if_due(&self.health, self.held.len());
    }

    /// The last try to write what is held, at shutdown: what cannot be written now is lost,
    /// and said so.
    pub fn close(&mut self) {
        self.retry_at = None;
        self.flush();
        let lost = self.held.len();
        if lost > 0 {
            self.health.dropped(lost as u64);
            self.held.clear();
            self.health.set_held(0);
        }
        self.drops.report_now(&self.health, 0);
    }

    /// Deletes this kind's files past retention: on the first call, then at most hourly.
    /// Returns a doubt about the clock the first time a sweep holds back because of it, for
    /// the caller to record; the operational log has it already.
    pub fn sweep_if_due(&mut self) -> Option<RetentionHeld> {
        if self.last_sweep.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return None;
        }
        self.last_sweep = Some(Instant::now());
        let held = sweep(&self.dir, self.kind, self.retention_days, SystemTime::now());
        let doubt = held.as_ref().map(|h| h.doubt);
        let new = held.filter(|_| self.doubt != doubt);
        self.doubt = doubt;
        if let Some(held) = &new {
            tracing::warn!(
                kind = self.kind,
                newest = held.newest,
                reason = held.doubt.reason(),
                "log retention held"
            );
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_in_order_for_a_failed_disk_and_only_overflow_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        // A file where the directory should be: every open fails until it is removed.
        std::fs::write(&logs, b"").unwrap();
        let health = Arc::new(LogHealth::default());
        let mut file = DailyFile::new(logs.clone(), "access", 30, 3, health.clone());
        for i in 0..5 {
            file.write("2026-12-02", format!("line {i}\n").into_bytes());
        }
        file.flush();
        assert!(health.failing());
        assert_eq!((health.held(), health.dropped_total()), (3, 2));
        std::fs::remove_file(&logs).unwrap();
        file.flush();
        assert!(health.failing(), "no retry before the pause");
        std::thread::sleep(RETRY_EVERY);
        file.flush();
        assert!(!health.failing());
        assert_eq!(health.held(), 0);
        let text = std::fs::read_to_string(logs.join("access-2026-12-02.jsonl")).unwrap();
        assert_eq!(text, "line 0\nline 1\nline 2\n");
    }

    #[test]
    fn a_write_cut_short_resumes_mid_line() {
        let dir = tempfile::tempdir().unwrap();
        let health = Arc::new(LogHealth::default());
        let mut file = DailyFile::new(dir.path().to_owned(), "access", 30, 10, health.clone());
        for line in ["first\n", "second\n", "third\n"] {
            file.write("2026-12-02", line.as_bytes().to_vec());
        }
        // As if a write had put "first\nsec" in the file before failing.
        file.forget_written("first\nsec".len());
        assert_eq!((health.held(), file.front_written), (2, 3));
        file.flush();
        let text = std::fs::read_to_string(dir.path().join("access-2026-12-02.jsonl")).unwrap();
        assert_eq!(text, "ond\nthird\n");
        assert_eq!(health.held(), 0);
    }
}
