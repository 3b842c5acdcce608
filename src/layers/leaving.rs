//! While the process is leaving (SIGTERM received, `drain_delay` running) every HTTP/1 response
//! says `Connection: close`, so a keep-alive client reconnects, through its balancer, to an
//! instance that stays, instead of finding its connection closed under a request later.
//!
//! HTTP/2 connections get GOAWAY instead (`server.rs`), and a `CONNECT` keeps its tunnel.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::CONNECTION;
use http::{HeaderValue, Method, Response, Version};
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

use crate::exchange::InFlight;

/// Adds `Connection: close` to HTTP/1 responses once `leaving` is cancelled. The token is shared
/// behind an `Arc`: every request clones the service and its future holds the token, and a
/// token's own clone and drop each take a lock.
#[derive(Debug, Clone)]
pub struct CloseWhenLeavingLayer {
    leaving: Arc<CancellationToken>,
}

impl CloseWhenLeavingLayer {
    /// Closes connections once `leaving` is cancelled.
    pub fn new(leaving: CancellationToken) -> Self {
        Self {
            leaving: Arc::new(leaving),
        }
    }
}

impl<S> Layer<S> for CloseWhenLeavingLayer {
    type Service = CloseWhenLeaving<S>;

    fn layer(&self, inner: S) -> CloseWhenLeaving<S> {
        CloseWhenLeaving {
            inner,
            leaving: self.leaving.clone(),
        }
    }
}

/// See [`CloseWhenLeavingLayer`].
#[derive(Debug, Clone)]
pub struct CloseWhenLeaving<S> {
    inner: S,
    leaving: Arc<CancellationToken>,
}

impl<S, B, R> Service<InFlight<B>> for CloseWhenLeaving<S>
where
    S: Service<InFlight<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = CloseWhenLeavingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, in_flight: InFlight<B>) -> Self::Future {
        let request = &in_flight.request;
        let persistent =
            request.version() <= Version::HTTP_11 && request.method() != Method::CONNECT;
        CloseWhenLeavingFuture {
            leaving: persistent.then(|| self.leaving.clone()),
            inner: self.inner.call(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`CloseWhenLeaving`].
    pub struct CloseWhenLeavingFuture<F> {
        #[pin]
        inner: F,
        leaving: Option<Arc<CancellationToken>>,
    }
}

impl<F, R, E> Future for CloseWhenLeavingFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        // Decided when the response is ready: a long request that outlived the signal closes too.
        if this.leaving.as_ref().is_some_and(|l| l.is_cancelled()) {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response))
    }
}
