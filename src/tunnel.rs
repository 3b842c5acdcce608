//! Upgraded connections (WebSocket): the client and the upstream joined byte for byte once both
//! sides have switched protocols.
//!
//! A tunnel is a connection like any other: it keeps the client connection's permit and its
//! place in `portcullis_connections_active` (it holds the connection's lease), it ends after
//! `idle_timeout` without a byte either way, a write stuck for `send_timeout` fails it, and at
//! shutdown it runs until the grace period ends, then is cut.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::io::{Activity, Watched};
use crate::lifecycle::Lifecycle;

/// What a client connection's tunnels run under.
#[derive(Clone)]
pub struct Tunnels {
    lifecycle: Lifecycle,
    /// The connection's permit and gauge: released when the connection and its tunnels end.
    lease: Arc<dyn Any + Send + Sync>,
    idle_timeout: Duration,
    send_timeout: Duration,
}

impl fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnels")
            .field("idle_timeout", &self.idle_timeout)
            .field("send_timeout", &self.send_timeout)
            .finish_non_exhaustive()
    }
}

impl Tunnels {
    /// Tunnels of one connection holding `lease`.
    pub fn new(
        lifecycle: Lifecycle,
        lease: Arc<dyn Any + Send + Sync>,
        idle_timeout: Duration,
        send_timeout: Duration,
    ) -> Self {
        Self {
            lifecycle,
            lease,
            idle_timeout,
            send_timeout,
        }
    }

    /// Joins the two sides once both have switched; either side closing, idleness or the end
    /// of the shutdown grace ends the tunnel.
    pub fn spawn(&self, client: OnUpgrade, upstream: OnUpgrade) {
        let tunnels = self.clone();
        self.lifecycle.tracker.spawn(async move {
            let _lease = tunnels.lease.clone();
            let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
                return;
            };
            let activity = Activity::new();
            let watch = |io| Watched::new(TokioIo::new(io), activity.clone(), tunnels.send_timeout);
            let (mut client, mut upstream) = (watch(client), watch(upstream));
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                () = activity.idle(tunnels.idle_timeout) => {}
                () = tunnels.lifecycle.cut.cancelled() => {}
            }
        });
    }
}
