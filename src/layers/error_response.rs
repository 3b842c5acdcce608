//! Turns a [`ProxyError`] into its response, so the services that reach hyper are infallible
//! and the status of every failure is decided in `error.rs` alone.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::exchange::{Blame, Exchange, InFlight};

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

impl<S, B> Service<InFlight<B>> for ErrorResponse<S>
where
    S: Service<InFlight<B>, Response = Response<ResponseBody>, Error = ProxyError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ErrorResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Our inner services are always ready; an error here could only be answered per request.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, in_flight: InFlight<B>) -> Self::Future {
        ErrorResponseFuture {
            exchange: in_flight.exchange.clone(),
            inner: self.inner.call(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ErrorResponse`].
    pub struct ErrorResponseFuture<F> {
        #[pin]
        inner: F,
        // Where the error is recorded for the access line, and its id, by which an operator
        // who reads an error here joins it to that line.
        exchange: Arc<Exchange>,
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
                this.exchange.set_error(error.error_kind());
                let request_id = this.exchange.request_id();
                // Clients and upstreams fail all day; our own bugs must be seen.
                if error.blame() == Blame::Proxy {
                    tracing::error!(
                        kind = error.kind(),
                        request_id = %request_id,
                        "proxy invariant broken"
                    );
                } else {
                    tracing::debug!(
                        kind = error.kind(),
                        status = error.status().as_u16(),
                        request_id = %request_id,
                        "proxy answered"
                    );
                }
                error.to_response()
            }
        };
        Poll::Ready(Ok(response))
    }
}
