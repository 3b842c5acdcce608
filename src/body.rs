//! The body types of the request path. [`RequestBody`] streams a client's body to an upstream
//! within the route's limits. [`ResponseBody`] is what clients receive: either a short body the
//! proxy wrote itself or an upstream's body (`UpstreamBody`, which hands its connection back to
//! the pool at its end), streamed as it arrives and, on HTTP/2, watched by its [`Progress`].

mod progress;
mod request;
mod upstream;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub use progress::{Progress, STREAM};
pub use request::{RequestBody, RequestBodyError};
pub use upstream::{ConnectionPool, Lent, UpstreamBody};

/// What a client receives.
#[derive(Debug)]
pub enum ResponseBody {
    /// Written by the proxy itself; `None` once sent.
    Full(Option<Bytes>),
    /// Streamed from an upstream; on HTTP/2, with the stream's progress record.
    Upstream(UpstreamBody),
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
        Self::Upstream(body.watched(Progress::current()))
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
            Self::Upstream(upstream) => upstream.next_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(data) => data.is_none(),
            Self::Upstream(upstream) => upstream.inner().is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Upstream(upstream) => upstream.inner().size_hint(),
        }
    }
}
