//! A client's request body on its way upstream: the route's size limit and the time allowed
//! between reads are enforced as it streams. A small body may be read whole first, so that an
//! idempotent request can be sent again (the upstream module's retries).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::exchange::Exchange;

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
    inner: Source,
    remaining: u64,
    read_timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    exchange: Arc<Exchange>,
}

/// Where the bytes come from.
#[derive(Debug)]
enum Source {
    /// The client, as they arrive.
    Client(Incoming),
    /// A copy of a body already read whole (`None` once sent).
    Replay(Option<Bytes>),
}

impl RequestBody {
    /// Wraps `inner`; more than `limit` bytes, or a pause longer than `read_timeout`, fail it.
    /// Bytes read are counted into `exchange` for the access log.
    pub fn new(
        inner: Incoming,
        limit: u64,
        read_timeout: Duration,
        exchange: Arc<Exchange>,
    ) -> Self {
        Self {
            inner: Source::Client(inner),
            remaining: limit,
            read_timeout,
            deadline: None,
            exchange,
        }
    }

    /// The request's shared record.
    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// An empty body of the same request, to make copies from with [`Self::replay`].
    pub fn template(&self) -> Self {
        Self {
            inner: Source::Replay(None),
            remaining: 0,
            read_timeout: self.read_timeout,
            deadline: None,
            exchange: self.exchange.clone(),
        }
    }

    /// A body of the same request carrying `bytes`, already read and counted.
    pub fn replay(&self, bytes: Bytes) -> Self {
        Self {
            inner: Source::Replay(Some(bytes)),
            ..self.template()
        }
    }

    /// The whole body, read under its limits. Trailers are dropped: only a body of a declared
    /// length, which has none, is read whole.
    pub async fn read_whole(self) -> Result<Bytes, RequestBodyError> {
        Ok(self.collect().await?.to_bytes())
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
        let inner = match &mut this.inner {
            Source::Client(inner) => inner,
            Source::Replay(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                this.remaining = this
                    .remaining
                    .checked_sub(len)
                    .ok_or(RequestBodyError::TooLarge)?;
                this.exchange.add_request_bytes(len);
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
        match &self.inner {
            Source::Client(inner) => inner.is_end_stream(),
            Source::Replay(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Client(inner) => inner.size_hint(),
            Source::Replay(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
