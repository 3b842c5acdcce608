//! The one way to an upstream address: hyper-util's connector behind the address policy. Every
//! connection, traffic's and health checks' alike, comes from here.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use super::error::AddressRefused;
use super::{BoxError, BoxFuture};
use crate::networks::Reach;

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
    pub(super) fn new(reach: Arc<Reach>, connect_timeout: Duration) -> Self {
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
