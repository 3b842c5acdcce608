//! HTTP/2 streams as tasks. hyper spawns one task per stream through this executor, which makes
//! each of them owned, bounded and counted:
//! - owned: spawned on the process's task tracker, so shutdown waits for it, then cuts it;
//! - bounded: a stream whose client stopped taking its response (see [`Progress`]) for
//!   `send_timeout` is dropped, which resets it (RST_STREAM) and releases its upstream leg;
//! - counted: the connection knows when nothing is in flight, which is when it is idle.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::body::{Progress, STREAM};
use crate::lifecycle::Lifecycle;

/// The executor of one HTTP/2 connection's streams.
#[derive(Debug, Clone)]
pub struct StreamExecutor {
    lifecycle: Lifecycle,
    send_timeout: Duration,
    in_flight: Arc<InFlight>,
}

impl StreamExecutor {
    /// Streams of one connection, counted into `in_flight`.
    pub fn new(lifecycle: Lifecycle, send_timeout: Duration, in_flight: Arc<InFlight>) -> Self {
        Self {
            lifecycle,
            send_timeout,
            in_flight,
        }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let progress = Progress::default();
        let entered = self.in_flight.enter();
        let (send_timeout, cut) = (self.send_timeout, self.lifecycle.cut.clone());
        self.lifecycle.tracker.spawn(async move {
            let _entered = entered;
            let stalled = progress.stalled(send_timeout);
            tokio::select! {
                () = STREAM.scope(progress.clone(), stream) => {}
                () = stalled => {}
                () = cut.cancelled() => {}
            }
        });
    }
}

/// How many streams of one connection are in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    changed: Notify,
}

/// One stream in flight, until dropped.
#[derive(Debug)]
pub struct Entered(Arc<InFlight>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> Entered {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        Entered(self.clone())
    }

    /// Completes once no stream has been in flight for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => return,
                    () = &mut changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}
