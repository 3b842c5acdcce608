//! Turns a [`ProxyError`] into its response, so the services that reach hyper are infallible
//! and the status of every failure is decided in `error.rs` alone.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::error::{Blame, ProxyError};

/// Wraps a fallible service into an infallible one.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorResponseLayer;

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> ErrorResponse<S> {
        ErrorResponse { inner }
    }
}

/// See [`ErrorResponseLayer`].
#[derive(Debug, Clone)]
pub struct ErrorResponse<S> {
    inner: S,
}

impl<S, R> Service<R> for ErrorResponse<S>
where
    S: Service<R, Response = Response<ResponseBody>, Error = ProxyError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ErrorResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Our inner services are always ready; an error here could only be answered per request.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        ErrorResponseFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ErrorResponse`].
    pub struct ErrorResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Future for ErrorResponseFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, ProxyError>>,
{
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match ready!(self.project().inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => {
                // Clients and upstreams fail all day; our own bugs must be seen.
                if error.blame() == Blame::Proxy {
                    tracing::error!(kind = error.kind(), "proxy invariant broken");
                } else {
                    tracing::debug!(
                        kind = error.kind(),
                        status = error.status().as_u16(),
                        "proxy answered"
                    );
                }
                error.to_response()
            }
        };
        Poll::Ready(Ok(response))
    }
}
