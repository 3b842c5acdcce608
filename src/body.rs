//! The two body types of the request path.
//!
//! [`RequestBody`] streams a client's body to an upstream while enforcing the route's size limit
//! and the time allowed between reads. [`ResponseBody`] is what clients receive: either a short
//! body the proxy wrote itself or an upstream's body, streamed as it arrives.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::access_log::Exchange;
use crate::upstream::UpstreamBody;

/// Why a client's request body could not be forwarded. The client is to blame for all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestBodyError {
    /// More bytes than the route accepts (RFC 9110 15.5.14: 413).
    #[error("request body exceeds the route's limit")]
    TooLarge,
    /// The client stopped sending for longer than `body_read_timeout` (408).
    #[error("client stopped sending the request body")]
    Timeout,
    /// Malformed framing (bad chunk, short body) or a reset stream. hyper's error is dropped:
    /// it says nothing the status does not, and keeping this type `Copy` lets it be found in
    /// and lifted out of the upstream client's error chain.
    #[error("request body was malformed or cut short")]
    Malformed,
}

/// A client's body on its way upstream, bounded in size and in time between reads.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    remaining: u64,
    read_timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    exchange: Option<Arc<Exchange>>,
}

impl RequestBody {
    /// Wraps `inner`; more than `limit` bytes, or a pause longer than `read_timeout`, fail it.
    /// Bytes read are counted into `exchange` for the access log.
    pub fn new(
        inner: Incoming,
        limit: u64,
        read_timeout: Duration,
        exchange: Option<Arc<Exchange>>,
    ) -> Self {
        Self {
            inner,
            remaining: limit,
            read_timeout,
            deadline: None,
            exchange,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                this.remaining = this
                    .remaining
                    .checked_sub(len)
                    .ok_or(RequestBodyError::TooLarge)?;
                if let Some(exchange) = &this.exchange {
                    exchange.add_request_bytes(len);
                }
                if let Some(deadline) = &mut this.deadline {
                    deadline.as_mut().reset(Instant::now() + this.read_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => Poll::Ready(Some(Err(RequestBodyError::Malformed))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = this.read_timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(RequestBodyError::Timeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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

    /// Completes once a frame has waited on the client for `timeout`.
    pub async fn stalled(&self, timeout: Duration) {
        loop {
            let handed = self.0.handed_at.load(Ordering::Relaxed);
            if handed == IDLE {
                tokio::time::sleep(timeout).await;
                continue;
            }
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
