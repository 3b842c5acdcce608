//! One JSON-lines file per UTC day (`{kind}-YYYY-MM-DD.jsonl`), deleted past retention: the
//! storage shared by the access log and the audit trail. Each writer thread owns its own
//! [`DailyFile`] and sweeps only its own kind.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::logging::Throttle;

/// The UTC date of `time` as `YYYY-MM-DD`.
pub fn utc_date(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()[..10].to_owned()
}

/// How often files past retention are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The day's file of one kind, opened on the first line of each day.
pub struct DailyFile {
    dir: PathBuf,
    kind: &'static str,
    retention_days: u32,
    open: Option<(String, BufWriter<File>)>,
    errors: Throttle,
    last_sweep: Option<Instant>,
}

impl DailyFile {
    /// `{kind}-YYYY-MM-DD.jsonl` files in `dir`, kept `retention_days`; the directory is
    /// created on first write.
    pub fn new(dir: PathBuf, kind: &'static str, retention_days: u32) -> Self {
        Self {
            dir,
            kind,
            retention_days,
            open: None,
            errors: Throttle::new(Duration::from_secs(60)),
            last_sweep: None,
        }
    }

    /// Appends `line` to the file of `date`. A failed open or write is reported (throttled) and
    /// retried on the next line.
    pub fn write(&mut self, date: &str, line: &[u8]) {
        if self.open.as_ref().is_none_or(|(d, _)| d != date) {
            self.flush();
            let path = self.dir.join(format!("{}-{date}.jsonl", self.kind));
            let (kind, errors) = (self.kind, &self.errors);
            self.open = std::fs::create_dir_all(&self.dir)
                .and_then(|()| OpenOptions::new().create(true).append(true).open(path))
                .map(|file| (date.to_owned(), BufWriter::new(file)))
                .map_err(|e| {
                    errors.warn(
                        |n| tracing::error!(error = %e, kind, repeated = n, "cannot open log file"),
                    )
                })
                .ok();
        }
        if let Some((_, file)) = &mut self.open
            && let Err(e) = file.write_all(line)
        {
            self.failed(&e);
        }
    }

    /// Pushes buffered lines to the file.
    pub fn flush(&mut self) {
        if let Some((_, file)) = &mut self.open
            && let Err(e) = file.flush()
        {
            self.failed(&e);
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        let kind = self.kind;
        self.errors
            .warn(|n| tracing::error!(error = %e, kind, repeated = n, "cannot write log file"));
        self.open = None;
    }

    /// Deletes this kind's files past retention: on the first call, then at most hourly.
    pub fn sweep_if_due(&mut self) {
        if self.last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            self.sweep(SystemTime::now());
            self.last_sweep = Some(Instant::now());
        }
    }

    /// Deletes this kind's files dated before `now - retention_days`.
    fn sweep(&self, now: SystemTime) {
        sweep(&self.dir, self.kind, self.retention_days, now);
    }
}

fn sweep(dir: &Path, kind: &str, retention_days: u32, now: SystemTime) {
    let cutoff = utc_date(now - Duration::from_secs(86_400 * u64::from(retention_days)));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let date = name
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix('-'))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_deletes_only_its_kind_past_retention() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day = |d: u64| utc_date(now - Duration::from_secs(86_400 * d));
        let names = [
            format!("access-{}.jsonl", day(31)),
            format!("access-{}.jsonl", day(29)),
            format!("audit-{}.jsonl", day(31)),
            "access-notadate.jsonl".to_owned(),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        DailyFile::new(dir.path().to_owned(), "access", 30).sweep(now);
        let left: Vec<bool> = names.iter().map(|n| dir.path().join(n).exists()).collect();
        assert_eq!(left, [false, true, true, true]);
    }
}
