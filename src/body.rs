//! The body types of the request path. [`RequestBody`] (in `request_body`) streams a client's
//! body to an upstream within the route's limits. [`ResponseBody`] is what clients receive:
//! either a short body the proxy wrote itself or an upstream's body, streamed as it arrives.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use tokio::time::Instant;

pub use crate::request_body::{RequestBody, RequestBodyError};
use crate::upstream::UpstreamBody;

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

    fn handed_over(&self) {
        let ms = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(IDLE - 1);
        self.0.handed_at.store(ms, Ordering::Relaxed);
    }

    fn asked(&self) {
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

/// What a client receives.
#[derive(Debug)]
pub enum ResponseBody {
    /// Written by the proxy itself; `None` once sent.
    Full(Option<Bytes>),
    /// Streamed from an upstream; on HTTP/2, with the stream's progress record.
    Upstream(UpstreamBody, Option<Progress>),
}

impl ResponseBody {
    /// A body the proxy wrote.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }

    /// An upstream's body, watched when the current task serves an HTTP/2 stream.
    pub fn upstream(body: UpstreamBody) -> Self {
        Self::Upstream(body, Progress::current())
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Upstream(inner, None) => Pin::new(inner).poll_frame(cx),
            Self::Upstream(inner, Some(progress)) => {
                progress.asked();
                let frame = Pin::new(inner).poll_frame(cx);
                if matches!(frame, Poll::Ready(Some(Ok(_)))) {
                    progress.handed_over();
                }
                frame
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(data) => data.is_none(),
            Self::Upstream(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Upstream(inner, _) => inner.size_hint(),
        }
    }
}
