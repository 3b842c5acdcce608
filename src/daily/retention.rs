//! What retention deletes, and whether the clock can be trusted to delete by age. Retention
//! deletes what is old by the clock; a clock that went back, or a wrong NTP answer years
//! ahead, would make it delete a whole audit trail or every backup at once. So a sweep (and a
//! snapshot prune, `crate::snapshot::prune`) first compares the clock with the newest item it
//! finds and deletes nothing when they disagree.

use std::path::Path;
use std::time::SystemTime;

use super::utc_date;

/// A sweep or prune that deleted nothing, and the item the clock was judged against: the
/// operator's lead (a future-dated archive holds pruning until it is removed or its date comes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionHeld {
    /// Why.
    pub doubt: ClockDoubt,
    /// The newest item's name.
    pub newest: String,
}

/// Why a sweep or a prune deleted nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockDoubt {
    /// The clock is before the newest item: it went back, or that item was named by a clock
    /// that was ahead.
    Behind,
    /// The clock is further past the newest item than retention keeps anything: by it,
    /// everything would go.
    FarAhead,
}

impl ClockDoubt {
    /// The doubt about `now` given the `newest` item (both in the same unit, seconds or days),
    /// with `tolerance` allowed before it and `far` after it.
    pub fn judge(newest: Option<i64>, now: i64, tolerance: i64, far: i64) -> Option<Self> {
        let newest = newest?;
        if newest > now.saturating_add(tolerance) {
            Some(Self::Behind)
        } else if now > newest.saturating_add(far) {
            Some(Self::FarAhead)
        } else {
            None
        }
    }

    /// What the log and the audit trail say.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Behind => "the clock is before the newest item: nothing deleted",
            Self::FarAhead => {
                "the clock is further past the newest item than retention keeps: nothing deleted"
            }
        }
    }
}

/// Deletes `kind`'s files in `dir` dated before `now - retention_days`, except that:
/// - nothing goes while the clock is before the newest file or more than `retention_days`
///   past it (the doubt is returned);
/// - the newest `retention_days` files always stay, whatever their dates say, so no clock can
///   take the trail below what retention promises (today's file among them);
/// - only regular files are deleted.
pub(super) fn sweep(
    dir: &Path,
    kind: &str,
    retention_days: u32,
    now: SystemTime,
) -> Option<RetentionHeld> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return None;
    };
    let mut files: Vec<(i64, String)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let day = name
                .strip_prefix(kind)?
                .strip_prefix('-')?
                .strip_suffix(".jsonl")
                .and_then(day_number)?;
            Some((day, name))
        })
        .collect();
    files.sort_unstable_by(|a, b| b.cmp(a));
    let today = day_number(&utc_date(now))?;
    let retention = i64::from(retention_days);
    let newest = files.first().map(|(day, _)| *day);
    if let Some(doubt) = ClockDoubt::judge(newest, today, 0, retention) {
        let newest = files
            .first()
            .map(|(_, name)| name.clone())
            .unwrap_or_default();
        return Some(RetentionHeld { doubt, newest });
    }
    let keep = usize::try_from(retention_days).unwrap_or(usize::MAX);
    for (_, name) in files
        .iter()
        .skip(keep)
        .filter(|(day, _)| *day < today - retention)
    {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => tracing::info!(file = name, "deleted log file past retention"),
            Err(e) => {
                tracing::error!(file = name, error = %e, "cannot delete log file past retention")
            }
        }
    }
    None
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn day_number(date: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(date, format).ok()?;
    Some((date.midnight().assume_utc().unix_timestamp()).div_euclid(86_400))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Files of `kind` dated `days` (days before `now`, negative for after), in a new
    /// directory; returns it and the names.
    fn dated(now: SystemTime, kind: &str, days: &[i64]) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = days
            .iter()
            .map(|&d| {
                let at = if d >= 0 {
                    now - Duration::from_secs(86_400 * d.unsigned_abs())
                } else {
                    now + Duration::from_secs(86_400 * d.unsigned_abs())
                };
                format!("{kind}-{}.jsonl", utc_date(at))
            })
            .collect();
        for name in &names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        (dir, names)
    }

    fn left(dir: &tempfile::TempDir, names: &[String]) -> Vec<bool> {
        names.iter().map(|n| dir.path().join(n).exists()).collect()
    }

    #[test]
    fn sweep_deletes_only_its_kind_past_retention() {
        let now = SystemTime::now();
        let days: Vec<i64> = (0..=31).collect();
        let (dir, mut names) = dated(now, "access", &days);
        for other in ["audit-2020-01-01.jsonl", "access-notadate.jsonl"] {
            std::fs::write(dir.path().join(other), b"x").unwrap();
            names.push(other.to_owned());
        }
        // A directory named like a file is not a file to delete.
        std::fs::create_dir(dir.path().join("access-2020-01-02.jsonl")).unwrap();
        names.push("access-2020-01-02.jsonl".to_owned());
        assert_eq!(sweep(dir.path(), "access", 30, now), None);
        let mut expected = vec![true; 31];
        expected.push(false);
        expected.extend([true, true, true]);
        assert_eq!(left(&dir, &names), expected);
    }

    /// Whatever the clock says, the newest `retention_days` files stay: a clock 60 days ahead
    /// that has written one file takes one old file, not the trail.
    #[test]
    fn the_newest_files_stay_whatever_the_clock_says() {
        let real = SystemTime::now();
        let ahead = real + Duration::from_secs(86_400 * 60);
        let mut days: Vec<i64> = (0..20).collect();
        days.push(-60);
        let (dir, names) = dated(real, "audit", &days);
        assert_eq!(sweep(dir.path(), "audit", 15, ahead), None);
        let kept = left(&dir, &names).iter().filter(|k| **k).count();
        assert_eq!(kept, 15);
        assert!(dir.path().join(&names[0]).exists(), "today's file");
        assert!(dir.path().join(&names[20]).exists(), "the newest file");
    }

    #[test]
    fn a_clock_behind_or_far_ahead_of_the_newest_file_deletes_nothing() {
        let real = SystemTime::now();
        let days: Vec<i64> = (0..40).collect();
        let (dir, names) = dated(real, "audit", &days);
        let behind = real - Duration::from_secs(86_400 * 2);
        let doubt = |now| sweep(dir.path(), "audit", 15, now).map(|h| h.doubt);
        assert_eq!(doubt(behind), Some(ClockDoubt::Behind));
        let ahead = real + Duration::from_secs(86_400 * 60);
        assert_eq!(doubt(ahead), Some(ClockDoubt::FarAhead));
        let held = sweep(dir.path(), "audit", 15, ahead).unwrap();
        assert_eq!(held.newest, names[0]);
        assert!(left(&dir, &names).iter().all(|k| *k));
        // With the clock right again, retention does its work.
        assert_eq!(sweep(dir.path(), "audit", 15, real), None);
        assert_eq!(left(&dir, &names).iter().filter(|k| **k).count(), 16);
    }

    #[test]
    fn only_a_clock_between_the_newest_item_and_retention_is_trusted() {
        assert_eq!(ClockDoubt::judge(None, 100, 0, 30), None);
        assert_eq!(ClockDoubt::judge(Some(100), 100, 0, 30), None);
        assert_eq!(ClockDoubt::judge(Some(100), 130, 0, 30), None);
        assert_eq!(
            ClockDoubt::judge(Some(100), 131, 0, 30),
            Some(ClockDoubt::FarAhead)
        );
        assert_eq!(ClockDoubt::judge(Some(100), 95, 5, 30), None);
        assert_eq!(
            ClockDoubt::judge(Some(100), 94, 5, 30),
            Some(ClockDoubt::Behind)
        );
    }
}
