//! The request path of each listener, outermost first. This file is the list; each layer
//! lives in its own module.
//!
//! ```text
//! TLS:   hyper ─▶ HSTS ─▶ access log ─▶ leaving ─▶ error responses ─▶ routing ─▶ gateway ─▶ proxy
//!        Request ─────────────▶ InFlight ──────────────────────────▶ Routed ─▶ Admitted
//! plain: hyper ─▶ access log ─▶ leaving ─▶ redirect
//! ```
//!
//! Each arrow past the access log changes the request's type: [`InFlight`] carries the
//! request's [`Exchange`](crate::exchange::Exchange) (what the access line needs) down to the
//! proxy; routing makes a `Routed`, and only the gateway makes the `Admitted` the proxy takes.

mod access;
mod error_response;
mod leaving;
mod message;
mod route;

use std::convert::Infallible;
use std::sync::Arc;

use http::header::STRICT_TRANSPORT_SECURITY;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder, service_fn};
use tower_http::set_header::SetResponseHeaderLayer;

pub use access::{AccessLogLayer, LoggedBody};
pub use error_response::ErrorResponseLayer;
pub use leaving::CloseWhenLeavingLayer;
pub use route::RouteLayer;

use crate::access_log::Listener;
use crate::app::{App, LiveApp};
use crate::body::ResponseBody;
use crate::connection::ConnectionInfo;
use crate::exchange::InFlight;
use crate::gateway::{AdmittedService, FormBody, GatewayLayer};
use crate::proxy::Proxy;
use crate::redirect::redirect;
use crate::relay::Tunnels;

/// What hyper serves a connection with: every request answered, never an error.
pub trait ConnectionService<B>:
    Service<
        Request<B>,
        Response = Response<LoggedBody<ResponseBody>>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> ConnectionService<B> for S where
    S: Service<
            Request<B>,
            Response = Response<LoggedBody<ResponseBody>>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The service for one TLS connection. Routing and the gateway judge each request by the
/// configuration in service when it arrives (`live`); the rest keeps the one the connection
/// started under. `leaving` is the process's first stopping stage.
pub fn https_service(
    live: &LiveApp,
    conn: Arc<ConnectionInfo>,
    tunnels: Tunnels,
    leaving: &CancellationToken,
) -> impl ConnectionService<Incoming> + use<> {
    let body_read_timeout = live.load().limits.body_read_timeout;
    let proxy = Proxy::new(conn.clone(), tunnels, body_read_timeout);
    https_layers(live, &conn, leaving, proxy)
}

/// Every layer of the TLS listener around `inner`, which receives what routing and the
/// gateway let through: the proxy when serving, a recorder in tests.
fn https_layers<S, B>(
    live: &LiveApp,
    conn: &Arc<ConnectionInfo>,
    leaving: &CancellationToken,
    inner: S,
) -> impl ConnectionService<B> + use<S, B>
where
    S: AdmittedService<B>,
    B: FormBody,
{
    let app = live.load();
    ServiceBuilder::new()
        // Every response carries HSTS, the proxy's own errors included, and an upstream's
        // value is replaced: the policy is ours (RFC 6797 8.1 honours only one).
        .layer(SetResponseHeaderLayer::overriding(
            STRICT_TRANSPORT_SECURITY,
            app.hsts.clone(),
        ))
        // It must see every response, the proxy's own errors included, and it logs when the
        // body is done, so the line has the bytes really sent.
        .layer(AccessLogLayer::new(
            app.process.access_log.clone(),
            app.process.metrics.clone(),
            Listener::Https,
            Some(conn.tls_version),
            conn.client_ip,
        ))
        // Once the process is leaving, keep-alive clients are sent elsewhere after this response.
        .layer(CloseWhenLeavingLayer::new(leaving.clone()))
        // Every failure below becomes a response here, so what reaches hyper never fails.
        .layer(ErrorResponseLayer)
        // Host, certificate coverage, path normalisation, route: all before any upstream IO.
        .layer(RouteLayer::new(live.clone(), conn.clone()))
        // Internal routes and the proxy's own `/.portcullis/` endpoints: certificate identity,
        // grants, second factor, audit. After routing, which names the route's grants; before
        // any upstream IO.
        .layer(GatewayLayer::new(conn.clone()))
        .service(inner)
}

/// The service for one plain-HTTP connection.
pub fn http_service(
    app: &Arc<App>,
    client: std::net::IpAddr,
    leaving: &CancellationToken,
) -> impl ConnectionService<Incoming> + use<> {
    let redirecting = app.clone();
    ServiceBuilder::new()
        .layer(AccessLogLayer::new(
            app.process.access_log.clone(),
            app.process.metrics.clone(),
            Listener::Http,
            None,
            client,
        ))
        .layer(CloseWhenLeavingLayer::new(leaving.clone()))
        .service(service_fn(move |in_flight: InFlight<Incoming>| {
            let response = redirect(&redirecting, &in_flight.request);
            std::future::ready(Ok::<_, Infallible>(response))
        }))
}

#[cfg(test)]
mod tests;
