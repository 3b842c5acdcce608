//! The one context every layer below the access log shares for a request: its id, and what the
//! layers learn that the access line needs (route, body bytes read, the proxy's own error). It
//! travels down typed, beside the request ([`InFlight`]), never in extensions.
//!
//! The access-log layer makes it; routing records the route, the request body counts its bytes,
//! the error layer records the error it answered; the access-log layer reads all of it when the
//! response body ends.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::{HeaderValue, Request};

use crate::access_log::RouteLabel;
use crate::request_id::RequestId;

/// A request below the access log: the message and its exchange.
#[derive(Debug)]
pub struct InFlight<B> {
    /// The request as hyper parsed it.
    pub request: Request<B>,
    /// Its shared record.
    pub exchange: Arc<Exchange>,
}

/// Who caused an error the proxy answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The request was refused: a 4xx.
    Client,
    /// An upstream failed or could not be reached: a 502 or 504.
    Upstream,
    /// The proxy itself: a 500, always a bug.
    Proxy,
}

/// Marks a response the proxy wrote itself, for the access log and the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind {
    /// `ProxyError::kind`.
    pub name: &'static str,
    /// `ProxyError::blame`.
    pub blame: Blame,
}

/// Per-request facts that inner layers learn and the access log needs.
#[derive(Debug)]
pub struct Exchange {
    request_id: RequestId,
    /// `request_id` as its header carries it, encoded once.
    id_header: HeaderValue,
    route: OnceLock<Arc<RouteLabel>>,
    error: OnceLock<ErrorKind>,
    request_bytes: AtomicU64,
    retries: AtomicU32,
}

impl Exchange {
    /// The facts of the request `request_id` names.
    pub fn new(request_id: RequestId) -> Self {
        Self {
            request_id,
            id_header: request_id.header_value(),
            route: OnceLock::new(),
            error: OnceLock::new(),
            request_bytes: AtomicU64::new(0),
            retries: AtomicU32::new(0),
        }
    }

    /// The request's id.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The request's id as the `X-Request-Id` header carries it.
    pub fn id_header(&self) -> HeaderValue {
        self.id_header.clone()
    }

    /// The request's id as logs and the audit trail write it.
    pub fn logged_id(&self) -> String {
        self.request_id.to_string()
    }

    /// Records the route chosen.
    pub fn set_route(&self, route: Arc<RouteLabel>) {
        let _ = self.route.set(route);
    }

    /// The route chosen, if routing got that far.
    pub fn route(&self) -> Option<Arc<RouteLabel>> {
        self.route.get().cloned()
    }

    /// Records that the proxy answered with an error of its own.
    pub fn set_error(&self, kind: ErrorKind) {
        let _ = self.error.set(kind);
    }

    /// The error the proxy answered with, if it did.
    pub fn error(&self) -> Option<ErrorKind> {
        self.error.get().copied()
    }

    /// Counts request body bytes read.
    pub fn add_request_bytes(&self, n: u64) {
        self.request_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Request body bytes read so far.
    pub fn request_bytes(&self) -> u64 {
        self.request_bytes.load(Ordering::Relaxed)
    }

    /// The request was sent again, to another attempt.
    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the request was sent again.
    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }
}
