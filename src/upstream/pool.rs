//! Keep-alive connections to one upstream target, on hyper's own HTTP/1.1 client connections.
//!
//! Why not hyper-util's pooled client: on the request path it hashes a `(scheme, authority)` key
//! with SipHash several times per request, moves the request through a stack of futures, and
//! spawns a task per request that waits for the connection to come free (callgrind figures in
//! `docs/performance.md`). Here each target owns its list, and a connection goes back to it the
//! moment its response body has ended, from the task that read that body.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use crate::body::RequestBody;

/// The idle connections to one target, most recently used last.
#[derive(Debug)]
pub(super) struct Pool {
    state: Mutex<State>,
    idle_timeout: Duration,
}

#[derive(Debug, Default)]
struct State {
    idle: Vec<Idle>,
    /// Whether a reaper task is running; one runs while `idle` is not empty.
    reaping: bool,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

impl Pool {
    pub(super) fn new(idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            idle_timeout,
        })
    }

    /// The most recently used connection that is still open and ready. The most recent one is
    /// the least likely to have been closed by the upstream's own keep-alive timeout.
    pub(super) fn take(&self) -> Option<SendRequest<RequestBody>> {
        let now = Instant::now();
        let mut state = self.lock();
        while let Some(entry) = state.idle.pop() {
            if entry.sender.is_ready() && now.duration_since(entry.since) < self.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    pub(super) fn put(self: &Arc<Self>, sender: SendRequest<RequestBody>) {
        let mut state = self.lock();
        state.idle.push(Idle {
            sender,
            since: Instant::now(),
        });
        if !state.reaping {
            state.reaping = self.reap_when_idle_too_long();
        }
    }

    /// Closes connections unused for `idle_timeout`, so a burst does not hold upstream
    /// connections open forever once traffic stops. One reaper runs while the list is not
    /// empty; it holds the pool weakly, so a pool dropped by a reload takes its connections
    /// with it. False when there is no runtime to run it on.
    fn reap_when_idle_too_long(self: &Arc<Self>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let pool = Arc::downgrade(self);
        let period = self.idle_timeout;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(pool) = Weak::upgrade(&pool) else {
                    return;
                };
                let mut state = pool.lock();
                let now = Instant::now();
                state.idle.retain(|entry| {
                    !entry.sender.is_closed() && now.duration_since(entry.since) < period
                });
                if state.idle.is_empty() {
                    state.reaping = false;
                    return;
                }
            }
        });
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state holds no invariant a panicking holder could break.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
