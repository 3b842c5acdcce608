//! What the CA said went wrong: the ACME problem document (RFC 8555 6.7, RFC 7807) of a failed
//! order, found in whichever error carries it (a refused request's body, an invalid
//! authorization's challenge, an invalid order), for the operational log and the audit line.

use rustls_acme::OrderError;
use rustls_acme::acme::{AcmeError, Auth, Order};
use rustls_acme::{HttpsRequestError, acme};

pub use crate::audit::AcmeProblem as Problem;

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)?;
        for sub in &self.subproblems {
            let name = sub.identifier.as_ref().map_or("-", |i| i.value.as_str());
            write!(f, "; {name}: {}: {}", sub.kind, sub.detail)?;
        }
        Ok(())
    }
}

impl Problem {
    fn of(problem: &acme::Problem) -> Self {
        Self {
            kind: problem.typ.clone().unwrap_or_default(),
            detail: problem.detail.clone().unwrap_or_default(),
            subproblems: Vec::new(),
        }
    }

    /// The body of a refused request, when it is a problem document.
    pub fn of_body(body: &str) -> Option<Self> {
        serde_json::from_str(body).ok()
    }

    /// The problem of a request the CA refused.
    pub fn of_acme(error: &AcmeError) -> Option<Self> {
        match error {
            AcmeError::HttpRequest(HttpsRequestError::Non2xxStatus { body, .. }) => {
                Self::of_body(body)
            }
            _ => None,
        }
    }

    /// The first challenge error of an authorization that ended invalid.
    pub fn of_auth(auth: &Auth) -> Option<Self> {
        auth.challenges
            .iter()
            .find_map(|c| c.error.as_ref())
            .map(Self::of)
    }

    /// The error of an order that ended invalid.
    pub fn of_order(order: &Order) -> Option<Self> {
        order.error.as_ref().map(Self::of)
    }

    /// The problem in an error of rustls-acme's own order loop (a single instance).
    pub fn of_order_error(error: &OrderError) -> Option<Self> {
        match error {
            OrderError::Acme(e) => Self::of_acme(e),
            OrderError::BadAuth(auth) => Self::of_auth(auth),
            OrderError::BadOrder(order) => Self::of_order(order),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_identifier_keeps_its_subproblems() {
        let body = r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier",
            "detail":"Error creating new order :: Cannot issue for \"bad.example\"",
            "status":400,
            "subproblems":[{"type":"urn:ietf:params:acme:error:rejectedIdentifier",
              "detail":"forbidden name","identifier":{"type":"dns","value":"bad.example"}}]}"#;
        let problem = Problem::of_body(body).unwrap();
        assert_eq!(
            problem.kind,
            "urn:ietf:params:acme:error:rejectedIdentifier"
        );
        assert_eq!(problem.subproblems.len(), 1);
        let said = problem.to_string();
        assert!(
            said.contains(
                "bad.example: urn:ietf:params:acme:error:rejectedIdentifier: forbidden name"
            ),
            "{said}"
        );
        assert!(Problem::of_body("<html>502</html>").is_none());
    }
}
