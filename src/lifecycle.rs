//! Who owns the process's tasks, and the two stages of stopping them.
//!
//! Every task the proxy spawns (accept loops, connections, HTTP/2 streams, tunnels, the ACME
//! task) is spawned on one [`TaskTracker`], so that [`Running::shutdown`](crate::Running::shutdown)
//! waits for all of them. Stopping has three stages. `leaving` tells the balancers (`/readyz`
//! fails) and the clients (HTTP/1 `Connection: close`, HTTP/2 GOAWAY) to go elsewhere while
//! everything is still served, for `drain_delay`: a balancer keeps sending new connections
//! until its health checks have failed. Then, as in nginx's graceful shutdown, `draining` stops
//! accepting and lets in-flight work finish; once the grace period is over, `cut` ends whatever
//! still runs.

use hyper_util::server::graceful::GracefulConnection;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The process's tasks and its stopping stages.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Every task the process spawns.
    pub tracker: TaskTracker,
    /// Cancelled when shutdown is asked for: send clients elsewhere, keep serving.
    pub leaving: CancellationToken,
    /// Cancelled after the drain delay: stop accepting, finish what is in flight.
    pub draining: CancellationToken,
    /// Cancelled when the grace period is over: whatever still runs ends now.
    pub cut: CancellationToken,
}

impl Lifecycle {
    /// Serves one connection of an auxiliary listener (admin, health): asked to finish once
    /// draining starts (hyper answers what is in flight, then closes), dropped at the cut.
    pub async fn serve<C: GracefulConnection>(&self, conn: C) {
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = self.draining.cancelled() => conn.as_mut().graceful_shutdown(),
        }
        tokio::select! {
            _ = conn => {}
            () = self.cut.cancelled() => {}
        }
    }
}
