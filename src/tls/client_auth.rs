//! Client certificates for internal hosts: which rustls config a handshake gets, chosen by SNI
//! before the handshake goes on.
//!
//! A host whose routes are all internal (tunnels are) requires an employee certificate; a host that mixes
//! public and internal routes asks for one optionally (its internal routes answer 403 without
//! it); other hosts never ask. Configs that see client certificates issue no session tickets and
//! keep no session cache, so no resumed session can carry an identity anywhere.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::{SniResolver, server_config};
use crate::config::{GatewaySettings, RouteConfig, TunnelConfig};
use crate::host::HostMap;
use crate::host::HostPattern;

/// How a host treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Never asks.
    None,
    /// Asks; the handshake succeeds without one.
    Optional,
    /// The handshake fails without a valid one.
    Required,
}

/// The rustls configs of one generation and which host gets which.
#[derive(Debug, Clone)]
pub struct TlsConfigs {
    public: Arc<rustls::ServerConfig>,
    optional: Arc<rustls::ServerConfig>,
    required: Arc<rustls::ServerConfig>,
    classes: HostMap<ClientAuth>,
}

impl TlsConfigs {
    /// Builds the three configs; without a gateway all three are the public one.
    pub fn new(
        resolver: Arc<SniResolver>,
        ticketer: Arc<dyn rustls::server::ProducesTickets>,
        gateway: Option<&GatewaySettings>,
        routes: &[RouteConfig],
        tunnels: &[TunnelConfig],
    ) -> Result<Self, rustls::Error> {
        let public = Arc::new(server_config(resolver.clone(), ticketer, None)?);
        let (optional, required) = match gateway {
            Some(gateway) => (
                Arc::new(server_config(
                    resolver.clone(),
                    ticketer_off(),
                    Some(client_verifier(gateway, true)?),
                )?),
                Arc::new(server_config(
                    resolver,
                    ticketer_off(),
                    Some(client_verifier(gateway, false)?),
                )?),
            ),
            None => (public.clone(), public.clone()),
        };
        let mut classes = HostMap::default();
        let routes = routes.iter().map(|r| (r.host.clone(), r.access.is_some()));
        let tunnels = tunnels
            .iter()
            .map(|t| (HostPattern::Exact(t.host.clone()), true));
        for (host, internal) in routes.chain(tunnels) {
            let this = if internal {
                ClientAuth::Required
            } else {
                ClientAuth::None
            };
            classes
                .entry(host)
                .and_modify(|class: &mut ClientAuth| {
                    if *class != this {
                        *class = ClientAuth::Optional;
                    }
                })
                .or_insert(this);
        }
        Ok(Self {
            public,
            optional,
            required,
            classes,
        })
    }

    /// The class of the host a ClientHello names.
    pub fn class(&self, sni: Option<&str>) -> ClientAuth {
        let Some(sni) = sni.map(str::to_ascii_lowercase) else {
            return ClientAuth::None;
        };
        self.classes.get(&sni).copied().unwrap_or(ClientAuth::None)
    }

    /// The config for a ClientHello's SNI.
    pub fn for_sni(&self, sni: Option<&str>) -> Arc<rustls::ServerConfig> {
        match self.class(sni) {
            ClientAuth::None => self.public.clone(),
            ClientAuth::Optional => self.optional.clone(),
            ClientAuth::Required => self.required.clone(),
        }
    }
}

/// The admin listener's TLS: an employee certificate required, no resumption, HTTP/1.1 only.
pub fn admin_config(
    resolver: Arc<SniResolver>,
    gateway: &GatewaySettings,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = server_config(
        resolver,
        ticketer_off(),
        Some(client_verifier(gateway, false)?),
    )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verifier of employee certificates. Expired, not-yet-valid, untrusted and revoked
/// certificates fail; with revocation lists configured, a certificate whose status they do not
/// cover fails too (rustls's default), and so does every certificate a list covers once that
/// list is past its `nextUpdate`: a stale list would no longer show new revocations (rustls
/// ignores expiry unless told to).
pub fn client_verifier(
    gateway: &GatewaySettings,
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
    let builder = WebPkiClientVerifier::builder_with_provider(
        gateway.client_roots.clone(),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .with_crls(gateway.crls.clone())
    .enforce_revocation_expiration();
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder
        .build()
        .map_err(|e| rustls::Error::General(format!("client certificate verifier: {e}")))
}

fn ticketer_off() -> Arc<dyn rustls::server::ProducesTickets> {
    Arc::new(NoTickets)
}

#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
}
