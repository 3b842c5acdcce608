//! TLS termination: the SNI resolver, the rustls server configs and which host gets which
//! client-certificate policy.
//!
//! Not here: reading certificates (`certs`), ordering them (`acme`, which plugs in through
//! [`ManagedCertificates`]), accepting connections and handshake timeouts (`server`).

use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

mod client_auth;

pub use client_auth::{TlsConfigs, admin_config, client_verifier};

use crate::certs::CertStore;
use crate::host::HostPattern;

/// The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Certificates that something other than the files provides (ACME): it answers the
/// handshakes it claims, validation handshakes included, before the files are consulted.
pub trait ManagedCertificates: std::fmt::Debug + Send + Sync {
    /// True for a validation handshake or an SNI whose certificate this source provides.
    fn answers(&self, client_hello: &ClientHello<'_>) -> bool;
    /// The names covered by the certificate served for `sni`, if this source serves it.
    fn names_for(&self, sni: Option<&str>) -> Option<Arc<[HostPattern]>>;
    /// The certificate (or challenge certificate) for a handshake it [`answers`](Self::answers).
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>>;
    /// The HTTP-01 key authorization for `token`, asked for `host` on the plain listener.
    fn http_challenge(&self, host: &str, token: &str) -> Option<Arc<str>>;
}

/// ALPN protocols we speak, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A fresh set of rotating session-ticket keys (rustls rotates them every 6 hours).
pub fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    aws_lc_rs::Ticketer::new()
}

/// The rustls resolver: certificate files, and the ACME account's names when configured.
#[derive(Debug)]
pub struct SniResolver {
    store: CertStore,
    acme: Option<Arc<dyn ManagedCertificates>>,
}

impl SniResolver {
    /// A resolver serving `store`, and `acme`'s names through it.
    pub fn new(store: CertStore, acme: Option<Arc<dyn ManagedCertificates>>) -> Self {
        Self { store, acme }
    }

    /// The names of the certificate chosen for a connection with this SNI.
    pub fn names_for(&self, sni: Option<&str>) -> Option<Arc<[HostPattern]>> {
        self.acme
            .as_ref()
            .and_then(|acme| acme.names_for(sni))
            .or_else(|| self.store.for_sni(sni).map(|e| e.names.clone()))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(acme) = self.acme.as_ref().filter(|a| a.answers(&client_hello)) {
            return acme.resolve(client_hello);
        }
        self.store
            .for_sni(client_hello.server_name())
            .map(|entry| entry.key.clone())
    }
}

/// Builds the rustls server config: TLS 1.2 and 1.3 only, the aws-lc-rs provider's suites (all
/// of them AEAD with ephemeral key exchange), ALPN h2 then http/1.1, rotating session tickets,
/// no 0-RTT.
pub fn server_config(
    resolver: Arc<SniResolver>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    client_auth: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let acme = resolver.acme.is_some();
    let sees_identities = client_auth.is_some();
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(resolver);
    if sees_identities {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    if acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    config.ticketer = ticketer;
    config.max_early_data_size = 0;
    Ok(config)
}
