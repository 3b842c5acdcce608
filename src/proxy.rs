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
use hyper::body::Incoming;
use tower::Service;

pub use headers::{USER_HEADER, Vouched, requested_upgrade, rewrite_request, rewrite_response};
pub use owned::{OWNED_REQUEST_HEADERS, OWNED_REQUEST_PREFIXES};

pub use crate::gateway::{Admitted, Routed};

use crate::audit::ClosedBy;
use crate::body::{RequestBody, ResponseBody};
use crate::connection::ConnectionInfo;
use crate::error::ProxyError;
use crate::exchange::Exchange;
use crate::gateway::{Parts, Pass, ToTunnel, ToUpstream};
use crate::host::RequestHost;
use crate::relay::{Connected, TunnelTerms, Tunnels};
use crate::upstream::{Upstream, UpstreamError};

/// Forwards admitted requests for one client connection. Cloned for every request (hyper's
/// service glue does), so what it holds is shared: `Tunnels` carries cancellation tokens, whose
/// clone and drop each take a lock.
///
/// It takes only what the gateway admitted:
///
/// ```
/// use portcullis::proxy::{Admitted, Proxy};
///
/// fn forward(proxy: &mut Proxy, admitted: Admitted) {
///     let _ = tower::Service::call(proxy, admitted);
/// }
/// ```
///
/// A request that was only routed does not compile, whatever its route:
///
/// ```compile_fail,E0277
/// use portcullis::proxy::{Proxy, Routed};
///
/// fn forward(proxy: &mut Proxy, routed: Routed) {
///     let _ = tower::Service::call(proxy, routed);
/// }
/// ```
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

impl Service<Admitted> for Proxy {
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, admitted: Admitted) -> Self::Future {
        let Parts {
            request,
            exchange,
            host,
            pass,
        } = admitted.into_parts();
        match pass {
            Pass::Forward(forward) => {
                // Everything up to the upstream exchange is synchronous and done here: a future
                // keeps room for its arguments for its whole life, and this one is moved on
                // every request.
                match self.prepare(request, &exchange, &host, &forward) {
                    Ok(forwarding) => {
                        Box::pin(forwarding.exchange(forward.upstream, self.tunnels.clone()))
                    }
                    Err(error) => Box::pin(std::future::ready(Err(error))),
                }
            }
            Pass::Respond { status, body } => {
                Box::pin(std::future::ready(Ok(respond(status, body))))
            }
            Pass::Tunnel(tunnel) => Box::pin(open_tunnel(self.clone(), request, tunnel)),
        }
    }
}

/// A request rewritten for its upstream.
struct Forwarding {
    request: Request<RequestBody>,
    /// The client side of a requested protocol upgrade.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Proxy {
    fn prepare(
        &self,
        mut request: Request<Incoming>,
        exchange: &Arc<Exchange>,
        host: &RequestHost,
        forward: &ToUpstream,
    ) -> Result<Forwarding, ProxyError> {
        let declared_length = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > forward.max_body_bytes) {
            return Err(ProxyError::PayloadTooLarge);
        }
        let upgrade = requested_upgrade(request.version(), request.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let request_id = exchange.id_header();
        let vouched = Vouched {
            host: &host.authority,
            client: &self.conn.forwarded_for,
            user: forward.employee.as_ref(),
            assertion: forward.assertion.as_ref(),
            request_id: Some(&request_id),
        };
        rewrite_request(
            &mut parts.headers,
            parts.version,
            &vouched,
            &forward.strip,
            upgrade,
        );
        parts.uri = origin_form(&parts.uri);
        parts.version = Version::HTTP_11;
        let body = RequestBody::new(
            body,
            forward.max_body_bytes,
            self.body_read_timeout,
            exchange.clone(),
        );
        Ok(Forwarding {
            request: Request::from_parts(parts, body),
            client_upgrade,
        })
    }
}

impl Forwarding {
    async fn exchange(
        self,
        upstream: Arc<Upstream>,
        tunnels: Arc<Tunnels>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let Self {
            request,
            client_upgrade,
        } = self;
        let mut response = upstream.send(request, client_upgrade.is_none()).await?;
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
async fn open_tunnel(
    proxy: Proxy,
    mut request: Request<Incoming>,
    tunnel: ToTunnel,
) -> Result<Response<ResponseBody>, ProxyError> {
    let ToTunnel {
        route,
        upstream,
        idle_timeout,
        audit,
        grant,
        postgres,
    } = tunnel;
    let second_factor = audit.second_factor;
    let lease = match proxy.tunnels.reserve(&proxy.conn) {
        Ok(lease) => lease,
        Err(over) => {
            audit.close(ClosedBy::OverLimit, 0, 0);
            return Err(ProxyError::OverLimit(over));
        }
    };
    let stream = match upstream.connect().await {
        Ok(stream) => stream,
        Err(error) => {
            audit.close(ClosedBy::UpstreamFailed, 0, 0);
            return Err(error.into());
        }
    };
    proxy.tunnels.spawn_connect(Connected {
        client: hyper::upgrade::on(&mut request),
        upstream: stream,
        audit,
        route,
        conn: proxy.conn,
        idle_timeout,
        lease,
        terms: TunnelTerms {
            upstream,
            second_factor,
            grant,
            postgres,
        },
    });
    Ok(Response::new(ResponseBody::empty()))
}

/// A responder route's answer; the request body is left unread (hyper will not reuse an h1
/// connection whose body was not drained).
fn respond(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
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
