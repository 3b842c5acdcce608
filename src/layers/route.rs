//! Decides where a request goes before anything is sent anywhere: a valid host (400), covered
//! by this connection's certificate (421, no domain fronting), a safe path (400), a route (404).
//! The normalised path replaces the client's, so routing and forwarding see the same one.
//!
//! Each request is routed by the configuration in service when it arrives, not the one its
//! connection was opened under. `/.portcullis/` is the proxy's own on every host and goes to the
//! gateway, whatever the routes say; internal prefixes fail closed against lenient path
//! readings ([`RouteTable::resolve_guarded`](crate::routing::RouteTable::resolve_guarded)).

use std::borrow::Cow;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::Request;
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use tower::{Layer, Service};

use crate::access_log::Exchange;
use crate::app::{ConnectionInfo, LiveApp};
use crate::error::ProxyError;
use crate::proxy::Routed;
use crate::routing::{PathError, is_reserved, normalize_path, request_host};

/// Routes requests of one connection.
#[derive(Debug, Clone)]
pub struct RouteLayer {
    live: LiveApp,
    conn: Arc<ConnectionInfo>,
}

impl RouteLayer {
    /// Routing for requests arriving on `conn`, by the configuration in service.
    pub fn new(live: LiveApp, conn: Arc<ConnectionInfo>) -> Self {
        Self { live, conn }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;

    fn layer(&self, inner: S) -> RouteService<S> {
        RouteService {
            layer: self.clone(),
            inner,
        }
    }
}

/// See [`RouteLayer`].
#[derive(Debug, Clone)]
pub struct RouteService<S> {
    layer: RouteLayer,
    inner: S,
}

impl<S> Service<Request<Incoming>> for RouteService<S>
where
    S: Service<Routed, Error = ProxyError>,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = Either<Ready<Result<S::Response, ProxyError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        match self.layer.route(request) {
            Ok(routed) => Either::Right(self.inner.call(routed)),
            Err(error) => Either::Left(ready(Err(error))),
        }
    }
}

impl RouteLayer {
    fn route(&self, mut request: Request<Incoming>) -> Result<Routed, ProxyError> {
        let app = self.live.load_full();
        super::message::check(&request, app.limits.max_header_bytes)?;
        let host = request_host(request.version(), request.uri(), request.headers())?;
        if !crate::tls::covers(&self.conn.certificate, &host.name) {
            return Err(ProxyError::Misdirected);
        }
        if let Cow::Owned(path) = normalize_path(request.uri().path())? {
            let rewritten = match request.uri().query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query =
                Some(PathAndQuery::try_from(rewritten).map_err(|_| PathError::NotAbsolute)?);
            *request.uri_mut() =
                http::Uri::from_parts(parts).map_err(|_| PathError::NotAbsolute)?;
        }
        let path = request.uri().path();
        let route = if is_reserved(path) {
            app.reserved.clone()
        } else {
            app.routes
                .resolve_guarded(&host.name, path, |route| route.access.is_some())?
                .ok_or(ProxyError::NoRoute)?
                .clone()
        };
        if let Some(exchange) = request.extensions().get::<Arc<Exchange>>() {
            exchange.set_route(&route);
        }
        Ok(Routed {
            request,
            route,
            host,
            app,
            user: None,
        })
    }
}
