//! Which snapshots the policy keeps: in each tier, the newest snapshot of each of the last N
//! periods (6-hour slots, UTC days, ISO weeks from Monday, calendar months), the current
//! period included. A snapshot any tier keeps stays; the rest go. Periods are counted on the
//! clock, not on snapshots, so a gap in the history never stretches a tier further back.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use crate::config::Retention;

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
        for &at in taken.iter().filter(|at| period(**at) >= oldest) {
            let slot = newest.entry(period(at)).or_insert(at);
            *slot = (*slot).max(at);
        }
        kept.extend(newest.into_values());
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
