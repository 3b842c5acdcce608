//! Prometheus metrics, served by the admin listener. Labels are route names, statuses and error
//! kinds: never anything a client chose.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::daily::LogHealth;

mod certificates;
mod requests;
mod upstreams;

use crate::exchange::{Blame, ErrorKind};
pub use certificates::Source;
use certificates::{CertificateLabels, ResultLabels, ServedCertificates};
use requests::{Durations, Requests};
use upstreams::UpstreamBoard;
pub use upstreams::{AddressState, AddressStats, FailureKind, UpstreamStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TunnelLabels {
    tunnel: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogLabels {
    log: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: &'static str,
    result: &'static str,
}

/// What a health probe asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/livez` (`/healthz` on the admin listener): the process answers.
    Live,
    /// `/readyz`: the process should get traffic.
    Ready,
}

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The route label of requests no route served (every redirect), shared rather than
    /// allocated per request.
    no_route: Arc<str>,
    requests: Requests,
    duration: Durations,
    connections: Gauge,
    handshakes: Family<KindLabels, Counter>,
    upstream_errors: Family<KindLabels, Counter>,
    log_lines_dropped: Family<LogLabels, Counter>,
    log_lines_held: Family<LogLabels, Gauge>,
    render_lock: std::sync::Mutex<()>,
    certificate_expiry: Family<CertificateLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    certificate_renewal: Family<CertificateLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    served: ServedCertificates,
    acme_events: Family<KindLabels, Counter>,
    acme_orders: Family<ResultLabels, Counter>,
    acme_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    crl_expired: Gauge,
    tunnels_open: Family<TunnelLabels, Gauge>,
    tunnels_opened: Family<TunnelLabels, Counter>,
    tunnels_refused: Family<StatusLabels, Counter>,
    health_checks: Family<ProbeLabels, Counter>,
    upstreams: Arc<UpstreamBoard>,
    rate_limited: Family<LimitLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let metrics = Self {
            no_route: Arc::from("-"),
            requests: Requests::new(),
            duration: Durations::default(),
            connections: Gauge::default(),
            handshakes: Family::default(),
            upstream_errors: Family::default(),
            log_lines_dropped: Family::default(),
            log_lines_held: Family::default(),
            render_lock: std::sync::Mutex::new(()),
            certificate_expiry: Family::default(),
            certificate_renewal: Family::default(),
            served: ServedCertificates::default(),
            acme_events: Family::default(),
            acme_orders: Family::default(),
            acme_last_success: Gauge::default(),
            crl_expired: Gauge::default(),
            tunnels_open: Family::default(),
            tunnels_opened: Family::default(),
            tunnels_refused: Family::default(),
            health_checks: Family::default(),
            upstreams: Arc::default(),
            rate_limited: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rate_limited",
            "Requests answered 429 and connections closed at accept for being over a rate limit, by limit (a route's name, connections, mfa, connect)",
            metrics.rate_limited.clone(),
        );
        registry.register_collector(Box::new(metrics.upstreams.clone()));
        registry.register(
            "requests",
            "Requests by route and final status",
            metrics.requests.family(),
        );
        registry.register(
            "request_duration_seconds",
            "Request duration, head to end of response",
            metrics.duration.clone(),
        );
        registry.register(
            "connections_active",
            "Open client connections",
            metrics.connections.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes by result",
            metrics.handshakes.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests the upstream failed, by kind",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines lost, by log (access, audit): the buffer of lines waiting for the disk was full",
            metrics.log_lines_dropped.clone(),
        );
        registry.register(
            "log_lines_held",
            "Log lines waiting in memory for a file that cannot be written now, by log",
            metrics.log_lines_held.clone(),
        );
        registry.register(
            "certificate_not_after_timestamp_seconds",
            "When each certificate in service expires, Unix time, by first name, all names and source (file, acme): alert on it minus time()",
            metrics.certificate_expiry.clone(),
        );
        registry.register(
            "certificate_renewal_timestamp_seconds",
            "When each ACME certificate is next renewed, Unix time: inside the CA's window (RFC 9773) or before renew_before",
            metrics.certificate_renewal.clone(),
        );
        registry.register(
            "acme_orders",
            "ACME orders by result (issued, failed)",
            metrics.acme_orders.clone(),
        );
        registry.register(
            "acme_last_success_timestamp_seconds",
            "When an ACME order last issued a certificate, Unix time (0: not since start)",
            metrics.acme_last_success.clone(),
        );
        registry.register(
            "acme_events",
            "ACME events by kind",
            metrics.acme_events.clone(),
        );
        registry.register(
            "gateway_crl_expired",
            "Revocation lists past their next update: every certificate they cover is refused",
            metrics.crl_expired.clone(),
        );
        registry.register(
            "tunnels_open",
            "Tunnels carrying bytes now, by tunnel",
            metrics.tunnels_open.clone(),
        );
        registry.register(
            "tunnels_opened",
            "CONNECT requests answered 200, by tunnel",
            metrics.tunnels_opened.clone(),
        );
        registry.register(
            "tunnels_refused",
            "CONNECT requests refused, by status",
            metrics.tunnels_refused.clone(),
        );
        registry.register(
            "health_checks",
            "Health probes answered (/livez, /readyz), by probe and result (pass: 200, fail: 503)",
            metrics.health_checks.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The figures of one address of an upstream, continued across reloads.
    pub fn upstream_address(&self, upstream: &Arc<str>, address: &str) -> Arc<AddressStats> {
        self.upstreams.address(upstream, address)
    }

    /// The figures of one upstream, continued across reloads.
    pub fn upstream(&self, upstream: &Arc<str>) -> Arc<UpstreamStats> {
        self.upstreams.upstream(upstream)
    }

    /// The counter of breaches of the limit named `limit`: incremented without a lookup.
    pub fn rate_limited(&self, limit: &Arc<str>) -> Counter {
        self.rate_limited
            .get_or_create(&LimitLabels {
                limit: limit.clone(),
            })
            .clone()
    }

    /// Counts a finished request.
    pub fn request(
        &self,
        route: Option<&Arc<str>>,
        status: u16,
        duration: Duration,
        error: Option<ErrorKind>,
    ) {
        self.requests.count(route.unwrap_or(&self.no_route), status);
        self.duration.observe(duration);
        if let Some(error) = error.filter(|e| e.blame == Blame::Upstream) {
            self.upstream_errors
                .get_or_create(&KindLabels { kind: error.name })
                .inc();
        }
    }

    /// Counts the answer to a `CONNECT`: a 2xx opened the tunnel, anything else refused it.
    pub fn tunnel_answered(&self, tunnel: Option<&Arc<str>>, status: u16) {
        match tunnel {
            Some(tunnel) if (200..300).contains(&status) => {
                let tunnel = tunnel.clone();
                self.tunnels_opened
                    .get_or_create(&TunnelLabels { tunnel })
                    .inc();
            }
            _ => {
                self.tunnels_refused
                    .get_or_create(&StatusLabels { status })
                    .inc();
            }
        }
    }

    /// A tunnel started carrying bytes; the guard counts it closed.
    pub fn tunnel_open(self: &Arc<Self>, tunnel: Arc<str>) -> TunnelGuard {
        let labels = TunnelLabels { tunnel };
        self.tunnels_open.get_or_create(&labels).inc();
        TunnelGuard(self.clone(), labels)
    }

    /// A connection opened; the guard closes it.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.clone())
    }

    /// Counts a handshake outcome.
    pub fn handshake(&self, ok: bool) {
        let kind = if ok { "ok" } else { "failed" };
        self.handshakes.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a health probe's answer: probes are counted, not logged.
    pub fn health_check(&self, probe: Probe, pass: bool) {
        let probe = match probe {
            Probe::Live => "livez",
            Probe::Ready => "readyz",
        };
        let result = if pass { "pass" } else { "fail" };
        self.health_checks
            .get_or_create(&ProbeLabels { probe, result })
            .inc();
    }

    /// Records how many revocation lists are past their next update.
    pub fn crls_expired(&self, count: usize) {
        self.crl_expired
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The text exposition, with the state of each named log.
    pub fn render(&self, logs: &[(&'static str, &LogHealth)]) -> String {
        // Two scrapes at once would both add the same lost lines.
        let _one_at_a_time = self.render_lock.lock();
        for &(log, health) in logs {
            let labels = LogLabels { log };
            let dropped = self.log_lines_dropped.get_or_create(&labels);
            // The writers count; the counter catches up with them at each scrape.
            dropped.inc_by(health.dropped_total().saturating_sub(dropped.get()));
            self.log_lines_held
                .get_or_create(&labels)
                .set(i64::try_from(health.held()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the open-connection gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// Counts a tunnel closed when dropped.
#[derive(Debug)]
pub struct TunnelGuard(Arc<Metrics>, TunnelLabels);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.tunnels_open.get_or_create(&self.1).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyError;
    use crate::upstream::UpstreamError;

    #[test]
    fn only_upstream_failures_count_as_upstream_errors() {
        let metrics = Metrics::new();
        let kind = |e: ProxyError| ErrorKind {
            name: e.kind(),
            blame: e.blame(),
        };
        let body_timeout = ProxyError::Upstream(UpstreamError::RequestBody(
            crate::body::RequestBodyError::Timeout,
        ));
        let second = Duration::from_secs(1);
        metrics.request(
            None,
            504,
            second,
            Some(kind(ProxyError::from(UpstreamError::ResponseTimeout))),
        );
        metrics.request(None, 408, second, Some(kind(body_timeout)));
        metrics.request(None, 404, second, Some(kind(ProxyError::NoRoute)));
        let text = metrics.render(&[]);
        assert!(
            text.contains("upstream_errors_total{kind=\"upstream_timeout\"} 1"),
            "{text}"
        );
        assert!(!text.contains("kind=\"body_timeout\""), "{text}");
        assert!(!text.contains("kind=\"no_route\""), "{text}");
    }
}
