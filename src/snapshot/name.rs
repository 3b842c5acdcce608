//! Archive names: `portcullis-YYYYMMDDTHHMMSSZ.tar.gz`, the time it was taken, in UTC, and
//! `.tar.gz.age` when it is encrypted.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::macros::format_description;

use super::SnapshotError;

const PREFIX: &str = "portcullis-";
const SUFFIX: &str = ".tar.gz";
const SEALED_SUFFIX: &str = ".tar.gz.age";
const STAMP: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

pub(super) fn archive_name(at: SystemTime, sealed: bool) -> Result<String, SnapshotError> {
    let stamp = OffsetDateTime::from(at)
        .format(STAMP)
        .map_err(|_| SnapshotError::Clock)?;
    let suffix = if sealed { SEALED_SUFFIX } else { SUFFIX };
    Ok(format!("{PREFIX}{stamp}{suffix}"))
}

/// When an archive named by [`take`] was taken; `None` for any other file, which pruning
/// never touches.
pub(super) fn taken_at(name: &str) -> Option<OffsetDateTime> {
    let name = name.strip_prefix(PREFIX)?;
    let stamp = (name.strip_suffix(SEALED_SUFFIX)).or_else(|| name.strip_suffix(SUFFIX))?;
    time::PrimitiveDateTime::parse(stamp, STAMP)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}
