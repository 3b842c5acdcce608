//! What a `CONNECT` tunnel holds so that tunnels cannot escape the proxy's limits: on HTTP/2,
//! where one connection carries up to `h2_max_concurrent_streams` tunnels, each takes a
//! connection permit and a place in `portcullis_connections_active` of its own (on HTTP/1.1
//! the tunnel is its connection and keeps that one's); and every tunnel takes a place in its
//! user's count, capped by `[gateway] max_tunnels_per_user` across all connections.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::error::OverLimit;
use crate::metrics::Metrics;

/// A connection's permit and its place in the connections gauge, released when the connection
/// and every tunnel it opened have ended.
pub type Lease = Arc<dyn Any + Send + Sync>;

/// The pool HTTP/2 tunnels take their own permits from: the listeners' one.
#[derive(Debug, Clone)]
pub struct Capacity {
    connections: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Capacity {
    /// Permits from `connections`, counted in `metrics`' connections gauge.
    pub fn new(connections: Arc<Semaphore>, metrics: Arc<Metrics>) -> Self {
        Self {
            connections,
            metrics,
        }
    }

    /// A permit now, or none: a tunnel does not wait in a queue the way a new client waits in
    /// the backlog.
    fn take(&self) -> Option<Lease> {
        let permit = self.connections.clone().try_acquire_owned().ok()?;
        Some(Arc::new((self.metrics.connection(), permit)))
    }
}

/// Open tunnels per user, across every connection; outlives reloads.
#[derive(Debug, Default)]
pub struct OpenTunnels {
    by_user: Mutex<HashMap<String, u32>>,
}

impl OpenTunnels {
    /// A place among `user`'s tunnels, if they have fewer than `cap` open.
    fn enter(self: &Arc<Self>, user: &str, cap: u32) -> Option<UserSlot> {
        let mut by_user = self.by_user.lock().ok()?;
        let open = by_user.entry(user.to_owned()).or_default();
        if *open >= cap {
            return None;
        }
        *open += 1;
        Some(UserSlot {
            open: self.clone(),
            user: user.to_owned(),
        })
    }

    /// How many tunnels `user` has open.
    pub fn of(&self, user: &str) -> u32 {
        self.by_user
            .lock()
            .map_or(0, |by_user| by_user.get(user).copied().unwrap_or(0))
    }
}

/// One tunnel's place in its user's count.
#[derive(Debug)]
struct UserSlot {
    open: Arc<OpenTunnels>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Ok(mut by_user) = self.open.by_user.lock()
            && let Some(open) = by_user.get_mut(&self.user)
        {
            *open = open.saturating_sub(1);
            if *open == 0 {
                by_user.remove(&self.user);
            }
        }
    }
}

/// What one tunnel holds until it ends.
#[derive(Debug)]
pub struct TunnelLease {
    _user: UserSlot,
    _connection: Option<Lease>,
}

impl TunnelLease {
    /// Takes `user`'s place (at most `cap` open) and, with `capacity` (HTTP/2), a connection
    /// permit.
    pub fn take(
        open: &Arc<OpenTunnels>,
        user: &str,
        cap: u32,
        capacity: Option<&Capacity>,
    ) -> Result<Self, OverLimit> {
        let user = open.enter(user, cap).ok_or(OverLimit::PerUser)?;
        let connection = match capacity {
            Some(capacity) => Some(capacity.take().ok_or(OverLimit::Connections)?),
            None => None,
        };
        Ok(Self {
            _user: user,
            _connection: connection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_at_most_cap_places_and_each_end_frees_one() {
        let open = Arc::new(OpenTunnels::default());
        let first = TunnelLease::take(&open, "bob", 2, None).unwrap();
        let second = TunnelLease::take(&open, "bob", 2, None).unwrap();
        assert_eq!(
            TunnelLease::take(&open, "bob", 2, None).unwrap_err(),
            OverLimit::PerUser
        );
        assert!(TunnelLease::take(&open, "alice", 2, None).is_ok());
        drop(first);
        assert_eq!(open.of("bob"), 1);
        let third = TunnelLease::take(&open, "bob", 2, None).unwrap();
        drop((second, third));
        assert_eq!(open.of("bob"), 0);
    }

    #[test]
    fn without_a_permit_no_tunnel_and_no_place_is_kept() {
        let open = Arc::new(OpenTunnels::default());
        let metrics = Arc::new(Metrics::default());
        let capacity = Capacity::new(Arc::new(Semaphore::new(1)), metrics);
        let held = TunnelLease::take(&open, "bob", 5, Some(&capacity)).unwrap();
        assert_eq!(
            TunnelLease::take(&open, "bob", 5, Some(&capacity)).unwrap_err(),
            OverLimit::Connections
        );
        assert_eq!(open.of("bob"), 1, "the refused one gave its place back");
        drop(held);
        assert!(TunnelLease::take(&open, "bob", 5, Some(&capacity)).is_ok());
    }
}
