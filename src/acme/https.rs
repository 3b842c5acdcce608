//! The HTTPS client the ACME side's helpers share (the object store, a DNS provider's API):
//! hyper-util's connector over rustls (aws-lc-rs), trusting the system's roots (a private
//! service may be signed by a CA installed there) or the public ones when the machine has no
//! bundle, or a CA of the config's own.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;

use crate::config::SYSTEM_ROOTS;

/// The system's roots, or the public ones.
pub fn system_roots() -> RootCertStore {
    crate::certs::load_roots(std::path::Path::new(SYSTEM_ROOTS))
        .unwrap_or_else(|_| crate::certs::public_roots())
}

/// A connector trusting `roots`. Plain `http://` goes through only with `allow_http`, which
/// validation grants to a loopback endpoint alone.
pub fn connector(
    roots: RootCertStore,
    allow_http: bool,
    connect_timeout: Option<Duration>,
) -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(connect_timeout);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::certs::client_config(roots)?);
    Ok(match allow_http {
        true => builder.https_or_http(),
        false => builder.https_only(),
    }
    .enable_http1()
    .wrap_connector(http))
}
