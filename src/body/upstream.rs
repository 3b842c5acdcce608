//! An upstream's response body, which hands its connection back to its pool at its end. The
//! pool is the upstream module's; it is named here only by what it does ([`ConnectionPool`]),
//! so that the body types do not depend on the client that sends them.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::{Progress, RequestBody};

/// Where an upstream connection goes back to once its response has ended.
pub trait ConnectionPool: Debug + Send + Sync {
    /// Keeps `sender` for the next request.
    fn put(&self, sender: SendRequest<RequestBody>);

    /// The response that borrowed a connection is done with it, whether it went back or not:
    /// the request is no longer in flight.
    fn released(&self);
}

/// A connection in use, to be handed back once its response has been read to the end.
#[derive(Debug)]
pub struct Lent {
    /// The connection; `None` once handed back.
    sender: Option<SendRequest<RequestBody>>,
    /// Where it goes back to.
    pool: Arc<dyn ConnectionPool>,
}

impl Lent {
    /// `sender`, lent by `pool`.
    pub fn new(sender: SendRequest<RequestBody>, pool: Arc<dyn ConnectionPool>) -> Self {
        Self {
            sender: Some(sender),
            pool,
        }
    }

    fn give_back(mut self) {
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if sender.is_ready() {
            self.pool.put(sender);
            return;
        }
        let pool = self.pool.clone();
        // Still writing the request body (the upstream answered early) or not yet past the
        // response's end: it goes back when done, or is dropped if the connection closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put(sender);
            }
        });
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.released();
    }
}

/// An upstream's response body. Its connection goes back to the pool when the body has been
/// read to the end; a body dropped before its end leaves the connection to close, as an
/// HTTP/1.1 connection cannot be reused mid-response.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    lent: Option<Lent>,
    progress: Option<Progress>,
}

impl UpstreamBody {
    /// `inner`, whose connection `lent` goes back at its end.
    pub fn new(inner: Incoming, lent: Option<Lent>) -> Self {
        Self {
            inner,
            lent,
            progress: None,
        }
    }

    /// Has an HTTP/2 stream's `progress` record which frames wait on the client.
    pub(super) fn watched(mut self, progress: Option<Progress>) -> Self {
        self.progress = progress;
        self
    }

    fn ended(&mut self) {
        if let Some(lent) = self.lent.take() {
            lent.give_back();
        }
    }

    /// The next frame, for [`ResponseBody`](super::ResponseBody): the connection goes back at
    /// the body's end, and is dropped after an error.
    pub(super) fn next_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(progress) = &self.progress {
            progress.asked();
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        match &frame {
            // A sized body's end is known after its last byte; the server may never ask again.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Err(_))) => self.lent = None,
            _ => {}
        }
        if let (Some(progress), Poll::Ready(Some(Ok(_)))) = (&self.progress, &frame) {
            progress.handed_over();
        }
        frame
    }

    pub(super) fn inner(&self) -> &Incoming {
        &self.inner
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body that was empty from the start is never polled.
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}
