//! Upstreams: keep-alive HTTP/1.1 connections per address ([`pool`]), made by a connector that
//! refuses every address outside the upstream's environment, including each address a name
//! resolves to at connect time (so DNS rebinding cannot point us at a metadata service or
//! another environment).
//!
//! Each request picks an address ([`balance`]) among those its health checks ([`health`]) and
//! its failures ([`outlier`]) leave in, and goes again elsewhere when that cannot duplicate a
//! side effect ([`retry`]).

mod attempt;
mod balance;
mod connector;
mod error;
mod health;
mod outlier;
mod pool;
mod retry;
mod target;

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use tokio::net::TcpStream;

use crate::body::{RequestBody, UpstreamBody};
use crate::config::{Count5xx, Limits, Outlier, UpstreamConfig};
use crate::metrics::{AddressState, FailureKind, Metrics, UpstreamStats};
use crate::networks::Reach;

use attempt::Failed;
use balance::{Balancer, Tried};
use connector::CheckedConnector;
pub use error::UpstreamError;
use pool::Pool;
use retry::{Budget, Replay};
use target::Target;

type BoxError = Box<dyn StdError + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One upstream: its addresses, how one is picked, and when a request goes again.
#[derive(Debug)]
pub struct Upstream {
    /// Its key in `[upstreams]`: the audience of the assertions sent to it.
    name: Arc<str>,
    connector: CheckedConnector,
    targets: Vec<Arc<Target>>,
    balancer: Balancer,
    retries: u32,
    budget: Option<Budget>,
    outlier: Option<Outlier>,
    /// Held while an ejection is decided, so that two failing addresses cannot both take the
    /// last share.
    ejecting: Mutex<()>,
    /// What ejection times count from.
    epoch: Instant,
    /// The end of the latest ejection (0: none), so that the request path reads the clock only
    /// while an ejection may last.
    ejections_end: AtomicU64,
    stats: Arc<UpstreamStats>,
    response_timeout: Duration,
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

    /// The connector and an empty pool per address of a validated upstream, with its health
    /// checks started. An address a health check had marked down before a reload stays down
    /// until a check passes.
    pub fn new(config: &UpstreamConfig, limits: &Limits, metrics: &Metrics) -> Self {
        let reach = Arc::new(Reach::new(
            config.networks.clone(),
            config.metadata_endpoints.clone(),
        ));
        let connector = CheckedConnector::new(reach, limits.upstream_connect_timeout);
        let resilience = &config.resilience;
        let targets: Vec<Arc<Target>> = config
            .addrs
            .iter()
            .filter_map(|addr| {
                let uri = Uri::builder()
                    .scheme("http")
                    .authority(addr.authority.clone())
                    .path_and_query("/")
                    .build()
                    .ok()?;
                let stats = metrics.upstream_address(&config.name, addr.authority.as_str());
                let healthy = resilience.health.is_none() || stats.state() != AddressState::Down;
                let pool = Pool::new(limits.upstream_idle_timeout);
                Some(Arc::new(Target::new(uri, pool, stats, healthy)))
            })
            .collect();
        if let Some(check) = &resilience.health {
            for target in &targets {
                health::spawn(
                    config.name.clone(),
                    target,
                    connector.clone(),
                    check.clone(),
                );
            }
        }
        Self {
            name: config.name.clone(),
            connector,
            targets,
            balancer: Balancer::new(resilience.balance),
            retries: resilience.retries,
            budget: (resilience.retries > 0).then(|| Budget::new(resilience.retry_budget)),
            outlier: resilience.outlier.clone(),
            ejecting: Mutex::new(()),
            epoch: Instant::now(),
            ejections_end: AtomicU64::new(0),
            stats: metrics.upstream(&config.name),
            response_timeout: limits.upstream_response_timeout,
        }
    }

    /// A new connection for a tunnel: the same address checks, connect timeout and nodelay as
    /// the pool's connections, to an address picked as for a request; one that cannot be
    /// reached is left for another, up to `retries` times.
    pub async fn connect(&self) -> Result<TcpStream, UpstreamError> {
        let mut tried = Tried::default();
        let mut attempt = 0;
        loop {
            let (index, target) = self.pick(tried)?;
            tried.add(index);
            match self.connect_to(target.uri.clone()).await {
                Ok(io) => {
                    target.outlier.succeeded();
                    return Ok(io.into_inner());
                }
                Err(error) => {
                    self.failed(target, FailureKind::Connect);
                    if attempt >= self.retries {
                        return Err(error);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Sends a request in origin form (`/path?query`, with its `Host`), waiting at most the
    /// response timeout for each attempt's response head. With `may_replay`, an idempotent
    /// request with a small body may go again after it was written (never an upgrade: its
    /// connection is the client's).
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        may_replay: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (mut request, replay) = match &self.budget {
            Some(budget) => {
                budget.deposit();
                match may_replay {
                    true => Replay::prepare(request).await?,
                    false => (request, None),
                }
            }
            None => (request, None),
        };
        let mut tried = Tried::default();
        let mut attempt = 0;
        loop {
            let (index, target) = self.pick(tried)?;
            tried.add(index);
            let outcome =
                tokio::time::timeout(self.response_timeout, self.exchange(target, request))
                    .await
                    .unwrap_or(Err(Failed::Sent(UpstreamError::ResponseTimeout)));
            let retry_left = attempt < self.retries;
            request = match outcome {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let again = replay.as_ref().filter(|_| matches!(status, 502..=504));
                    self.answered(target, status);
                    match again {
                        Some(replay) if retry_left && self.may_retry() => replay.request(),
                        _ => return Ok(response),
                    }
                }
                Err(Failed::Unsent(request, error)) => {
                    self.failed(target, FailureKind::Connect);
                    if !(retry_left && self.may_retry()) {
                        return Err(error);
                    }
                    *request
                }
                Err(Failed::Sent(error)) => {
                    let kind = match error {
                        // The client's body failed: nothing the address did.
                        UpstreamError::RequestBody(_) => return Err(error),
                        UpstreamError::ResponseTimeout => FailureKind::Timeout,
                        _ => FailureKind::Reset,
                    };
                    self.failed(target, kind);
                    // A request that may be still running upstream does not go again.
                    let again = replay.as_ref().filter(|_| kind == FailureKind::Reset);
                    match again {
                        Some(replay) if retry_left && self.may_retry() => replay.request(),
                        _ => return Err(error),
                    }
                }
            };
            request.body().exchange().add_retry();
            self.stats.retry();
            attempt += 1;
        }
    }

    /// An address for the next attempt: up, not ejected, and not yet tried when another is.
    fn pick(&self, tried: Tried) -> Result<(usize, &Arc<Target>), UpstreamError> {
        let now = self.ejection_clock();
        let available = |i: usize| {
            let target = &self.targets[i];
            target.is_healthy() && now.is_none_or(|now| !target.ejected(now))
        };
        let load = |i: usize| self.targets[i].outstanding();
        let index = self
            .balancer
            .pick(self.targets.len(), tried, available, load)
            .ok_or(UpstreamError::NoneAvailable)?;
        Ok((index, &self.targets[index]))
    }

    /// Milliseconds since the epoch while an ejection may last; `None` otherwise.
    fn ejection_clock(&self) -> Option<u64> {
        let end = self.ejections_end.load(Ordering::Relaxed);
        if end == 0 {
            return None;
        }
        let now = outlier::millis(self.epoch, Instant::now());
        if now >= end {
            // Every ejection is over: back to the clock-free path.
            let _ =
                self.ejections_end
                    .compare_exchange(end, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        Some(now)
    }

    /// Whether one more retry fits the budget.
    fn may_retry(&self) -> bool {
        let allowed = self.budget.as_ref().is_some_and(Budget::withdraw);
        if !allowed {
            self.stats.retry_refused();
        }
        allowed
    }

    /// An attempt got an answer: a failure or a success for the outlier detection.
    fn answered(&self, target: &Target, status: u16) {
        let counted = self
            .outlier
            .as_ref()
            .map_or(Count5xx::Gateway, |o| o.count_5xx);
        if counted.counts(status) {
            self.failed(target, FailureKind::Status);
        } else {
            target.outlier.succeeded();
        }
    }

    /// An attempt failed: counted, and the address ejected when its run of failures is long
    /// enough and the share allows.
    fn failed(&self, target: &Target, kind: FailureKind) {
        target.failure(kind);
        let Some(policy) = &self.outlier else {
            return;
        };
        if !target.outlier.failed(policy) {
            return;
        }
        let _one_at_a_time = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
        let now = outlier::millis(self.epoch, Instant::now());
        if target.ejected(now) {
            return;
        }
        let ejected = self.targets.iter().filter(|t| t.ejected(now)).count();
        let available = self
            .targets
            .iter()
            .filter(|t| t.is_healthy() && !t.ejected(now))
            .count();
        if !outlier::may_eject(policy, self.targets.len(), ejected, available) {
            return;
        }
        let length = target.eject(policy, now);
        let end = now.saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        self.ejections_end.fetch_max(end, Ordering::Relaxed);
        let address = target.uri.authority().map(|a| a.as_str()).unwrap_or("");
        tracing::warn!(
            upstream = %self.name,
            %address,
            seconds = length.as_secs(),
            "upstream address ejected after failing requests in a row"
        );
    }

    /// A new connection to `uri`, after the address checks, with the connect timeout.
    async fn connect_to(
        &self,
        uri: Uri,
    ) -> Result<hyper_util::rt::TokioIo<TcpStream>, UpstreamError> {
        let mut connector = self.connector.clone();
        tower::Service::call(&mut connector, uri)
            .await
            .map_err(UpstreamError::connect)
    }
}
