//! The certificates in service and the ACME orders that keep them: one expiry series per
//! certificate, by source, replaced as a whole whenever a source's set changes, so that a
//! certificate that left service leaves the metrics too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;

use super::{KindLabels, Metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CertificateLabels {
    /// The first name, as before `names` existed.
    name: String,
    /// Every name, comma-separated.
    names: String,
    /// `file` or `acme`.
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    result: &'static str,
}

/// The expiry series each source set last, with their ends of validity, and when the ACME
/// certificate is next renewed and how it is validated.
#[derive(Debug, Default)]
pub(super) struct ServedCertificates(Mutex<Served>);

#[derive(Debug, Default)]
pub(super) struct Served {
    by_source: HashMap<&'static str, Vec<(CertificateLabels, SystemTime)>>,
    acme_renewal: Option<(SystemTime, &'static str)>,
}

/// One certificate in service, for the admin listener's `GET /certificates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateStatus {
    /// Its names.
    pub names: Vec<String>,
    /// `file` or `acme`.
    pub source: &'static str,
    /// When it expires.
    pub not_after: SystemTime,
    /// ACME only: when it is next renewed, once known.
    pub renewal: Option<SystemTime>,
    /// ACME only: how its names are validated.
    pub challenge: Option<&'static str>,
}

/// Where a certificate in service came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `[[tls.certificates]]`.
    File,
    /// `[tls.acme]`, this instance's order or the shared store's.
    Acme,
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Metrics {
    /// When the ACME certificate for `names` is next renewed.
    pub fn certificate_renewal(&self, names: &[String], at: SystemTime, challenge: &'static str) {
        let labels = CertificateLabels {
            name: names.first().cloned().unwrap_or_default(),
            names: names.join(","),
            source: "acme",
        };
        self.certificate_renewal
            .get_or_create(&labels)
            .set(unix(at));
        if let Ok(mut served) = self.served.0.lock() {
            served.acme_renewal = Some((at, challenge));
        }
    }

    /// Every certificate in service now, files first.
    pub fn certificate_status(&self) -> Vec<CertificateStatus> {
        let Ok(served) = self.served.0.lock() else {
            return Vec::new();
        };
        let renewal = served.acme_renewal;
        ["file", "acme"]
            .into_iter()
            .flat_map(|source| served.by_source.get(source).into_iter().flatten())
            .map(|(labels, not_after)| {
                let acme = (labels.source == "acme").then_some(renewal).flatten();
                CertificateStatus {
                    names: labels.names.split(',').map(str::to_owned).collect(),
                    source: labels.source,
                    not_after: *not_after,
                    renewal: acme.map(|(at, _)| at),
                    challenge: acme.map(|(_, challenge)| challenge),
                }
            })
            .collect()
    }

    /// Counts an ACME event.
    pub fn acme(&self, kind: &'static str) {
        self.acme_events.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts an ACME order's end; an issued one is the last success from now.
    pub fn acme_order(&self, issued: bool) {
        let result = if issued { "issued" } else { "failed" };
        self.acme_orders
            .get_or_create(&ResultLabels { result })
            .inc();
        if issued {
            self.acme_last_success.set(unix(SystemTime::now()));
        }
    }

    /// The certificates `source` has in service now, each as its names and end of validity;
    /// the source's series from before that are not among them are removed.
    pub fn certificates(&self, source: Source, served: &[(Vec<String>, SystemTime)]) {
        let source = match source {
            Source::File => "file",
            Source::Acme => "acme",
        };
        let labels: Vec<CertificateLabels> = served
            .iter()
            .map(|(names, _)| CertificateLabels {
                name: names.first().cloned().unwrap_or_default(),
                names: names.join(","),
                source,
            })
            .collect();
        let Ok(mut sets) = self.served.0.lock() else {
            return;
        };
        for (old, _) in sets.by_source.get(source).into_iter().flatten() {
            if !labels.contains(old) {
                self.certificate_expiry.remove(old);
            }
        }
        for (label, (_, not_after)) in labels.iter().zip(served) {
            self.certificate_expiry
                .get_or_create(label)
                .set(unix(*not_after));
        }
        let kept = labels
            .into_iter()
            .zip(served.iter().map(|(_, not_after)| *not_after))
            .collect();
        sets.by_source.insert(source, kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_certificate_out_of_service_leaves_the_metrics() {
        let metrics = Metrics::new();
        let soon = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        metrics.certificates(Source::File, &[(names(&["old.test"]), soon)]);
        metrics.certificates(Source::Acme, &[(names(&["a.test", "b.test"]), soon)]);
        metrics.certificates(Source::File, &[(names(&["new.test"]), soon)]);
        let text = metrics.render(&[]);
        assert!(!text.contains("old.test"), "{text}");
        assert!(
            text.contains(
                "portcullis_certificate_not_after_timestamp_seconds{name=\"new.test\",names=\"new.test\",source=\"file\"} 2000000000"
            ),
            "{text}"
        );
        assert!(
            text.contains("name=\"a.test\",names=\"a.test,b.test\",source=\"acme\""),
            "{text}"
        );
    }
}
