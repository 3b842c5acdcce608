//! What a log's writer tells the rest of the proxy: lines waiting for the disk, lines lost, and
//! whether its file can be written now. Read by `/metrics` and `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often lost lines are summarised in the operational log while they are being lost.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// One log's state, shared between its writer and the admin listener.
#[derive(Debug, Default)]
pub struct LogHealth {
    held: AtomicU64,
    dropped: AtomicU64,
    failing: AtomicBool,
}

impl LogHealth {
    /// Lines waiting in memory for the file.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Lines lost since start: the buffer was full, or the writer could not keep up.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True from a failed write until everything held is written.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Counts `n` lines lost.
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn set_held(&self, n: usize) {
        self.held.store(n as u64, Ordering::Relaxed);
    }

    pub(super) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

/// Summarises lost lines: the first loss at once, then once per [`REPORT_EVERY`], so a long
/// fault says how much it cost without a line per loss.
#[derive(Debug)]
pub(super) struct DropReport {
    kind: &'static str,
    reported: u64,
    last: Option<Instant>,
}

impl DropReport {
    pub(super) fn new(kind: &'static str) -> Self {
        Self {
            kind,
            reported: 0,
            last: None,
        }
    }

    pub(super) fn report_if_due(&mut self, health: &LogHealth, held: usize) {
        if self.last.is_none_or(|last| last.elapsed() >= REPORT_EVERY) {
            self.report_now(health, held);
        }
    }

    pub(super) fn report_now(&mut self, health: &LogHealth, held: usize) {
        let total = health.dropped_total();
        let dropped = total - self.reported;
        if dropped > 0 {
            self.last = Some(Instant::now());
            self.reported = total;
            tracing::error!(
                kind = self.kind,
                dropped,
                total,
                held,
                "log lines lost: the lines waiting for the file filled the buffer"
            );
        }
    }
}
