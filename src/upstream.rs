//! Upstreams: a pooled HTTP/1.1 client per upstream, whose connector refuses every address
//! outside the upstream's environment, including each address a name resolves to at connect
//! time (so DNS rebinding cannot point us at a metadata service or another environment).

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower::Service;

use crate::body::{RequestBody, RequestBodyError};
use crate::config::{Limits, UpstreamConfig};
use crate::networks::Reach;

type BoxError = Box<dyn StdError + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request could not be completed upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The address (or a resolved one) lies outside the upstream's environment.
    #[error("upstream address refused by network policy")]
    AddressRefused,
    /// Connection refused, reset, or the name did not resolve.
    #[error("upstream unreachable")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// No connection within `upstream_connect_timeout`.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// No response head within `upstream_response_timeout`.
    #[error("upstream response timed out")]
    ResponseTimeout,
    /// The connection failed mid-request or the response was malformed.
    #[error("upstream request failed")]
    Failed(#[source] hyper_util::client::legacy::Error),
    /// A tunnel's target refused the connection, reset it, or its name did not resolve.
    #[error("tunnel target unreachable")]
    TunnelUnreachable(#[source] BoxError),
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
            Self::Unreachable(_) | Self::TunnelUnreachable(_) => "upstream_unreachable",
            Self::ConnectTimeout => "upstream_connect_timeout",
            Self::ResponseTimeout => "upstream_timeout",
            Self::Failed(_) => "upstream_failed",
            Self::UpgradeWithoutRequest => "upstream_bad_upgrade",
            Self::RequestBody(RequestBodyError::TooLarge) => "body_too_large",
            Self::RequestBody(RequestBodyError::Timeout) => "body_timeout",
            Self::RequestBody(RequestBodyError::Malformed) => "bad_body",
        }
    }

    /// Sorts a client error by what its cause chain shows.
    fn classify(error: hyper_util::client::legacy::Error) -> Self {
        let mut cause: Option<&(dyn StdError + 'static)> = error.source();
        while let Some(e) = cause {
            if e.is::<AddressRefused>() {
                return Self::AddressRefused;
            }
            if let Some(body) = e.downcast_ref::<RequestBodyError>() {
                return Self::RequestBody(*body);
            }
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
                && error.is_connect()
            {
                return Self::ConnectTimeout;
            }
            cause = e.source();
        }
        if error.is_connect() {
            Self::Unreachable(error)
        } else {
            Self::Failed(error)
        }
    }
}

/// Sorts a connector's error as [`UpstreamError::classify`] sorts the client's.
fn classify_connect(error: BoxError) -> UpstreamError {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error.as_ref());
    while let Some(e) = cause {
        if e.is::<AddressRefused>() {
            return UpstreamError::AddressRefused;
        }
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return UpstreamError::ConnectTimeout;
        }
        cause = e.source();
    }
    UpstreamError::TunnelUnreachable(error)
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

/// One upstream: its targets and the pool of connections to them.
#[derive(Debug)]
pub struct Upstream {
    client: Client<CheckedConnector, RequestBody>,
    connector: CheckedConnector,
    targets: Vec<Authority>,
    next: AtomicUsize,
    response_timeout: Duration,
}

impl Upstream {
    /// Builds the pool for a validated upstream.
    pub fn new(config: &UpstreamConfig, limits: &Limits) -> Self {
        let reach = Arc::new(Reach::new(
            config.networks.clone(),
            config.metadata_endpoints.clone(),
        ));
        let connector = CheckedConnector::new(reach, limits.upstream_connect_timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .set_host(false)
            .build(connector.clone());
        let targets = config
            .addrs
            .iter()
            .map(|addr| addr.authority.clone())
            .collect();
        Self {
            client,
            connector,
            targets,
            next: AtomicUsize::new(0),
            response_timeout: limits.upstream_response_timeout,
        }
    }

    /// The next target, round-robin.
    pub fn next_target(&self) -> Option<&Authority> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.targets.get(i % self.targets.len().max(1))
    }

    /// A new connection to the next target, for a tunnel: the same address checks, connect
    /// timeout and nodelay as the pool's connections.
    pub async fn connect(&self) -> Result<TcpStream, UpstreamError> {
        let target = self.next_target().ok_or(UpstreamError::AddressRefused)?;
        let uri = Uri::builder()
            .scheme("http")
            .authority(target.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| UpstreamError::TunnelUnreachable(e.into()))?;
        let mut connector = self.connector.clone();
        match connector.call(uri).await {
            Ok(io) => Ok(io.into_inner()),
            Err(e) => Err(classify_connect(e)),
        }
    }

    /// Sends a request whose URI already names a target, waiting at most the response timeout
    /// for the response head.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(UpstreamError::classify(e)),
            Err(_) => Err(UpstreamError::ResponseTimeout),
        }
    }
}
