//! The CA's directory (RFC 8555 7.1.1): what rustls-acme reads of it, and what it does not:
//! the `renewalInfo` endpoint (RFC 9773 3) and the profiles the CA offers
//! (draft-aaron-acme-profiles, `meta.profiles`).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use rustls_acme::acme::{AcmeError, Directory};
use serde::Deserialize;

/// A CA, as its directory describes it.
#[derive(Debug, Clone)]
pub struct Ca {
    /// What rustls-acme's client needs.
    pub directory: Directory,
    /// Where to ask when to renew; `None` when the CA offers no renewal information.
    pub renewal_info: Option<String>,
    /// The profiles the CA offers, by name.
    pub profiles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Extensions {
    renewal_info: Option<String>,
    #[serde(default)]
    meta: Meta,
}

#[derive(Default, Deserialize)]
struct Meta {
    #[serde(default)]
    profiles: BTreeMap<String, serde_json::Value>,
}

impl Ca {
    /// Reads the directory at `url`.
    pub async fn discover(
        client: &Arc<rustls::ClientConfig>,
        url: &str,
    ) -> Result<Self, AcmeError> {
        let body = rustls_acme::https(client, url, Method::GET, None)
            .await?
            .into_body();
        Self::parse(&body)
    }

    fn parse(body: &str) -> Result<Self, AcmeError> {
        let directory: Directory = serde_json::from_str(body)?;
        let extensions: Extensions = serde_json::from_str(body)?;
        Ok(Self {
            directory,
            renewal_info: extensions.renewal_info,
            profiles: extensions.meta.profiles.into_keys().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_renewal_info_and_profiles_and_does_without_them() {
        let ca = Ca::parse(
            r#"{"newNonce":"https://ca/n","newAccount":"https://ca/a","newOrder":"https://ca/o",
            "renewalInfo":"https://ca/ari","meta":{"profiles":{"classic":"x","shortlived":"y"}}}"#,
        )
        .unwrap();
        assert_eq!(ca.renewal_info.as_deref(), Some("https://ca/ari"));
        assert_eq!(ca.profiles, ["classic", "shortlived"]);
        let old = Ca::parse(
            r#"{"newNonce":"https://ca/n","newAccount":"https://ca/a","newOrder":"https://ca/o","meta":{}}"#,
        )
        .unwrap();
        assert_eq!(old.renewal_info, None);
        assert!(old.profiles.is_empty());
    }
}
