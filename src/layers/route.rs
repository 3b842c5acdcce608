//! Decides where a request goes before anything is sent anywhere: a valid host (400), covered
//! by this connection's certificate (421, no domain fronting), a safe path (400), a route (404).
//! The normalised path replaces the client's, so routing and forwarding see the same one.
//!
//! A `CONNECT` names its target, not a host: it is routed by the connection's SNI (the gateway's
//! name) to one of that host's `[[tunnels]]` targets and to nothing else: no other name, port
//! or address, and no `CONNECT` at all on a host without tunnels (405).
//!
//! Each request is routed by the configuration in service when it arrives, not the one its
//! connection was opened under. `/.portcullis/` is the proxy's own on every host and goes to the
//! gateway, whatever the routes say; internal prefixes fail closed against lenient path
//! readings ([`Routes::route`](crate::routing::Routes::route)).
//!
//! A route's `limit` (and a tunnel's `connect_rate`) is counted here, per client address, before
//! anything else reads the request: over it, `429` with `Retry-After`.

use std::borrow::Cow;
use std::future::{Ready, ready};
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::uri::PathAndQuery;
use http::{Method, Request};
use tower::{Layer, Service};

use crate::app::{App, LiveApp};
use crate::connection::ConnectionInfo;
use crate::error::ProxyError;
use crate::exchange::{Exchange, InFlight};
use crate::gateway::Routed;
use crate::host::{RequestHost, request_host};
use crate::path::{PathError, normalize_path};
use crate::routing::{Action, Route, TunnelError};

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

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> Service<InFlight<B>> for RouteService<S>
where
    S: Service<Routed<B>, Error = ProxyError, Future: Send + 'static> + Clone + Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = Either<
        Ready<Result<S::Response, ProxyError>>,
        Either<S::Future, BoxFuture<Result<S::Response, ProxyError>>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, in_flight: InFlight<B>) -> Self::Future {
        match self.layer.route(in_flight) {
            Ok(Routing::Routed(routed)) => Either::Right(Either::Left(self.inner.call(routed))),
            // Counted in the store the instances share: a round trip before the request goes on.
            Ok(Routing::Counting(counting)) => {
                let mut inner = self.inner.clone();
                Either::Right(Either::Right(Box::pin(async move {
                    inner.call(counting.counted().await?).await
                })))
            }
            Err(error) => Either::Left(ready(Err(error))),
        }
    }
}

impl RouteLayer {
    fn route<B>(&self, in_flight: InFlight<B>) -> Result<Routing<B>, ProxyError> {
        let app = self.live.load_full();
        super::message::check(&in_flight.request, app.limits.max_header_bytes)?;
        if in_flight.request.method() == Method::CONNECT {
            return self.route_tunnel(in_flight, &app);
        }
        let InFlight {
            mut request,
            exchange,
        } = in_flight;
        let host = request_host(request.version(), request.uri(), request.headers())?;
        if !self.conn.certificate_covers(&host.name) {
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
        let route = app
            .routes
            .route(&host.name, request.uri().path())?
            .ok_or(ProxyError::NoRoute)?
            .clone();
        routed((request, exchange), route, host, &app, &self.conn)
    }

    fn route_tunnel<B>(
        &self,
        in_flight: InFlight<B>,
        app: &Arc<App>,
    ) -> Result<Routing<B>, ProxyError> {
        let request = &in_flight.request;
        // RFC 8441's extended CONNECT asks for another protocol, not a byte stream.
        if request.extensions().get::<hyper::ext::Protocol>().is_some() {
            return Err(TunnelError::NotOffered.into());
        }
        let sni = self.conn.sni.as_deref().ok_or(TunnelError::NotOffered)?;
        let uri = request.uri();
        if uri.scheme().is_some() || uri.path_and_query().is_some() {
            return Err(TunnelError::NotAuthority.into());
        }
        let authority = uri.authority().cloned().ok_or(TunnelError::NotAuthority)?;
        // RFC 9110 9.3.6 allows no userinfo; `x@db1:22` would name one target to us and
        // maybe another to whatever reads the audit line.
        if authority.as_str().contains('@') {
            return Err(TunnelError::NotAuthority.into());
        }
        let route = match app.routes.tunnel(sni, &authority) {
            Ok(route) => route.clone(),
            Err(TunnelError::UnknownTarget) => {
                return Err(match &app.gateway {
                    Some(gateway) => gateway.unknown_target(&self.conn, sni, authority.as_str()),
                    None => TunnelError::UnknownTarget.into(),
                });
            }
            Err(error) => return Err(error.into()),
        };
        let host = RequestHost {
            name: sni.to_owned(),
            authority,
        };
        routed(
            (in_flight.request, in_flight.exchange),
            route,
            host,
            app,
            &self.conn,
        )
    }
}

/// A routed request, or one still to be counted against its route's shared limit.
enum Routing<B> {
    Routed(Routed<B>),
    Counting(Counting<B>),
}

/// A request whose route's limit is counted across instances: its `Routed` is handed over only
/// once the count let it through.
struct Counting<B> {
    routed: Routed<B>,
    client: IpAddr,
}

impl<B> Counting<B> {
    async fn counted(self) -> Result<Routed<B>, ProxyError> {
        if let Some(limit) = &self.routed.route.limit {
            limit.check_shared(self.client).await?;
        }
        Ok(self.routed)
    }
}

/// The routed request, once its client is within the route's rate limit: a `Routed` leaves
/// here only for a request its route's limit let through, or inside a [`Counting`].
fn routed<B>(
    (request, exchange): (Request<B>, Arc<Exchange>),
    route: Arc<Route>,
    host: RequestHost,
    app: &App,
    conn: &ConnectionInfo,
) -> Result<Routing<B>, ProxyError> {
    exchange.set_route(route.label.clone());
    let shared = match &route.limit {
        Some(limit) if limit.is_shared() => true,
        Some(limit) => {
            limit.check(conn.client_ip)?;
            false
        }
        None => false,
    };
    // The gateway of the same configuration judges what it guards; public routes never
    // consult it.
    let guarded = route.access.is_some() || matches!(route.action, Action::Reserved);
    let routed = Routed {
        request,
        exchange,
        route,
        host,
        routes: app.routes.clone(),
        gateway: app.gateway.as_ref().filter(|_| guarded).cloned(),
    };
    Ok(match shared {
        true => Routing::Counting(Counting {
            routed,
            client: conn.client_ip,
        }),
        false => Routing::Routed(routed),
    })
}
