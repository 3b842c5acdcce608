//! Whether an HTTP/2 response body waits on its client: the record its stream's task keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    /// The progress record of the HTTP/2 stream the current task serves, when it is one.
    pub static STREAM: Progress;
}

/// Whether a response body waits on its client. hyper asks an HTTP/2 body for its next frame
/// only once the previous one has been sent, which takes flow-control window the client grants:
/// a body that handed over a frame and has not been asked again for `send_timeout` belongs to a
/// client that stopped taking data (a zero window costs it nothing and would pin the stream and
/// its upstream connection forever).
#[derive(Debug, Clone)]
pub struct Progress(Arc<ProgressState>);

#[derive(Debug)]
struct ProgressState {
    start: Instant,
    /// Milliseconds since `start` when a frame was handed over; `IDLE` while hyper is asking.
    handed_at: AtomicU64,
}

const IDLE: u64 = u64::MAX;

impl Default for Progress {
    fn default() -> Self {
        Self(Arc::new(ProgressState {
            start: Instant::now(),
            handed_at: AtomicU64::new(IDLE),
        }))
    }
}

impl Progress {
    /// The current task's stream progress, if it serves an HTTP/2 stream.
    pub fn current() -> Option<Self> {
        STREAM.try_with(Clone::clone).ok()
    }

    pub(super) fn handed_over(&self) {
        let ms = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(IDLE - 1);
        self.0.handed_at.store(ms, Ordering::Relaxed);
    }

    pub(super) fn asked(&self) {
        self.0.handed_at.store(IDLE, Ordering::Relaxed);
    }

    /// Completes once a frame has waited on the client for `timeout`. No timer is armed until a
    /// frame is handed over, so a stream that never waits on its client (most: one small
    /// response) never arms one. It registers no waker while no frame waits: it must be polled
    /// right after the stream's own future, in the same task, whose polls are the only place a
    /// frame is handed over (as the stream executor's `StreamTask` does).
    pub async fn stalled(self, timeout: Duration) {
        loop {
            let handed = std::future::poll_fn(|_| match self.0.handed_at.load(Ordering::Relaxed) {
                IDLE => Poll::Pending,
                handed => Poll::Ready(handed),
            })
            .await;
            let deadline = self.0.start + Duration::from_millis(handed) + timeout;
            tokio::time::sleep_until(deadline).await;
            if self.0.handed_at.load(Ordering::Relaxed) == handed {
                return;
            }
        }
    }
}
