//! The id that joins what every system logged about one request: made here for each request,
//! sent to the upstream and back to the client as `X-Request-Id`, written in the access-log line
//! and in the audit line of the same request.
//!
//! A UUIDv7 (RFC 9562 5.7): its first 48 bits are the Unix time in milliseconds, so ids sort by
//! time as log lines do. Whatever a client sends as `X-Request-Id` is replaced, never forwarded
//! nor logged: a value a client chooses and repeats is a user identifier by another name, and
//! one copied from another request would join logs that have nothing to do with each other.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

/// The header the id travels in, both ways.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One request's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(uuid::Uuid);

impl RequestId {
    /// A new id for a request arriving now. The random part needs to be unique, not secret:
    /// nothing is granted by knowing an id, so the thread-local generator serves.
    pub fn new() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut random = [0u8; 10];
        fastrand::fill(&mut random);
        Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }

    /// The id as the header carries it, in one allocation that every clone of the value shares
    /// (the upstream's request and the client's response each carry one).
    pub fn header_value(&self) -> HeaderValue {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.0.hyphenated().encode_lower(&mut text);
        // Hex digits and hyphens are always a valid header value.
        HeaderValue::from_maybe_shared(Bytes::from_owner(text))
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    }

    /// Appends the id as the access log writes it (the same text as the header), without going
    /// through a formatter: it runs once per request.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        out.extend_from_slice(self.0.hyphenated().encode_lower(&mut text).as_bytes());
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_and_sort_by_time() {
        let first = RequestId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = RequestId::new();
        assert_eq!(first.0.get_version_num(), 7);
        assert!(first < second, "{first} then {second}");
        assert_eq!(first.header_value().to_str().unwrap(), first.to_string());
        let mut written = Vec::new();
        first.write_to(&mut written);
        assert_eq!(written, first.to_string().as_bytes());
    }
}
