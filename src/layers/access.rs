//! Writes one access-log event per request, when the response body ends (or is abandoned), so
//! the line carries the final status, the bytes really sent and the full duration.
//!
//! Outermost on both listeners: it must see every response, the proxy's own included.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use crate::access_log::{AccessLog, Event, Listener};
use crate::connection::TlsVersion;
use crate::exchange::{ErrorKind, Exchange, InFlight};
use crate::metrics::Metrics;
use crate::request_id::{RequestId, X_REQUEST_ID};

/// Logs requests of one connection.
#[derive(Debug, Clone)]
pub struct AccessLogLayer {
    log: Arc<AccessLog>,
    metrics: Arc<Metrics>,
    listener: Listener,
    tls: Option<TlsVersion>,
    client: Option<IpAddr>,
}

impl AccessLogLayer {
    /// Logging for a connection on `listener`; `client` is kept only if the log hashes clients.
    pub fn new(
        log: Arc<AccessLog>,
        metrics: Arc<Metrics>,
        listener: Listener,
        tls: Option<TlsVersion>,
        client: IpAddr,
    ) -> Self {
        let client = log.wants_client().then_some(client);
        Self {
            log,
            metrics,
            listener,
            tls,
            client,
        }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLogService<S>;

    fn layer(&self, inner: S) -> AccessLogService<S> {
        AccessLogService {
            layer: self.clone(),
            inner,
        }
    }
}

/// See [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLogService<S> {
    layer: AccessLogLayer,
    inner: S,
}

impl<S, B, ReqB> Service<Request<ReqB>> for AccessLogService<S>
where
    S: Service<InFlight<ReqB>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<LoggedBody<B>>;
    type Error = Infallible;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let exchange = Arc::new(Exchange::new(RequestId::new()));
        let pending = Pending {
            layer: self.layer.clone(),
            exchange: exchange.clone(),
            method: request.method().clone(),
            version: request.version(),
            // A copy, not a share of hyper's parsed target: that is a slice of the connection's
            // read buffer, and the writer thread holds events for up to a poll interval; a
            // shared slice would keep hyper from reusing its buffer, so that every request
            // would allocate a new one (8 KiB) and free the old one on the writer thread.
            target: request
                .uri()
                .path_and_query()
                .map(|target| target.as_str().into()),
            start: Instant::now(),
        };
        AccessLogFuture {
            inner: self.inner.call(InFlight { request, exchange }),
            pending: Some(pending),
        }
    }
}

/// What is known at the request head.
#[derive(Debug)]
struct Pending {
    layer: AccessLogLayer,
    exchange: Arc<Exchange>,
    method: Method,
    version: Version,
    target: Option<Box<str>>,
    start: Instant,
}

pin_project_lite::pin_project! {
    /// The future of [`AccessLogService`].
    pub struct AccessLogFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F, B> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<LoggedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        if let Some(pending) = this.pending.as_ref() {
            // Ours replaces any the upstream set: the client joins its report to our logs.
            let mut id = pending.exchange.id_header();
            // Unique to each response, so HPACK would only add it to the connection's table
            // and evict fields that do repeat: sent as never indexed (RFC 7541 6.2.3).
            id.set_sensitive(true);
            response.headers_mut().insert(X_REQUEST_ID.clone(), id);
        }
        let status = response.status();
        let line = this.pending.take().map(|pending| Line {
            error: pending.exchange.error(),
            pending,
            status,
            bytes: 0,
        });
        Poll::Ready(Ok(response.map(|inner| LoggedBody { inner, line })))
    }
}

#[derive(Debug)]
struct Line {
    pending: Pending,
    status: StatusCode,
    error: Option<ErrorKind>,
    bytes: u64,
}

impl Line {
    fn emit(self) {
        let Pending {
            layer,
            exchange,
            method,
            version,
            target,
            start,
        } = self.pending;
        let route = exchange.route();
        let duration = start.elapsed();
        let route_name = route.as_ref().map(|r| &r.name);
        layer
            .metrics
            .request(route_name, self.status.as_u16(), duration, self.error);
        if method == Method::CONNECT {
            layer
                .metrics
                .tunnel_answered(route_name, self.status.as_u16());
        }
        layer.log.log(Event {
            time: SystemTime::now(),
            listener: layer.listener,
            version,
            tls: layer.tls,
            method,
            route,
            target,
            status: self.status,
            request_bytes: exchange.request_bytes(),
            retries: exchange.retries(),
            response_bytes: self.bytes,
            duration,
            error: self.error.map(|e| e.name),
            client: layer.client,
            request_id: exchange.request_id(),
        });
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts what it sends and logs the request when it is done.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        line: Option<Line>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(line) = this.project().line.take() {
                line.emit();
            }
        }
    }
}

impl<B: Body<Data = Bytes>> Body for LoggedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let (Some(Ok(frame)), Some(line)) = (&frame, this.line.as_mut()) {
            line.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
