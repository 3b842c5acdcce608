//! Which snapshots the policy keeps: in each tier, the newest snapshot of each of the last N
//! periods (6-hour slots, UTC days, ISO weeks from Monday, calendar months), the current
//! period included. A snapshot any tier keeps stays; the rest go.
//!
//! Periods are counted on the clock, and each tier also keeps the newest snapshot of each of
//! the newest N periods that have one, whatever the clock says: a clock years ahead, or a gap
//! in the history, never takes a tier below its N. With a snapshot every period the two
//! counts are the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use time::{Duration, OffsetDateTime};

use super::name::taken_at;
use super::{SnapshotError, io};
use crate::config::Retention;
use crate::daily::{ClockDoubt, RetentionHeld};

/// How far an archive's name may be from the clock and still be "just taken": the clock is
/// doubted only beyond it.
const JUST_NOW: Duration = Duration::minutes(5);

/// What a prune did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Archives deleted, sorted.
    pub removed: Vec<PathBuf>,
    /// Entries named like archives that are not regular files: never deleted, reported.
    pub skipped: Vec<PathBuf>,
    /// Set when the clock was doubted and nothing was deleted.
    pub held: Option<RetentionHeld>,
}

/// Deletes the archives in `dir` that `retention` no longer keeps at `now`.
///
/// Nothing is deleted while the clock is before an archive (beyond [`JUST_NOW`]) or further
/// past the newest earlier archive than the daily tier reaches: a wrong clock must not empty
/// the backups. Anything named like an archive that is not a regular file is skipped.
pub fn prune(dir: &Path, retention: &Retention, now: SystemTime) -> Result<Pruned, SnapshotError> {
    let mut pruned = Pruned::default();
    let mut archives: Vec<(OffsetDateTime, PathBuf, String)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(at) = taken_at(&name) else { continue };
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            archives.push((at, entry.path(), name));
        } else {
            pruned.skipped.push(entry.path());
        }
    }
    pruned.skipped.sort();
    let now = OffsetDateTime::from(now);
    // The newest archive other than one just taken (the one this run wrote is named `now`).
    let earlier = archives
        .iter()
        .filter(|(at, _, _)| (*at - now).abs() > JUST_NOW)
        .max_by_key(|(at, _, _)| *at);
    let far = Duration::days(i64::from(retention.daily_days));
    let doubt = ClockDoubt::judge(
        earlier.map(|(at, _, _)| at.unix_timestamp()),
        now.unix_timestamp(),
        JUST_NOW.whole_seconds(),
        far.whole_seconds(),
    );
    if let (Some(doubt), Some((_, _, newest))) = (doubt, earlier) {
        pruned.held = Some(RetentionHeld {
            doubt,
            newest: newest.clone(),
        });
        return Ok(pruned);
    }
    let times: Vec<OffsetDateTime> = archives.iter().map(|(at, _, _)| *at).collect();
    let keep = kept(&times, retention, now);
    for (at, path, _) in archives {
        if !keep.contains(&at) {
            std::fs::remove_file(&path).map_err(io(&path))?;
            pruned.removed.push(path);
        }
    }
    pruned.removed.sort();
    Ok(pruned)
}

/// The index of the period a moment falls in.
type Period = fn(OffsetDateTime) -> i64;

const SIX_HOURS: i64 = 6 * 3600;
const DAY: i64 = 24 * 3600;

/// The snapshots among `taken` that `retention` keeps at `now`.
pub fn kept(
    taken: &[OffsetDateTime],
    retention: &Retention,
    now: OffsetDateTime,
) -> BTreeSet<OffsetDateTime> {
    let tiers: [(Period, u32); 4] = [
        (six_hour_slot, retention.six_hourly_days * 4),
        (day, retention.daily_days),
        (iso_week, retention.weekly_weeks),
        (month, retention.monthly_months),
    ];
    let mut kept = BTreeSet::new();
    for (period, count) in tiers {
        let oldest = period(now) - i64::from(count) + 1;
        let mut newest: BTreeMap<i64, OffsetDateTime> = BTreeMap::new();
        for &at in taken {
            let slot = newest.entry(period(at)).or_insert(at);
            *slot = (*slot).max(at);
        }
        let minimum = usize::try_from(count).unwrap_or(usize::MAX);
        kept.extend(
            newest
                .into_iter()
                .rev()
                .enumerate()
                .filter(|(i, (period, _))| *i < minimum || *period >= oldest)
                .map(|(_, (_, at))| at),
        );
    }
    kept
}

fn six_hour_slot(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(SIX_HOURS)
}

fn day(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(DAY)
}

/// Weeks from Monday: 1970-01-01 was a Thursday.
fn iso_week(at: OffsetDateTime) -> i64 {
    (day(at) + 3).div_euclid(7)
}

fn month(at: OffsetDateTime) -> i64 {
    i64::from(at.year()) * 12 + i64::from(u8::from(at.month()))
}
