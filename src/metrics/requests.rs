//! What every request updates, without a lock or a hash on the request path: the request
//! counter by route and status, found in a short per-thread list before the family's map, and
//! the duration histogram on atomics. prometheus-client's `Family` takes a read lock and hashes
//! the labels with SipHash for every lookup, and its `Histogram` takes a mutex per observation.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    route: Arc<str>,
    status: u16,
}

/// The counters a thread used last, most recent last: which `Requests` (by its id), route and
/// status each belongs to. An entry holds its route's `Arc`, so that no other route can reuse
/// the address it is recognised by.
type Recent = Vec<(u64, Arc<str>, u16, Counter)>;

thread_local! {
    static RECENT: RefCell<Recent> = const { RefCell::new(Vec::new()) };
}

/// Entries each thread keeps: the routes and statuses that carry the traffic.
const RECENT_KEPT: usize = 32;

/// Tells apart the `Requests` of several proxies in one process (the tests run many).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Requests by route and final status.
#[derive(Debug)]
pub(super) struct Requests {
    id: u64,
    family: Family<RequestLabels, Counter>,
}

impl Requests {
    pub(super) fn new() -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Relaxed),
            family: Family::default(),
        }
    }

    /// The family, for the registry.
    pub(super) fn family(&self) -> Family<RequestLabels, Counter> {
        self.family.clone()
    }

    pub(super) fn count(&self, route: &Arc<str>, status: u16) {
        let found = RECENT.with_borrow(|recent| {
            recent
                .iter()
                .rev()
                .find(|(id, r, s, _)| *id == self.id && *s == status && Arc::ptr_eq(r, route))
                .map(|(.., counter)| counter.inc())
                .is_some()
        });
        if found {
            return;
        }
        let labels = RequestLabels {
            route: route.clone(),
            status,
        };
        let counter = self.family.get_or_create(&labels).clone();
        counter.inc();
        RECENT.with_borrow_mut(|recent| {
            if recent.len() >= RECENT_KEPT {
                recent.remove(0);
            }
            recent.push((self.id, route.clone(), status, counter));
        });
    }
}

/// Upper bounds of the duration buckets, in seconds: 0.5 ms doubling up to about 16 s.
const BOUNDS: [f64; 16] = {
    let mut bounds = [0.0005; 16];
    let mut i = 1;
    while i < bounds.len() {
        bounds[i] = bounds[i - 1] * 2.0;
        i += 1;
    }
    bounds
};

/// A histogram of durations on atomics; a scrape may see an observation in the count and not
/// yet in its bucket, which Prometheus's histograms tolerate.
/// Clones share their counts (the registry keeps one).
#[derive(Clone, Debug, Default)]
pub(super) struct Durations(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// Per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Durations {
    pub(super) fn observe(&self, duration: Duration) {
        let this = &self.0;
        let seconds = duration.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS.len());
        this.buckets[bucket].fetch_add(1, Relaxed);
        this.count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        this.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.0.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        let sum = self.0.sum_nanos.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, self.0.count.load(Relaxed), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_first_bucket_that_holds_them() {
        let durations = Durations::default();
        for millis in [0, 1, 1, 3000, 100_000] {
            durations.observe(Duration::from_millis(millis));
        }
        let counts: Vec<u64> = durations
            .0
            .buckets
            .iter()
            .map(|b| b.load(Relaxed))
            .collect();
        // 0 ms and 0.5 ms; 1 ms (second bound); 3 s (bound 4.096 s); 100 s (+Inf).
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 2);
        assert_eq!(counts[13], 1);
        assert_eq!(counts[16], 1);
        assert_eq!(durations.0.count.load(Relaxed), 5);
        assert_eq!(durations.0.sum_nanos.load(Relaxed), 103_002_000_000);
        // Scraped, the buckets are cumulative, as Prometheus's histograms are.
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("d", "durations", durations.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "d_bucket{le=\"0.0005\"} 1",
            "d_bucket{le=\"0.001\"} 3",
            "d_bucket{le=\"4.096\"} 4",
            "d_bucket{le=\"+Inf\"} 5",
            "d_count 5",
            "d_sum 103.002",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn each_route_and_status_counts_apart_and_in_the_family() {
        let requests = Requests::new();
        let (a, b) = (Arc::<str>::from("a/"), Arc::<str>::from("b/"));
        for _ in 0..3 {
            requests.count(&a, 200);
        }
        requests.count(&a, 404);
        requests.count(&b, 200);
        // Another route of the same name (a reload built it anew) counts in the same series.
        requests.count(&Arc::from("a/"), 200);
        let value = |route: &str, status| {
            let labels = RequestLabels {
                route: Arc::from(route),
                status,
            };
            requests.family.get_or_create(&labels).get()
        };
        assert_eq!(
            (value("a/", 200), value("a/", 404), value("b/", 200)),
            (4, 1, 1)
        );
        // A second `Requests` on the same thread keeps its own counts.
        let other = Requests::new();
        other.count(&a, 200);
        assert_eq!(value("a/", 200), 4);
    }
}
