//! Why an order failed, with what the CA said about it when it said something.

use rustls_acme::acme::AcmeError;

use super::bucket::StoreError;
use super::problem::Problem;

/// Why an order failed; the next attempt backs off.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The ACME server refused or failed a request.
    #[error("ACME: {0}")]
    Acme(#[from] AcmeError),
    /// The store could not be read or written.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A key or certificate could not be made.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The stored account key is not a P-256 PKCS#8 key.
    #[error("the stored account key is unusable")]
    AccountKey,
    /// The order or an authorization ended invalid, or never settled.
    #[error("{what}")]
    Failed {
        /// What ended how.
        what: String,
        /// What the CA said about it, when it said something.
        problem: Option<Problem>,
    },
}

impl OrderError {
    /// Ended without the CA saying why.
    pub fn failed(what: impl Into<String>) -> Self {
        Self::Failed {
            what: what.into(),
            problem: None,
        }
    }

    /// The CA's problem document, when the failure carries one.
    pub fn problem(&self) -> Option<Problem> {
        match self {
            Self::Acme(e) => Problem::of_acme(e),
            Self::Failed { problem, .. } => problem.clone(),
            Self::Store(_) | Self::Rcgen(_) | Self::AccountKey => None,
        }
    }
}
