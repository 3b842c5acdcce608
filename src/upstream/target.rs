//! One address of an upstream: its keep-alive connections, whether it is up (health checks),
//! its failures and ejection (outlier detection), and its requests in flight (balancing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::Uri;
use hyper::client::conn::http1::SendRequest;

use super::outlier::Record;
use super::pool::Pool;
use crate::body::{ConnectionPool, RequestBody};
use crate::config::Outlier;
use crate::metrics::{AddressState, AddressStats, FailureKind};

/// An address requests go to.
#[derive(Debug)]
pub(super) struct Target {
    /// What the connector is asked for: `http://address/`.
    pub(super) uri: Uri,
    pub(super) pool: Arc<Pool>,
    /// False while its health check fails; always true without one.
    healthy: AtomicBool,
    pub(super) outlier: Record,
    /// Its figures, requests in flight among them: kept across reloads, so a generation's
    /// balancer also sees what the last one still has in flight to the address.
    pub(super) stats: Arc<AddressStats>,
}

impl Target {
    pub(super) fn new(uri: Uri, pool: Arc<Pool>, stats: Arc<AddressStats>, healthy: bool) -> Self {
        stats.set_state(if healthy {
            AddressState::Up
        } else {
            AddressState::Down
        });
        Self {
            uri,
            pool,
            healthy: AtomicBool::new(healthy),
            outlier: Record::default(),
            stats,
        }
    }

    /// Whether its health check passes (or it has none).
    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Its health check's verdict changed.
    pub(super) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        self.stats.set_state(if healthy {
            AddressState::Up
        } else {
            AddressState::Down
        });
    }

    /// Whether it is ejected at `now` (milliseconds since its upstream's epoch). The first look
    /// after an ejection ended shows it back in the metrics.
    pub(super) fn ejected(&self, now: u64) -> bool {
        let ejected = self.outlier.ejected(now);
        if !ejected && self.stats.state() == AddressState::Ejected {
            self.stats.set_state(if self.is_healthy() {
                AddressState::Up
            } else {
                AddressState::Down
            });
        }
        ejected
    }

    /// Leaves it out from `now`, for a length that grows with ejections close together.
    pub(super) fn eject(&self, policy: &Outlier, now: u64) -> std::time::Duration {
        self.stats.set_state(AddressState::Ejected);
        self.outlier.eject(policy, now)
    }

    /// Requests in flight to it now.
    pub(super) fn outstanding(&self) -> usize {
        self.stats.outstanding()
    }

    /// An attempt starts; it counts as in flight until the guard is dropped.
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.stats.started();
        InFlight(Some(self.clone()))
    }

    /// An attempt failed.
    pub(super) fn failure(&self, kind: FailureKind) {
        self.stats.failure(kind);
    }
}

/// A request in flight to a target, counted until dropped, or until the connection its
/// response borrowed is released ([`InFlight::into_lender`]).
#[derive(Debug)]
pub(super) struct InFlight(Option<Arc<Target>>);

impl InFlight {
    /// The target, now counting the request in flight until its connection is released.
    pub(super) fn into_lender(mut self) -> Option<Arc<Target>> {
        self.0.take()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(target) = &self.0 {
            target.released();
        }
    }
}

impl ConnectionPool for Target {
    fn put(&self, sender: SendRequest<RequestBody>) {
        self.pool.put(sender);
    }

    fn released(&self) {
        self.stats.released();
    }
}
