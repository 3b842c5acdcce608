//! Passive outlier ejection, as Envoy's outlier detection does it: an address whose requests
//! fail `consecutive` times in a row is left out for `base_ejection`, doubled by each ejection
//! that follows closely on the last, up to `max_ejection`; never more than
//! `max_ejected_percent` of an upstream at once, and never its last available address.
//!
//! Times are milliseconds since the upstream's epoch, so that a record is three atomics and the
//! request path takes no lock; only ejecting, which is rare, takes the upstream's.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::Outlier;

/// One address's failures and ejection.
#[derive(Debug, Default)]
pub(super) struct Record {
    /// Failures in a row.
    failures: AtomicU32,
    /// The end of its current or last ejection (0: never ejected).
    until: AtomicU64,
    /// Ejections in a row, each following the last within `max_ejection`.
    ejections: AtomicU32,
}

/// Milliseconds since `epoch`.
pub(super) fn millis(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

impl Record {
    /// Whether the address is ejected at `now` (milliseconds since the epoch).
    pub(super) fn ejected(&self, now: u64) -> bool {
        now < self.until.load(Ordering::Relaxed)
    }

    /// An attempt succeeded: the run of failures is over.
    pub(super) fn succeeded(&self) {
        // Most requests succeed: read first, so that they do not write a shared line.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// An attempt failed; true when the run is long enough to eject the address.
    pub(super) fn failed(&self, policy: &Outlier) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= policy.consecutive
    }

    /// Ejects the address at `now`; the caller has checked the share. Returns the ejection's
    /// length.
    pub(super) fn eject(&self, policy: &Outlier, now: u64) -> Duration {
        let max = u64::try_from(policy.max_ejection.as_millis()).unwrap_or(u64::MAX);
        let last_end = self.until.load(Ordering::Relaxed);
        // An address that stayed in for a whole max_ejection since its last ejection starts
        // over at the base length.
        let streak = if last_end != 0 && now.saturating_sub(last_end) < max {
            self.ejections
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
        } else {
            self.ejections.store(1, Ordering::Relaxed);
            1
        };
        let length = policy
            .base_ejection
            .saturating_mul(1u32 << (streak - 1).min(16))
            .min(policy.max_ejection);
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        self.until
            .store(now.saturating_add(length_ms).max(1), Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        length
    }
}

/// Whether one more of `total` addresses may be ejected while `ejected` are and `available`
/// still take traffic.
pub(super) fn may_eject(policy: &Outlier, total: usize, ejected: usize, available: usize) -> bool {
    let allowed = total.saturating_mul(policy.max_ejected_percent as usize) / 100;
    available >= 2 && ejected < allowed.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Count5xx;

    fn policy() -> Outlier {
        Outlier {
            consecutive: 3,
            count_5xx: Count5xx::Gateway,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(35),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn a_run_of_failures_ejects_and_a_success_breaks_the_run() {
        let (record, policy) = (Record::default(), policy());
        assert!(!record.failed(&policy));
        assert!(!record.failed(&policy));
        record.succeeded();
        assert!(!record.failed(&policy));
        assert!(!record.failed(&policy));
        assert!(record.failed(&policy));
    }

    #[test]
    fn ejections_close_together_grow_to_the_cap_and_start_over_after_a_quiet_spell() {
        let (record, policy) = (Record::default(), policy());
        let secs = |s: u64| s * 1000;
        assert_eq!(record.eject(&policy, secs(100)), Duration::from_secs(10));
        assert!(record.ejected(secs(109)) && !record.ejected(secs(110)));
        assert_eq!(record.eject(&policy, secs(111)), Duration::from_secs(20));
        assert_eq!(record.eject(&policy, secs(132)), Duration::from_secs(35));
        assert_eq!(record.eject(&policy, secs(168)), Duration::from_secs(35));
        // In for longer than max_ejection since the last one ended.
        assert_eq!(record.eject(&policy, secs(1000)), Duration::from_secs(10));
    }

    #[test]
    fn the_share_is_capped_and_the_last_address_is_never_ejected() {
        let policy = policy();
        assert!(may_eject(&policy, 2, 0, 2));
        assert!(!may_eject(&policy, 2, 1, 1));
        assert!(!may_eject(&policy, 1, 0, 1));
        assert!(may_eject(&policy, 10, 4, 6));
        assert!(!may_eject(&policy, 10, 5, 5));
        // Down addresses count against availability, not against the ejected share.
        assert!(!may_eject(&policy, 4, 0, 1));
    }
}
