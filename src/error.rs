//! Every way the proxy answers a request itself, and the one place that turns them into
//! responses.
//!
//! Like pingora's error types, each variant knows who is to blame: the client (4xx), an upstream
//! (502/504). Bodies are short fixed texts that name no host, address or path: an attacker
//! learns nothing about what sits behind the proxy.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use rustc_hash::FxBuildHasher;

use crate::body::{RequestBodyError, ResponseBody};
use crate::exchange::{Blame, ErrorKind};
use crate::host::HostError;
use crate::path::PathError;
use crate::rate_limit::RetryAfter;
use crate::routing::TunnelError;
use crate::upstream::UpstreamError;

/// Why a request message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// `Transfer-Encoding` other than one final `chunked` (RFC 9112 6.1, 7: `chunked` once,
    /// last; we accept no other coding), or any on an HTTP/1.0 request (RFC 9112 6.1: its
    /// framing is faulty).
    #[error("Transfer-Encoding other than a single chunked")]
    TransferEncoding,
    /// An HTTP/2 field value with leading or trailing whitespace (RFC 9113 8.2.1: malformed).
    #[error("header value with leading or trailing whitespace")]
    Whitespace,
    /// More header bytes than `max_header_bytes` (RFC 6585 5: 431).
    #[error("request header section too large")]
    HeadersTooLarge,
}

/// Why a `CONNECT` tunnel was not opened (`crate::relay::TunnelLease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    /// Its user already has `[gateway] max_tunnels_per_user` open.
    #[error("too many tunnels open for this user")]
    PerUser,
    /// `max_connections` connections and tunnels are open.
    #[error("no connection left for another tunnel")]
    Connections,
}

/// Why a configured employee, identified by a certificate the gateway trusts, was refused: they
/// are told, so that they can ask for the right access. Anyone else is told nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Neither the route's `allow` list nor a running access request admits them.
    #[error("no grant for {0}")]
    NoGrant(String),
    /// A `CONNECT` to a target that is not one of the gateway's tunnels.
    #[error("no such tunnel target")]
    NoSuchTarget,
}

/// A request the proxy answers itself instead of forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Framing, field values or header size no upstream should be asked to interpret.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// Missing, duplicate, malformed or conflicting host.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A path that cannot be normalised safely.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The certificate of this connection does not cover the requested host (RFC 9110 15.5.20).
    #[error("host is not covered by this connection's certificate")]
    Misdirected,
    /// A `CONNECT` with no tunnel: none on this host, or not one of its targets.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// An internal route this client may not use (RFC 9110 15.5.4).
    #[error("not allowed on this internal route")]
    Forbidden,
    /// A refusal the employee it concerns is told the reason of.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No route for this host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// A tunnel over its user's or the proxy's limit.
    #[error(transparent)]
    OverLimit(#[from] OverLimit),
    /// A client over a rate limit (RFC 6585 4: 429, with `Retry-After`).
    #[error(transparent)]
    RateLimited(#[from] RetryAfter),
    /// The declared `Content-Length` is over the route's limit.
    #[error("declared request body exceeds the route's limit")]
    PayloadTooLarge,
    /// The upstream could not be asked.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A request the proxy's own invariants say cannot get here.
    #[error("internal error")]
    Internal,
}

impl ProxyError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Host(_) | Self::Path(_) => StatusCode::BAD_REQUEST,
            Self::Message(MessageError::HeadersTooLarge) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::Message(_) => StatusCode::BAD_REQUEST,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::Tunnel(TunnelError::NotOffered) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Tunnel(TunnelError::UnknownTarget) => StatusCode::FORBIDDEN,
            Self::Tunnel(TunnelError::NotAuthority) => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::OverLimit(OverLimit::PerUser) => StatusCode::TOO_MANY_REQUESTS,
            Self::OverLimit(OverLimit::Connections) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Forbidden | Self::Refused(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Upstream(e) => match e {
                UpstreamError::RequestBody(RequestBodyError::TooLarge) => {
                    StatusCode::PAYLOAD_TOO_LARGE
                }
                UpstreamError::RequestBody(RequestBodyError::Timeout) => {
                    StatusCode::REQUEST_TIMEOUT
                }
                UpstreamError::RequestBody(RequestBodyError::Malformed) => StatusCode::BAD_REQUEST,
                UpstreamError::NoneAvailable => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                UpstreamError::AddressRefused
                | UpstreamError::Unreachable(_)
                | UpstreamError::Failed(_)
                | UpstreamError::UpgradeWithoutRequest => StatusCode::BAD_GATEWAY,
            },
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message(MessageError::HeadersTooLarge) => "headers_too_large",
            Self::Message(_) => "bad_message",
            Self::Host(_) => "bad_host",
            Self::Path(_) => "bad_path",
            Self::Misdirected => "misdirected",
            Self::Tunnel(TunnelError::NotOffered) => "connect_not_offered",
            Self::Tunnel(TunnelError::UnknownTarget) => "unknown_tunnel",
            Self::Tunnel(TunnelError::NotAuthority) => "bad_connect",
            Self::NoRoute => "no_route",
            Self::OverLimit(OverLimit::PerUser) => "tunnels_per_user",
            Self::OverLimit(OverLimit::Connections) => "tunnel_capacity",
            Self::Forbidden | Self::Refused(Refusal::NoGrant(_)) => "forbidden",
            Self::Refused(Refusal::NoSuchTarget) => "unknown_tunnel",
            Self::PayloadTooLarge => "body_too_large",
            Self::RateLimited(_) => "rate_limited",
            Self::Internal => "internal",
            Self::Upstream(e) => e.kind(),
        }
    }

    /// Whose fault it is: what alerts and the upstream-error metric count.
    pub fn blame(&self) -> Blame {
        match self {
            Self::Upstream(UpstreamError::RequestBody(_)) => Blame::Client,
            Self::Upstream(_) => Blame::Upstream,
            Self::Internal => Blame::Proxy,
            Self::Message(_)
            | Self::Host(_)
            | Self::Path(_)
            | Self::Misdirected
            | Self::Tunnel(_)
            | Self::NoRoute
            | Self::OverLimit(_)
            | Self::Forbidden
            | Self::Refused(_)
            | Self::PayloadTooLarge
            | Self::RateLimited(_) => Blame::Client,
        }
    }

    /// The response sent to the client.
    pub fn to_response(&self) -> Response<ResponseBody> {
        let mut response = status_response(self.status());
        match self {
            Self::Refused(refusal) => {
                *response.body_mut() = ResponseBody::full(format!("{refusal}\n"));
            }
            // Whole seconds, rounded up (RFC 9110 10.2.3): sooner would be refused again.
            Self::RateLimited(RetryAfter(wait)) => {
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            _ => {}
        }
        response
    }

    /// What the access log and the metrics record of it.
    pub fn error_kind(&self) -> ErrorKind {
        ErrorKind {
            name: self.kind(),
            blame: self.blame(),
        }
    }
}

/// A response with the status's reason phrase as its whole body.
pub fn status_response(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(status_body(status)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The reason phrase and a newline. Made once per status: the plain listener answers every
/// request with one of these, and a body made per response was an allocation per request.
fn status_body(status: StatusCode) -> Bytes {
    static BODIES: LazyLock<HashMap<u16, Bytes, FxBuildHasher>> = LazyLock::new(|| {
        (100..1000)
            .filter_map(|code| {
                let reason = StatusCode::from_u16(code).ok()?.canonical_reason()?;
                // Made once for the process's life: a static table.
                let body: &'static str = Box::leak(format!("{reason}\n").into_boxed_str());
                Some((code, Bytes::from_static(body.as_bytes())))
            })
            .collect()
    });
    BODIES
        .get(&status.as_u16())
        .cloned()
        .unwrap_or_else(|| Bytes::from_static(b"Error\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn status_bodies_are_the_reason_phrase_on_a_line() {
        for (code, body) in [
            (301, "Moved Permanently\n"),
            (404, "Not Found\n"),
            (421, "Misdirected Request\n"),
            (599, "Error\n"),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(status_body(status), body.as_bytes(), "{code}");
        }
    }

    #[test]
    fn each_error_is_blamed_on_whoever_its_status_says() {
        let errors = [
            ProxyError::Message(MessageError::HeadersTooLarge),
            ProxyError::Misdirected,
            ProxyError::Tunnel(TunnelError::NotOffered),
            ProxyError::Tunnel(TunnelError::UnknownTarget),
            ProxyError::Tunnel(TunnelError::NotAuthority),
            ProxyError::Forbidden,
            ProxyError::Refused(Refusal::NoGrant("db1:22".into())),
            ProxyError::Refused(Refusal::NoSuchTarget),
            ProxyError::NoRoute,
            ProxyError::PayloadTooLarge,
            ProxyError::Upstream(UpstreamError::AddressRefused),
            ProxyError::Upstream(UpstreamError::NoneAvailable),
            ProxyError::RateLimited(RetryAfter(Duration::from_millis(1500))),
            ProxyError::Upstream(UpstreamError::ConnectTimeout),
            ProxyError::Upstream(UpstreamError::ResponseTimeout),
            ProxyError::Upstream(UpstreamError::UpgradeWithoutRequest),
            ProxyError::Upstream(UpstreamError::RequestBody(RequestBodyError::Timeout)),
            ProxyError::Upstream(UpstreamError::RequestBody(RequestBodyError::TooLarge)),
            ProxyError::Upstream(UpstreamError::RequestBody(RequestBodyError::Malformed)),
            ProxyError::Internal,
        ];
        for error in errors {
            let expected = match error.status() {
                StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => Blame::Upstream,
                StatusCode::INTERNAL_SERVER_ERROR => Blame::Proxy,
                status => {
                    assert!(status.is_client_error(), "{error:?} answered {status}");
                    Blame::Client
                }
            };
            assert_eq!(
                error.blame(),
                expected,
                "{error:?} answered {}",
                error.status()
            );
        }
    }
}
