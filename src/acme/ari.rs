//! ACME Renewal Information (RFC 9773): the identifier of a certificate the CA knows it by,
//! and the CA's answer to "when should this one be renewed?".

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Method;
use rustls_acme::acme::AcmeError;
use serde::Deserialize;

/// How long to wait before asking again when the CA does not say (RFC 9773 4.3 suggests six
/// hours), and the bounds put on what it says.
const DEFAULT_RETRY: Duration = Duration::from_secs(6 * 3600);
const MIN_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(24 * 3600);

/// The CA's suggestion for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// The window to renew in.
    pub start: SystemTime,
    pub end: SystemTime,
    /// When to ask again.
    pub retry_after: Duration,
    /// Why, when the CA says (a revocation event, say).
    pub explanation: Option<String>,
}

/// Why the CA's answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AriError {
    #[error("ACME: {0}")]
    Acme(#[from] AcmeError),
    #[error("renewalInfo: {0}")]
    Unreadable(String),
}

/// RFC 9773 4.1: base64url of the authority key identifier, `.`, base64url of the serial
/// number's DER content octets; `None` for a certificate without an AKI.
pub fn cert_id(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })?;
    Some(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(aki.0),
        URL_SAFE_NO_PAD.encode(cert.tbs_certificate.raw_serial())
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenewalInfo {
    suggested_window: Window,
    #[serde(rename = "explanationURL")]
    explanation_url: Option<String>,
}

#[derive(Deserialize)]
struct Window {
    start: String,
    end: String,
}

/// Asks the CA's `renewal_info` endpoint about the certificate `id`.
pub async fn ask(
    client: &Arc<rustls::ClientConfig>,
    renewal_info: &str,
    id: &str,
    now: SystemTime,
) -> Result<Suggestion, AriError> {
    let url = format!("{}/{id}", renewal_info.trim_end_matches('/'));
    let response = rustls_acme::https(client, url, Method::GET, None)
        .await
        .map_err(AcmeError::from)?;
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, now));
    parse(response.body(), retry_after)
}

fn parse(body: &str, retry_after: Option<Duration>) -> Result<Suggestion, AriError> {
    let info: RenewalInfo =
        serde_json::from_str(body).map_err(|e| AriError::Unreadable(e.to_string()))?;
    let time = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map(SystemTime::from)
            .map_err(|e| AriError::Unreadable(format!("{text:?}: {e}")))
    };
    let (start, end) = (
        time(&info.suggested_window.start)?,
        time(&info.suggested_window.end)?,
    );
    // RFC 9773 4.2: a window that ends before it starts is invalid and must be ignored.
    if end <= start {
        return Err(AriError::Unreadable(
            "the window ends before it starts".into(),
        ));
    }
    Ok(Suggestion {
        start,
        end,
        retry_after: retry_after
            .unwrap_or(DEFAULT_RETRY)
            .clamp(MIN_RETRY, MAX_RETRY),
        explanation: info.explanation_url,
    })
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 10.2.3).
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rfc_example_and_bounds_retry_after() {
        let body = r#"{"suggestedWindow":{"start":"2025-01-02T04:00:00Z","end":"2025-01-03T04:00:00Z"},
            "explanationURL":"https://acme.example.com/docs/ari"}"#;
        let s = parse(body, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            s.start,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_790_400)
        );
        assert_eq!(s.end.duration_since(s.start).unwrap().as_secs(), 86_400);
        assert_eq!(s.retry_after, MIN_RETRY);
        assert_eq!(parse(body, None).unwrap().retry_after, DEFAULT_RETRY);
        let backwards =
            r#"{"suggestedWindow":{"start":"2025-01-03T04:00:00Z","end":"2025-01-02T04:00:00Z"}}"#;
        assert!(parse(backwards, None).is_err());
        assert!(parse("{}", None).is_err());
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        let later = retry_after("Sun, 06 Nov 1994 08:59:37 GMT", now);
        assert_eq!(later, Some(Duration::from_secs(600)));
        assert_eq!(retry_after("soon", now), None);
    }
}
