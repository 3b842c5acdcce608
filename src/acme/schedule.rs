//! When a certificate is renewed: inside the window the CA suggests (RFC 9773), at a random
//! point in it so that a CA's clients do not all come at once, and at once when the CA moves the
//! window into the past (its way of saying "this certificate is about to be revoked"). Without
//! a window: `renew_before` before expiry, or with a third of the lifetime left when that is
//! later, so that short-lived certificates (about six days) renew after four.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::ari::{self, Suggestion};
use super::directory::Ca;
use crate::logging::Throttle;

/// Asking again after a failed look at the CA's renewal information.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(3600);
static ARI_FAILURES: Throttle = Throttle::new(Duration::from_secs(3600));

/// The pause after `failures` failed orders in a row: a minute, doubling up to an hour.
pub fn backoff(failures: u32) -> Duration {
    (Duration::from_secs(60) * 2u32.saturating_pow(failures.saturating_sub(1).min(6)))
        .min(Duration::from_secs(3600))
}

/// A certificate in service, as far as renewal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Its RFC 9773 identifier; `None` without an authority key identifier.
    pub cert_id: Option<String>,
}

impl Issued {
    /// The leaf of `chain`.
    pub fn of(leaf_der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(leaf_der).ok()?;
        let time = |t: ASN1Time| {
            u64::try_from(t.timestamp())
                .ok()
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        };
        let validity = cert.validity();
        Some(Self {
            not_before: time(validity.not_before)?,
            not_after: time(validity.not_after)?,
            cert_id: ari::cert_id(leaf_der),
        })
    }

    /// The latest renewal any window is followed to: a tenth of the lifetime before expiry.
    fn latest(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_after - lifetime / 10
    }

    /// Without advice from the CA: `renew_before` before expiry, or a third of the lifetime
    /// before it when that is shorter.
    pub fn fallback(&self, renew_before: Duration) -> SystemTime {
        crate::config::renewal_without_window(self.not_before, self.not_after, renew_before)
    }
}

/// What has been learnt about one certificate's renewal, kept between looks.
#[derive(Debug, Default)]
pub struct Renewal {
    /// The certificate this is about.
    about: Option<Issued>,
    /// The CA's last suggestion and the point picked in it.
    window: Option<(Suggestion, SystemTime)>,
    /// When to ask the CA again.
    next_ask: Option<SystemTime>,
}

impl Renewal {
    /// When `issued` is to be renewed, as of `now`: asks the CA when its last answer says to.
    /// A time at or before `now` means now.
    pub async fn when(
        &mut self,
        client: &Arc<rustls::ClientConfig>,
        ca: Option<&Ca>,
        issued: &Issued,
        renew_before: Duration,
        now: SystemTime,
    ) -> SystemTime {
        if self.about.as_ref() != Some(issued) {
            *self = Self {
                about: Some(issued.clone()),
                ..Self::default()
            };
        }
        let ask = ca
            .and_then(|ca| ca.renewal_info.as_deref())
            .zip(issued.cert_id.as_deref());
        if let Some((url, id)) = ask
            && self.next_ask.is_none_or(|at| at <= now)
        {
            match ari::ask(client, url, id, now).await {
                Ok(suggestion) => self.learn(suggestion, now, fastrand::f64()),
                Err(e) => {
                    ARI_FAILURES.warn(|count| {
                        tracing::warn!(count, "ACME: renewal information unavailable, renewing by renew_before meanwhile: {e}");
                    });
                    self.next_ask = Some(now + RETRY_AFTER_FAILURE);
                }
            }
        }
        self.at(issued, renew_before, now)
    }

    /// Takes the CA's answer; `pick` in `[0, 1)` places the renewal in a new window.
    fn learn(&mut self, suggestion: Suggestion, now: SystemTime, pick: f64) {
        self.next_ask = Some(now + suggestion.retry_after);
        let same = self.window.as_ref().is_some_and(|(known, _)| {
            (known.start, known.end) == (suggestion.start, suggestion.end)
        });
        if same {
            return;
        }
        let span = suggestion
            .end
            .duration_since(suggestion.start)
            .unwrap_or_default();
        let point = suggestion.start + span.mul_f64(pick.clamp(0.0, 1.0));
        if let Some(why) = &suggestion.explanation {
            tracing::info!(explanation = %why, "ACME: the CA moved this certificate's renewal window");
        }
        self.window = Some((suggestion, point));
    }

    fn at(&self, issued: &Issued, renew_before: Duration, now: SystemTime) -> SystemTime {
        match &self.window {
            // RFC 9773 4.2: a window already over means renew now.
            Some((suggestion, _)) if suggestion.end <= now => now,
            // Never later than with a tenth of the lifetime left: a window at or past expiry
            // (a CA's mistake, or a lying endpoint) must not keep a certificate until it ends.
            Some((_, point)) => (*point).min(issued.latest()),
            None => issued.fallback(renew_before),
        }
    }

    /// When the CA is next asked, if it is asked at all.
    pub fn next_ask(&self) -> Option<SystemTime> {
        self.next_ask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn issued(days: u32) -> Issued {
        let not_before = SystemTime::UNIX_EPOCH + DAY * 20_000;
        Issued {
            not_before,
            not_after: not_before + DAY * days,
            cert_id: Some("a.b".into()),
        }
    }

    #[test]
    fn without_a_window_renew_before_or_a_third_of_the_lifetime() {
        let long = issued(90);
        assert_eq!(long.fallback(DAY * 30), long.not_after - DAY * 30);
        assert_eq!(long.fallback(DAY * 10), long.not_after - DAY * 10);
        let short = issued(6);
        assert_eq!(short.fallback(DAY * 30), short.not_before + DAY * 4);
    }

    #[test]
    fn a_window_is_kept_with_its_point_and_one_in_the_past_is_now() {
        let cert = issued(90);
        let now = cert.not_before + DAY;
        let mut renewal = Renewal {
            about: Some(cert.clone()),
            ..Renewal::default()
        };
        let window = |start: SystemTime, end: SystemTime| Suggestion {
            start,
            end,
            retry_after: Duration::from_secs(3600),
            explanation: None,
        };
        let start = cert.not_before + DAY * 60;
        renewal.learn(window(start, start + DAY * 2), now, 0.25);
        assert_eq!(renewal.at(&cert, DAY * 30, now), start + DAY / 2);
        // The same window again keeps the point picked, whatever the new pick.
        renewal.learn(window(start, start + DAY * 2), now, 0.9);
        assert_eq!(renewal.at(&cert, DAY * 30, now), start + DAY / 2);
        assert_eq!(renewal.next_ask(), Some(now + Duration::from_secs(3600)));
        // A window at expiry is followed only to a tenth of the lifetime before it.
        let late = cert.not_after - DAY;
        renewal.learn(window(late, cert.not_after), now, 0.5);
        assert_eq!(renewal.at(&cert, DAY * 30, now), cert.not_after - DAY * 9);
        // Moved into the past: now.
        renewal.learn(window(now - DAY * 2, now - DAY), now, 0.5);
        assert_eq!(renewal.at(&cert, DAY * 30, now), now);
    }
}
