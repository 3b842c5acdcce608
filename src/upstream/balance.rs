//! Picking an address for an attempt: among those up and not ejected, and not yet tried by
//! this request when another is left, either in turn or by the power of two choices over the
//! fewest requests in flight (Mitzenmacher; tower's `balance::p2c`, Envoy's `LEAST_REQUEST`).
//!
//! Two distinct random starting points, each moved on to the first eligible address, give the
//! two choices without allocating.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Balance;

/// Addresses already tried by one request: a bit per index (retries are few, addresses past
/// 64 are only never excluded).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tried(u64);

impl Tried {
    pub(super) fn add(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }

    fn has(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
}

/// The picking policy and its round-robin position.
#[derive(Debug)]
pub(super) struct Balancer {
    policy: Balance,
    next: AtomicUsize,
}

impl Balancer {
    pub(super) fn new(policy: Balance) -> Self {
        Self {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// An index of `n` addresses for which `available` holds, preferring one not `tried`;
    /// `load` is an address's requests in flight. `None` when none is available.
    pub(super) fn pick(
        &self,
        n: usize,
        tried: Tried,
        available: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let fresh = |i: usize| !tried.has(i) && available(i);
        self.pick_among(n, &fresh, &load)
            .or_else(|| self.pick_among(n, &available, &load))
    }

    fn pick_among(
        &self,
        n: usize,
        eligible: &dyn Fn(usize) -> bool,
        load: &dyn Fn(usize) -> usize,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let first_from = |start: usize| (0..n).map(|k| (start + k) % n).find(|&i| eligible(i));
        match self.policy {
            Balance::RoundRobin => first_from(self.next.fetch_add(1, Ordering::Relaxed) % n),
            Balance::P2c => {
                // Two distinct starting points: with two addresses, both are always compared.
                let i = fastrand::usize(..n);
                let j = (i + 1 + fastrand::usize(..n.saturating_sub(1).max(1))) % n;
                let a = first_from(i)?;
                let b = first_from(j)?;
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_takes_each_available_address_in_turn() {
        let balancer = Balancer::new(Balance::RoundRobin);
        let picks: Vec<_> = (0..6)
            .filter_map(|_| balancer.pick(3, Tried::default(), |i| i != 1, |_| 0))
            .collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_eq!(picks.len(), 6);
        assert!(picks.contains(&0) && picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn p2c_prefers_the_address_with_fewer_requests_in_flight() {
        let balancer = Balancer::new(Balance::P2c);
        let load = |i: usize| if i == 0 { 10 } else { 0 };
        let busy = |n: usize| {
            (0..1000)
                .filter(|_| balancer.pick(n, Tried::default(), |_| true, load) == Some(0))
                .count()
        };
        // Of two, both are always compared.
        assert_eq!(busy(2), 0);
        // Of four, the busy one is never the less busy of two.
        assert_eq!(busy(4), 0);
        // Unless it is the only one left to pick.
        assert_eq!(
            balancer.pick(4, Tried::default(), |i| i == 0, load),
            Some(0)
        );
    }

    #[test]
    fn a_retry_goes_elsewhere_unless_nothing_else_is_left() {
        let balancer = Balancer::new(Balance::P2c);
        let mut tried = Tried::default();
        tried.add(0);
        for _ in 0..100 {
            assert_eq!(balancer.pick(2, tried, |_| true, |_| 0), Some(1));
            assert_eq!(balancer.pick(2, tried, |i| i == 0, |_| 0), Some(0));
            assert_eq!(balancer.pick(2, tried, |_| false, |_| 0), None);
        }
    }
}
