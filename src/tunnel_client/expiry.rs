//! Short-lived employee certificates end by themselves: `portcullis connect` says so ahead.

use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

/// Short-lived certificates end by themselves: say so a week ahead, on stderr (stdout is
/// ssh's), so that the employee asks for a new one before the gateway refuses the old.
const EXPIRY_NOTICE: Duration = Duration::from_secs(7 * 86_400);

/// How long `leaf` has left at `now`; zero when it has expired, `None` when it cannot be read.
pub(super) fn time_left(leaf: &CertificateDer<'_>, now: SystemTime) -> Option<Duration> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let not_after = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(not_after.saturating_sub(now)))
}

pub(super) fn warn_if_expiring(cert: &std::path::Path, left: Duration) {
    if left.is_zero() {
        eprintln!(
            "portcullis: {} has expired: ask for a new one (`portcullis employees renew`)",
            cert.display()
        );
    } else if left < EXPIRY_NOTICE {
        let hours = left.as_secs() / 3600;
        eprintln!(
            "portcullis: {} expires in {} days {} hours: ask for a new one (`portcullis employees renew`)",
            cert.display(),
            hours / 24,
            hours % 24
        );
    }
}
