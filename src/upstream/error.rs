//! Why a request could not be completed upstream, sorted from the client's cause chains.

use std::error::Error as StdError;

use crate::body::RequestBodyError;

use super::BoxError;

/// Why a request could not be completed upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Every address is down (health checks) or ejected: answered at once, not tried.
    #[error("no upstream address is available")]
    NoneAvailable,
    /// The address (or a resolved one) lies outside the upstream's environment.
    #[error("upstream address refused by network policy")]
    AddressRefused,
    /// Connection refused, reset, or the name did not resolve (an upstream's or a tunnel
    /// target's).
    #[error("upstream unreachable")]
    Unreachable(#[source] BoxError),
    /// No connection within `upstream_connect_timeout`.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// No response head within `upstream_response_timeout`.
    #[error("upstream response timed out")]
    ResponseTimeout,
    /// The connection failed mid-request or the response was malformed.
    #[error("upstream request failed")]
    Failed(#[source] hyper::Error),
    /// The upstream switched protocols on a request that did not ask to.
    #[error("upstream answered 101 to a request without Upgrade")]
    UpgradeWithoutRequest,
    /// The client's body failed on the way (the client's fault, not the upstream's).
    #[error(transparent)]
    RequestBody(RequestBodyError),
}

impl UpstreamError {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoneAvailable => "upstream_unavailable",
            Self::AddressRefused => "upstream_address_refused",
            Self::Unreachable(_) => "upstream_unreachable",
            Self::ConnectTimeout => "upstream_connect_timeout",
            Self::ResponseTimeout => "upstream_timeout",
            Self::Failed(_) => "upstream_failed",
            Self::UpgradeWithoutRequest => "upstream_bad_upgrade",
            Self::RequestBody(RequestBodyError::TooLarge) => "body_too_large",
            Self::RequestBody(RequestBodyError::Timeout) => "body_timeout",
            Self::RequestBody(RequestBodyError::Malformed) => "bad_body",
        }
    }

    /// An exchange that failed once connected: the client's body is to blame when hyper's
    /// cause chain holds its error.
    pub(super) fn exchange(error: hyper::Error) -> Self {
        let mut cause: Option<&(dyn StdError + 'static)> = error.source();
        while let Some(e) = cause {
            if let Some(body) = e.downcast_ref::<RequestBodyError>() {
                return Self::RequestBody(*body);
            }
            cause = e.source();
        }
        Self::Failed(error)
    }

    /// A connect that failed, sorted by what the connector's cause chain shows.
    pub(super) fn connect(error: BoxError) -> Self {
        let mut cause: Option<&(dyn StdError + 'static)> = Some(error.as_ref());
        while let Some(e) = cause {
            if e.is::<AddressRefused>() {
                return Self::AddressRefused;
            }
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return Self::ConnectTimeout;
            }
            cause = e.source();
        }
        Self::Unreachable(error)
    }
}

/// The policy refusal, as an error type the client's cause chain can be searched for.
#[derive(Debug, thiserror::Error)]
#[error("address outside the upstream's environment")]
pub struct AddressRefused;
