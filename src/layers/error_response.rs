//! Turns a [`ProxyError`] into its response, so the services that reach hyper are infallible
//! and the status of every failure is decided in `error.rs` alone.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::access_log::request_id_of;
use crate::body::ResponseBody;
use crate::error::{Blame, ProxyError};
use crate::request_id::RequestId;

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

impl<S, B> Service<Request<B>> for ErrorResponse<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = ProxyError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ErrorResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Our inner services are always ready; an error here could only be answered per request.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // An operator who reads an error here joins it to the access line by this id.
        ErrorResponseFuture {
            request_id: request_id_of(request.extensions()),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ErrorResponse`].
    pub struct ErrorResponseFuture<F> {
        #[pin]
        inner: F,
        request_id: Option<RequestId>,
    }
}

impl<F> Future for ErrorResponseFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, ProxyError>>,
{
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => {
                // Clients and upstreams fail all day; our own bugs must be seen.
                if error.blame() == Blame::Proxy {
                    tracing::error!(
                        kind = error.kind(),
                        request_id = this.request_id.map(tracing::field::display),
                        "proxy invariant broken"
                    );
                } else {
                    tracing::debug!(
                        kind = error.kind(),
                        status = error.status().as_u16(),
                        request_id = this.request_id.map(tracing::field::display),
                        "proxy answered"
                    );
                }
                error.to_response()
            }
        };
        Poll::Ready(Ok(response))
    }
}
