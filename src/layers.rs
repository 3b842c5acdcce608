//! The HTTPS request path, outermost first. This file is the list; each layer lives in its own
//! module.
//!
//! ```text
//! hyper ─▶ HSTS ─▶ error responses ─▶ routing ─▶ proxy ─▶ upstream
//! ```

mod error_response;
mod route;

use std::convert::Infallible;
use std::sync::Arc;

use http::header::STRICT_TRANSPORT_SECURITY;
use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};
use tower_http::set_header::SetResponseHeaderLayer;

pub use error_response::{ErrorResponse, ErrorResponseLayer};
pub use route::{RouteLayer, RouteService};

use crate::app::{App, ConnectionInfo};
use crate::body::ResponseBody;
use crate::proxy::Proxy;

/// The service for one TLS connection.
pub fn https_service(
    app: &Arc<App>,
    conn: Arc<ConnectionInfo>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        // Outermost, so every response carries HSTS, the proxy's own errors included, and an
        // upstream's value is replaced: the policy is ours (RFC 6797 8.1 honours only one).
        .layer(SetResponseHeaderLayer::overriding(
            STRICT_TRANSPORT_SECURITY,
            app.hsts.clone(),
        ))
        // Every failure below becomes a response here, so what reaches hyper never fails.
        .layer(ErrorResponseLayer)
        // Host, certificate coverage, path normalisation, route: all before any upstream IO.
        .layer(RouteLayer::new(app.clone(), conn.clone()))
        .service(Proxy::new(conn, app.limits.body_read_timeout))
}
