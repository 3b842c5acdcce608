//! The innermost service: sends a routed request to its upstream and streams the answer back,
//! or, for a `CONNECT` the gateway admitted, connects to the tunnel's target and hands both
//! sides to the connection's tunnels.
//!
//! Bodies stream both ways; nothing is buffered whole. Framing is never copied: hyper re-frames
//! the request from the body it actually read, so `Content-Length`/`Transfer-Encoding` tricks
//! cannot reach an upstream as sent.

mod headers;
mod owned;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use tower::Service;

pub use headers::{USER_HEADER, Vouched, requested_upgrade, rewrite_request, rewrite_response};
pub use owned::{OWNED_REQUEST_HEADERS, OWNED_REQUEST_PREFIXES};

use crate::access_log::Exchange;
use crate::audit::ClosedBy;
use crate::body::{RequestBody, ResponseBody};
use crate::connection::ConnectionInfo;
use crate::error::ProxyError;
use crate::routing::{Action, Route, Routed};
use crate::tunnel::{Admitted, TunnelTerms, Tunnels};
use crate::upstream::UpstreamError;

/// Forwards routed requests for one client connection. Cloned for every request (hyper's service
/// glue does), so what it holds is shared: `Tunnels` carries cancellation tokens, whose clone
/// and drop each take a lock.
#[derive(Debug, Clone)]
pub struct Proxy {
    conn: Arc<ConnectionInfo>,
    tunnels: Arc<Tunnels>,
    body_read_timeout: Duration,
}

impl Proxy {
    /// A proxy for requests arriving on `conn`, whose upgrades and tunnels run in `tunnels`.
    pub fn new(conn: Arc<ConnectionInfo>, tunnels: Tunnels, body_read_timeout: Duration) -> Self {
        Self {
            conn,
            tunnels: Arc::new(tunnels),
            body_read_timeout,
        }
    }
}

impl Service<Routed> for Proxy {
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed) -> Self::Future {
        if matches!(routed.route.action, Action::Tunnel(_)) {
            return Box::pin(open_tunnel(self.clone(), routed));
        }
        // Everything up to the upstream exchange is synchronous and done here: a future keeps
        // room for its arguments for its whole life, and this one is moved on every request.
        match self.prepare(routed) {
            Ok(Prepared::Forward(forwarding)) => {
                Box::pin(forwarding.exchange(self.tunnels.clone()))
            }
            Ok(Prepared::Answered(response)) => Box::pin(std::future::ready(Ok(response))),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }
}

/// What a routed request becomes before any upstream IO.
enum Prepared {
    /// The request rewritten for its upstream.
    Forward(Forwarding),
    /// A responder route's answer.
    Answered(Response<ResponseBody>),
}

/// A request on its way to its route's upstream.
struct Forwarding {
    /// Holds the upstream the request goes to.
    route: Arc<Route>,
    request: Request<RequestBody>,
    /// The client side of a requested protocol upgrade.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Proxy {
    fn prepare(&self, routed: Routed) -> Result<Prepared, ProxyError> {
        let Routed {
            mut request,
            route,
            host,
            user,
            ..
        } = routed;
        let declared_length = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > route.max_body_bytes) {
            return Err(ProxyError::PayloadTooLarge);
        }
        let strip = match &route.action {
            Action::Forward { strip, .. } => strip,
            Action::Respond { status, body } => {
                return Ok(Prepared::Answered(respond(*status, body)));
            }
            // The gateway answers these, and tunnels are opened before; one reaching here is a
            // bug of ours, never forwarded.
            Action::Reserved | Action::Tunnel(_) => return Err(ProxyError::Internal),
        };
        let upgrade = requested_upgrade(request.version(), request.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let exchange = parts.extensions.get::<Arc<Exchange>>().cloned();
        let request_id = exchange.as_ref().map(|e| e.request_id().header_value());
        let vouched = Vouched {
            host: &host.authority,
            client: &self.conn.forwarded_for,
            user: user.as_ref(),
            request_id: request_id.as_ref(),
        };
        rewrite_request(&mut parts.headers, parts.version, &vouched, strip, upgrade);
        parts.uri = origin_form(&parts.uri);
        parts.version = Version::HTTP_11;
        let body = RequestBody::new(body, route.max_body_bytes, self.body_read_timeout, exchange);
        Ok(Prepared::Forward(Forwarding {
            route,
            request: Request::from_parts(parts, body),
            client_upgrade,
        }))
    }
}

impl Forwarding {
    async fn exchange(self, tunnels: Arc<Tunnels>) -> Result<Response<ResponseBody>, ProxyError> {
        let Self {
            route,
            request,
            client_upgrade,
        } = self;
        let Action::Forward { upstream, .. } = &route.action else {
            return Err(ProxyError::Internal);
        };
        let mut response = upstream.send(request).await?;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let client = client_upgrade.ok_or(UpstreamError::UpgradeWithoutRequest)?;
            tunnels.spawn(client, hyper::upgrade::on(&mut response));
        }
        let (mut parts, body) = response.into_parts();
        rewrite_response(&mut parts.headers, switching);
        Ok(Response::from_parts(parts, ResponseBody::upstream(body)))
    }
}

/// Connects an admitted tunnel's target and hands both sides to the connection's tunnels: the
/// client gets its `200`, then the target's bytes.
async fn open_tunnel(proxy: Proxy, routed: Routed) -> Result<Response<ResponseBody>, ProxyError> {
    let Routed {
        mut request,
        route,
        tunnel,
        ..
    } = routed;
    // Only what the gateway admitted (and wrote to the audit trail) is ever opened.
    let (Action::Tunnel(target), Some(audit)) = (&route.action, tunnel) else {
        return Err(ProxyError::Internal);
    };
    let second_factor = audit.second_factor;
    let lease = match proxy.tunnels.reserve(&proxy.conn) {
        Ok(lease) => lease,
        Err(over) => {
            audit.close(ClosedBy::OverLimit, 0, 0);
            return Err(ProxyError::OverLimit(over));
        }
    };
    let upstream = match target.upstream.connect().await {
        Ok(upstream) => upstream,
        Err(error) => {
            audit.close(ClosedBy::UpstreamFailed, 0, 0);
            return Err(error.into());
        }
    };
    proxy.tunnels.spawn_connect(Admitted {
        client: hyper::upgrade::on(&mut request),
        upstream,
        audit,
        route: route.label.name.clone(),
        conn: proxy.conn,
        idle_timeout: target.idle_timeout,
        lease,
        terms: TunnelTerms {
            upstream: target.upstream.clone(),
            second_factor,
        },
    });
    Ok(Response::new(ResponseBody::empty()))
}

/// A responder route's answer; the request body is left unread (hyper will not reuse an h1
/// connection whose body was not drained).
fn respond(status: StatusCode, body: &Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body.clone()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The target as an origin server wants it (RFC 9112 3.2.1): the authority travels in `Host`.
fn origin_form(client_uri: &Uri) -> Uri {
    client_uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
        .into()
}
