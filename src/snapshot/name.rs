//! Archive names: `portcullis-YYYYMMDDTHHMMSSZ.tar.gz`, the time it was taken, in UTC.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::macros::format_description;

use super::SnapshotError;

const PREFIX: &str = "portcullis-";
const SUFFIX: &str = ".tar.gz";
const STAMP: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

pub(super) fn archive_name(at: SystemTime) -> Result<String, SnapshotError> {
    let stamp = OffsetDateTime::from(at)
        .format(STAMP)
        .map_err(|_| SnapshotError::Clock)?;
    Ok(format!("{PREFIX}{stamp}{SUFFIX}"))
}

/// When an archive named by [`take`] was taken; `None` for any other file, which pruning
/// never touches.
pub(super) fn taken_at(name: &str) -> Option<OffsetDateTime> {
    let stamp = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    time::PrimitiveDateTime::parse(stamp, STAMP)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}
