//! HTTP/2 streams, run by their connection's own task. hyper hands each new stream to this
//! executor; [`WithStreams`] polls them beside the connection, as HAProxy runs all streams of a
//! connection in one task: no task, scheduling and cross-task wake-up per stream. Each stream is:
//! - owned: it lives inside its connection's task, which is tracked by the process's lifecycle
//!   and dropped when the grace period is cut, streams and all;
//! - bounded: a stream whose client stopped taking its response (see [`Progress`]) for
//!   `send_timeout` is dropped, which resets it (RST_STREAM) and releases its upstream leg;
//! - counted: the connection knows when nothing is in flight, which is when it is idle.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hyper::server::conn::http2;
use hyper_util::rt::TokioTimer;
use tokio::sync::Notify;
use tokio::task::futures::TaskLocalFuture;

use crate::body::{Progress, STREAM};
use crate::config::Limits;

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor of one HTTP/2 connection's streams: it queues them for [`WithStreams`].
#[derive(Debug, Clone)]
pub struct StreamExecutor {
    send_timeout: Duration,
    in_flight: Arc<OpenStreams>,
    accepted: Arc<Accepted>,
}

/// Streams hyper accepted during the connection's last poll, not yet started.
#[derive(Default)]
struct Accepted(Mutex<Vec<StreamFuture>>);

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted").finish_non_exhaustive()
    }
}

impl Accepted {
    fn take(&self) -> Vec<StreamFuture> {
        // A queue of futures holds no invariant a panicking holder could break.
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl StreamExecutor {
    /// Streams of one connection, counted into `in_flight`.
    pub fn new(send_timeout: Duration, in_flight: Arc<OpenStreams>) -> Self {
        Self {
            send_timeout,
            in_flight,
            accepted: Arc::default(),
        }
    }

    /// `conn`, the connection hyper serves with this executor, with its streams.
    pub fn run<C>(&self, conn: C) -> WithStreams<C> {
        WithStreams {
            conn,
            streams: FuturesUnordered::new(),
            accepted: self.accepted.clone(),
        }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let progress = Progress::default();
        let task = StreamTask {
            stalled: progress.clone().stalled(self.send_timeout),
            stream: STREAM.scope(progress, stream),
            _entered: self.in_flight.enter(),
        };
        self.accepted
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(task));
    }
}

pin_project_lite::pin_project! {
    /// A stream with its stall watch. A named future rather than an `async` block: the block
    /// kept the stream both as its captured argument and as the future it awaited, more than
    /// twice the stream's size in every stream's allocation, and moved it on its first poll.
    struct StreamTask<F, S> {
        #[pin]
        stream: TaskLocalFuture<Progress, F>,
        #[pin]
        stalled: S,
        _entered: Entered,
    }
}

impl<F, S> Future for StreamTask<F, S>
where
    F: Future<Output = ()>,
    S: Future<Output = ()>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // The stream first: its polls are where frames are handed over, and `stalled` looks
        // right after (see `Progress::stalled`).
        if this.stream.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.stalled.poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/2 connection and its streams, polled together; it completes with the
    /// connection, and streams still running then are dropped (reset) with it.
    pub struct WithStreams<C> {
        #[pin]
        conn: C,
        streams: FuturesUnordered<StreamFuture>,
        accepted: Arc<Accepted>,
    }
}

impl<C> WithStreams<C> {
    /// The connection, to ask it to shut down gracefully.
    pub fn conn(self: Pin<&mut Self>) -> Pin<&mut C> {
        self.project().conn
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.project();
        let done = this.conn.poll(cx);
        // Streams the connection accepted just now start at once; the frames they queue wake
        // this same task, which flushes them on its next poll.
        this.streams.extend(this.accepted.take());
        while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {}
        done
    }
}

/// How many streams of one connection are in flight.
#[derive(Debug, Default)]
pub struct OpenStreams {
    count: AtomicUsize,
    changed: Notify,
}

/// One stream in flight, until dropped.
#[derive(Debug)]
pub struct Entered(Arc<OpenStreams>);

impl Drop for Entered {
    fn drop(&mut self) {
        // Only the last stream leaving matters to `idle` (each notify takes Notify's lock).
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

impl OpenStreams {
    fn enter(self: &Arc<Self>) -> Entered {
        // Only the first stream entering matters to `idle`.
        if self.count.fetch_add(1, Ordering::SeqCst) == 0 {
            self.changed.notify_waiters();
        }
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

/// HTTP/2 settings of one connection, whose streams run on `executor`.
pub(super) fn h2_builder(
    limits: &Limits,
    executor: StreamExecutor,
) -> http2::Builder<StreamExecutor> {
    let mut builder = http2::Builder::new(executor);
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}
