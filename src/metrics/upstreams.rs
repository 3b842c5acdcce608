//! Per upstream address: its state, requests, failures by kind and requests in flight. The
//! request path only touches atomics the upstream holds; the scrape reads them (a collector),
//! so no label set is hashed and no lock taken per request.
//!
//! The counters live here, keyed by upstream and address, so that a reload, which builds every
//! upstream anew, continues them rather than starting them over.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Why a request to an address failed, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Refused, unreachable or timed out before a connection.
    Connect,
    /// The connection failed once the request was on its way.
    Reset,
    /// No answer within the response timeout.
    Timeout,
    /// A 5xx answer counted by `count_5xx`.
    Status,
}

const FAILURE_KINDS: [(FailureKind, &str); 4] = [
    (FailureKind::Connect, "connect"),
    (FailureKind::Reset, "reset"),
    (FailureKind::Timeout, "timeout"),
    (FailureKind::Status, "status"),
];

/// Whether an address gets traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AddressState {
    /// It does.
    Up = 0,
    /// Its health check failed.
    Down = 1,
    /// Left out for a while after failing requests.
    Ejected = 2,
}

const STATES: [(AddressState, &str); 3] = [
    (AddressState::Up, "up"),
    (AddressState::Down, "down"),
    (AddressState::Ejected, "ejected"),
];

/// One address's figures, written by its upstream.
#[derive(Debug, Default)]
pub struct AddressStats {
    requests: AtomicU64,
    failures: [AtomicU64; 4],
    outstanding: AtomicUsize,
    state: AtomicU8,
}

impl AddressStats {
    /// A request (an attempt: a retry is another) sent to the address: in flight until
    /// [`Self::released`].
    pub fn started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.outstanding.fetch_add(1, Ordering::Relaxed);
    }

    /// A request started is done with the address.
    pub fn released(&self) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests in flight to the address now, what the balancer compares.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// An attempt failed.
    pub fn failure(&self, kind: FailureKind) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The address's state, as last set.
    pub fn state(&self) -> AddressState {
        match self.state.load(Ordering::Relaxed) {
            1 => AddressState::Down,
            2 => AddressState::Ejected,
            _ => AddressState::Up,
        }
    }

    /// The address's state changed.
    pub fn set_state(&self, state: AddressState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }
}

/// One upstream's figures.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    retries: AtomicU64,
    retries_refused: AtomicU64,
}

impl UpstreamStats {
    /// A request was tried again.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that could have been tried again was not: the retry budget was spent.
    pub fn retry_refused(&self) {
        self.retries_refused.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabels {
    upstream: Arc<str>,
    address: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    upstream: Arc<str>,
    address: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    upstream: Arc<str>,
    address: Arc<str>,
    state: &'static str,
}

/// Every upstream's and address's figures, by name: the labels are config names only.
#[derive(Debug, Default)]
pub(super) struct UpstreamBoard {
    state: Mutex<Board>,
}

#[derive(Debug, Default)]
struct Board {
    addresses: BTreeMap<(Arc<str>, Arc<str>), Arc<AddressStats>>,
    upstreams: BTreeMap<Arc<str>, Arc<UpstreamStats>>,
}

impl UpstreamBoard {
    pub(super) fn address(&self, upstream: &Arc<str>, address: &str) -> Arc<AddressStats> {
        let key = (upstream.clone(), Arc::from(address));
        self.lock().addresses.entry(key).or_default().clone()
    }

    pub(super) fn upstream(&self, upstream: &Arc<str>) -> Arc<UpstreamStats> {
        self.lock()
            .upstreams
            .entry(upstream.clone())
            .or_default()
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        // Maps of counters: nothing a panicking holder could leave half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Collector for UpstreamBoard {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let board = self.lock();
        let labels = |(upstream, address): &(Arc<str>, Arc<str>)| AddressLabels {
            upstream: upstream.clone(),
            address: address.clone(),
        };
        let mut family = encoder.encode_descriptor(
            "upstream_address_state",
            "Whether each upstream address gets traffic: 1 for its state (up, down: failed its health check, ejected: failed requests)",
            None,
            MetricType::Gauge,
        )?;
        for ((upstream, address), stats) in &board.addresses {
            let current = stats.state.load(Ordering::Relaxed);
            for (state, name) in STATES {
                let labels = StateLabels {
                    upstream: upstream.clone(),
                    address: address.clone(),
                    state: name,
                };
                ConstGauge::new(i64::from(state as u8 == current))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "upstream_requests",
            "Requests sent to each upstream address (each retry is one more)",
            None,
            MetricType::Counter,
        )?;
        for (key, stats) in &board.addresses {
            ConstCounter::new(stats.requests.load(Ordering::Relaxed))
                .encode(family.encode_family(&labels(key))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "upstream_failures",
            "Requests each upstream address failed, by kind (connect, reset, timeout, status)",
            None,
            MetricType::Counter,
        )?;
        for ((upstream, address), stats) in &board.addresses {
            for (kind, name) in FAILURE_KINDS {
                let labels = KindLabels {
                    upstream: upstream.clone(),
                    address: address.clone(),
                    kind: name,
                };
                ConstCounter::new(stats.failures[kind as usize].load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "upstream_outstanding",
            "Requests in flight to each upstream address",
            None,
            MetricType::Gauge,
        )?;
        for (key, stats) in &board.addresses {
            ConstGauge::new(i64::try_from(stats.outstanding()).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels(key))?)?;
        }
        for (name, help, read) in [
            (
                "upstream_retries",
                "Requests tried again on another attempt, by upstream",
                &|s: &UpstreamStats| s.retries.load(Ordering::Relaxed) as _,
            ),
            (
                "upstream_retries_refused",
                "Retries not made because the upstream's retry budget was spent",
                &|s: &UpstreamStats| s.retries_refused.load(Ordering::Relaxed),
            ),
        ] as [(&str, &str, &dyn Fn(&UpstreamStats) -> u64); 2]
        {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (upstream, stats) in &board.upstreams {
                let labels = UpstreamLabels {
                    upstream: upstream.clone(),
                };
                ConstCounter::new(read(stats)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
