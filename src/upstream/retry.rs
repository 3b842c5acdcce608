//! Which requests may be sent again, and how many retries an upstream may make.
//!
//! A request whose connection failed before any byte of it was written may go again whatever
//! its method: the upstream never saw it. Once written, only an idempotent request (RFC 9110
//! 9.2.2) may, and only when its body can be sent again, read whole up to
//! [`MAX_REPLAY_BYTES`]; a `POST` that reached an upstream never goes twice. Retries come out
//! of a budget (tower's, as linkerd's), so that in an outage they cannot multiply the load.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::Body;
use tower::retry::budget::{Budget as _, TpsBudget};

use super::UpstreamError;
use crate::body::RequestBody;

/// The largest body read whole so that its request may be sent again.
pub(super) const MAX_REPLAY_BYTES: u64 = 64 * 1024;

/// A request that may be sent again: its head, and its body read whole.
#[derive(Debug)]
pub(super) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    template: RequestBody,
}

impl Replay {
    /// Another copy of the request.
    pub(super) fn request(&self) -> Request<RequestBody> {
        let mut request = Request::new(self.template.replay(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }

    /// The request to send first and, when it is idempotent and its body small and known, its
    /// replay. A larger or unsized body streams as before, and its request is retried only
    /// before any byte of it was written.
    pub(super) async fn prepare(
        request: Request<RequestBody>,
    ) -> Result<(Request<RequestBody>, Option<Replay>), UpstreamError> {
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let small =
            request.body().is_end_stream() || declared.is_some_and(|n| n <= MAX_REPLAY_BYTES);
        if !idempotent(request.method()) || !small {
            return Ok((request, None));
        }
        let (parts, body) = request.into_parts();
        let template = body.template();
        let bytes = body
            .read_whole()
            .await
            .map_err(UpstreamError::RequestBody)?;
        let replay = Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: bytes.clone(),
            template,
        };
        let first = Request::from_parts(parts, replay.template.replay(bytes));
        Ok((first, Some(replay)))
    }
}

/// RFC 9110 9.2.2: the safe methods, `PUT` and `DELETE`.
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Retries as a share of requests over ten seconds, beyond a floor of ten a second, so that a
/// quiet upstream can still retry.
#[derive(Debug)]
pub(super) struct Budget(TpsBudget);

impl Budget {
    /// `share` is validated to lie in 0..=1, which `TpsBudget` requires.
    pub(super) fn new(share: f32) -> Self {
        Self(TpsBudget::new(Duration::from_secs(10), 10, share))
    }

    /// A request was sent.
    pub(super) fn deposit(&self) {
        self.0.deposit();
    }

    /// Whether one more retry may be made now.
    pub(super) fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_methods_are_sent_twice() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!idempotent(&method), "{method}");
        }
    }

    #[test]
    fn the_budget_allows_its_floor_then_its_share() {
        let budget = Budget::new(0.2);
        // The floor: ten a second over ten seconds.
        let floor = (0..1000).take_while(|_| budget.withdraw()).count();
        assert_eq!(floor, 100);
        for _ in 0..50 {
            budget.deposit();
        }
        assert_eq!((0..100).take_while(|_| budget.withdraw()).count(), 10);
    }
}
