//! Upstreams: keep-alive HTTP/1.1 connections per target ([`pool`]), made by a connector that
//! refuses every address outside the upstream's environment, including each address a name
//! resolves to at connect time (so DNS rebinding cannot point us at a metadata service or
//! another environment).

mod pool;

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use crate::body::{RequestBody, RequestBodyError};
use crate::config::{Limits, UpstreamConfig};
use crate::networks::Reach;

use crate::body::Lent;
use crate::body::UpstreamBody;
use pool::Pool;

type BoxError = Box<dyn StdError + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Why a request could not be completed upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The address (or a resolved one) lies outside the upstream's environment.
    #[error("upstream address refused by network policy")]
    AddressRefused,
    /// Connection refused, reset, or the name did not resolve (an upstream's or a tunnel
    /// target's).
    #[error("upstream unreachable")]
    Unreachable(#[source] BoxError),
    /// No connection within `upstream_connect_timeout`.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// No response head within `upstream_response_timeout`.
    #[error("upstream response timed out")]
    ResponseTimeout,
    /// The connection failed mid-request or the response was malformed.
    #[error("upstream request failed")]
    Failed(#[source] hyper::Error),
    /// The upstream switched protocols on a request that did not ask to.
    #[error("upstream answered 101 to a request without Upgrade")]
    UpgradeWithoutRequest,
    /// The client's body failed on the way (the client's fault, not the upstream's).
    #[error(transparent)]
    RequestBody(RequestBodyError),
}

impl UpstreamError {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AddressRefused => "upstream_address_refused",
            Self::Unreachable(_) => "upstream_unreachable",
            Self::ConnectTimeout => "upstream_connect_timeout",
            Self::ResponseTimeout => "upstream_timeout",
            Self::Failed(_) => "upstream_failed",
            Self::UpgradeWithoutRequest => "upstream_bad_upgrade",
            Self::RequestBody(RequestBodyError::TooLarge) => "body_too_large",
            Self::RequestBody(RequestBodyError::Timeout) => "body_timeout",
            Self::RequestBody(RequestBodyError::Malformed) => "bad_body",
        }
    }

    /// An exchange that failed once connected: the client's body is to blame when hyper's
    /// cause chain holds its error.
    fn exchange(error: hyper::Error) -> Self {
        let mut cause: Option<&(dyn StdError + 'static)> = error.source();
        while let Some(e) = cause {
            if let Some(body) = e.downcast_ref::<RequestBodyError>() {
                return Self::RequestBody(*body);
            }
            cause = e.source();
        }
        Self::Failed(error)
    }

    /// A connect that failed, sorted by what the connector's cause chain shows.
    fn connect(error: BoxError) -> Self {
        let mut cause: Option<&(dyn StdError + 'static)> = Some(error.as_ref());
        while let Some(e) = cause {
            if e.is::<AddressRefused>() {
                return Self::AddressRefused;
            }
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return Self::ConnectTimeout;
            }
            cause = e.source();
        }
        Self::Unreachable(error)
    }
}

/// The policy refusal, as an error type the client's cause chain can be searched for.
#[derive(Debug, thiserror::Error)]
#[error("address outside the upstream's environment")]
pub struct AddressRefused;

/// Resolves a name and refuses the whole answer if any address is out of reach: a partly
/// poisoned answer is not one we want to pick from.
#[derive(Clone, Debug)]
struct CheckedResolver {
    reach: Arc<Reach>,
}

impl Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let reach = self.reach.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addrs.iter().all(|a| reach.allows(a.ip())) {
                Ok(addrs.into_iter())
            } else {
                Err(AddressRefused.into())
            }
        })
    }
}

/// hyper-util's connector (timeouts, nodelay, happy eyeballs) behind the address policy.
/// IP literals skip the resolver, so they are checked here.
#[derive(Clone, Debug)]
pub struct CheckedConnector {
    http: HttpConnector<CheckedResolver>,
    reach: Arc<Reach>,
}

impl CheckedConnector {
    fn new(reach: Arc<Reach>, connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new_with_resolver(CheckedResolver {
            reach: reach.clone(),
        });
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(true);
        Self { http, reach }
    }
}

impl Service<Uri> for CheckedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let literal = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if literal.is_some_and(|ip| !self.reach.allows(ip)) {
            return Box::pin(async { Err(AddressRefused.into()) });
        }
        let connecting = self.http.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// One upstream: its targets, each with its pool of keep-alive connections.
#[derive(Debug)]
pub struct Upstream {
    /// Its key in `[upstreams]`: the audience of the assertions sent to it.
    name: Arc<str>,
    connector: CheckedConnector,
    targets: Vec<Target>,
    next: AtomicUsize,
    response_timeout: Duration,
}

#[derive(Debug)]
struct Target {
    /// What the connector is asked for: `http://address/`.
    uri: Uri,
    pool: Arc<Pool>,
}

impl Upstream {
    /// Its key in `[upstreams]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when `other` sends to the same addresses, in the same order: a reload builds every
    /// upstream anew, so identity says nothing.
    pub fn same_targets(&self, other: &Upstream) -> bool {
        self.targets
            .iter()
            .map(|t| &t.uri)
            .eq(other.targets.iter().map(|t| &t.uri))
    }

    /// The connector and an empty pool per target of a validated upstream.
    pub fn new(config: &UpstreamConfig, limits: &Limits) -> Self {
        let reach = Arc::new(Reach::new(
            config.networks.clone(),
            config.metadata_endpoints.clone(),
        ));
        let connector = CheckedConnector::new(reach, limits.upstream_connect_timeout);
        let targets = config
            .addrs
            .iter()
            .filter_map(|addr| {
                let uri = Uri::builder()
                    .scheme("http")
                    .authority(addr.authority.clone())
                    .path_and_query("/")
                    .build()
                    .ok()?;
                Some(Target {
                    uri,
                    pool: Pool::new(limits.upstream_idle_timeout),
                })
            })
            .collect();
        Self {
            name: Arc::from(&*config.name),
            connector,
            targets,
            next: AtomicUsize::new(0),
            response_timeout: limits.upstream_response_timeout,
        }
    }

    /// The next target, round-robin.
    fn next_target(&self) -> Result<&Target, UpstreamError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.targets
            .get(i % self.targets.len().max(1))
            .ok_or(UpstreamError::AddressRefused)
    }

    /// A new connection to `uri`, after the address checks, with the connect timeout.
    async fn connect_to(&self, uri: Uri) -> Result<TokioIo<TcpStream>, UpstreamError> {
        let mut connector = self.connector.clone();
        connector.call(uri).await.map_err(UpstreamError::connect)
    }

    /// A new connection to the next target, for a tunnel: the same address checks, connect
    /// timeout and nodelay as the pool's connections.
    pub async fn connect(&self) -> Result<TcpStream, UpstreamError> {
        let target = self.next_target()?;
        Ok(self.connect_to(target.uri.clone()).await?.into_inner())
    }

    /// Sends a request in origin form (`/path?query`, with its `Host`) to the next target,
    /// waiting at most the response timeout for the response head.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let target = self.next_target()?;
        tokio::time::timeout(self.response_timeout, self.exchange(target, request))
            .await
            .unwrap_or(Err(UpstreamError::ResponseTimeout))
    }

    async fn exchange(
        &self,
        target: &Target,
        mut request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if let Some(mut sender) = target.pool.take() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(target.lend(sender, response)),
                // The upstream closed it before the request went out (its keep-alive timeout
                // raced ours): nothing was sent, so the request goes again on a new one.
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::exchange(error.into_error())),
                },
            }
        }
        // Boxed: a future is as large as its largest state, and connecting is the largest;
        // the request path moves this future around, and most requests find a pooled
        // connection and never connect.
        Box::pin(self.exchange_on_new_connection(target, request)).await
    }

    async fn exchange_on_new_connection(
        &self,
        target: &Target,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let io = self.connect_to(target.uri.clone()).await?;
        let (mut sender, connection) = http1::handshake(io).await.map_err(UpstreamError::Failed)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(UpstreamError::exchange)?;
        Ok(target.lend(sender, response))
    }
}

impl Target {
    /// The response, with its connection lent to the body until the body ends; a connection
    /// that switched protocols belongs to the tunnel.
    fn lend(
        &self,
        sender: SendRequest<RequestBody>,
        response: Response<Incoming>,
    ) -> Response<UpstreamBody> {
        let lent = (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Lent {
            sender,
            pool: self.pool.clone(),
        });
        response.map(|body| UpstreamBody::new(body, lent))
    }
}
