//! What the proxy knows about one client connection once its handshake is done: who the peer is,
//! which certificate it was shown, and the employee its client certificate names.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

use crate::host::HostPattern;

/// What the proxy knows about one client connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// The peer's address, IPv4-mapped addresses shown as IPv4.
    pub client_ip: IpAddr,
    /// `client_ip` as an `X-Forwarded-For` value, rendered once per connection.
    pub forwarded_for: HeaderValue,
    /// The names of the certificate presented in the handshake: requests for hosts it does not
    /// cover are misdirected.
    pub certificate: Arc<[HostPattern]>,
    /// The negotiated TLS version.
    pub tls_version: TlsVersion,
    /// The SNI the client sent, lowercase.
    pub sni: Option<Arc<str>>,
    /// The employee, when a client certificate was presented and verified.
    pub client: Option<ClientIdentity>,
    /// The gateway generation that last found `client` trustworthy.
    pub trusted_under: AtomicU64,
    /// Lost when the gateway no longer trusts `client`: the connection and its tunnels are
    /// cut.
    pub trust: Trust,
}

/// Whether the gateway still trusts a connection's client certificate, and if not, why.
#[derive(Debug, Default)]
pub struct Trust {
    lost: CancellationToken,
    why: OnceLock<Distrust>,
}

impl Trust {
    /// Withdraws trust for `why`, which cuts the connection and its tunnels. The first reason
    /// stays.
    pub fn withdraw(&self, why: Distrust) {
        let _ = self.why.set(why);
        self.lost.cancel();
    }

    /// Why trust was withdrawn, once it was.
    pub fn withdrawn(&self) -> Option<Distrust> {
        self.why.get().copied()
    }

    /// Completes once trust is withdrawn.
    pub fn lost(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.lost.cancelled()
    }
}

/// Why a connection's client certificate is no longer trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    /// Revoked by a revocation list, or its CA is no longer trusted.
    Revoked,
    /// The certificate, or a revocation list that must vouch for it, is past its time.
    Expired,
}

impl ConnectionInfo {
    /// What the request path needs to know about a finished handshake, whose client
    /// certificate (if any) the gateway of generation `verified_under` accepted.
    pub fn new(
        peer: SocketAddr,
        session: &rustls::ServerConnection,
        certificate: Arc<[HostPattern]>,
        verified_under: u64,
    ) -> Option<Self> {
        Some(Self {
            client_ip: peer.ip().to_canonical(),
            forwarded_for: forwarded_for(peer.ip()),
            certificate,
            tls_version: TlsVersion::of(session)?,
            sni: session
                .server_name()
                .map(|s| Arc::from(s.to_ascii_lowercase())),
            client: ClientIdentity::from_session(session),
            trusted_under: verified_under.into(),
            trust: Trust::default(),
        })
    }

    /// True when the certificate shown on this connection covers `host` (normalised, as from
    /// `request_host`): otherwise the request is misdirected.
    pub fn certificate_covers(&self, host: &str) -> bool {
        crate::host::any_covers(&self.certificate, host)
    }
}

/// The client address as `X-Forwarded-For` carries it: IPv4-mapped IPv6 written as IPv4.
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The TLS versions the listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// The version a finished handshake negotiated; `None` for any other (the server config
    /// offers only these two).
    pub fn of(session: &rustls::ServerConnection) -> Option<Self> {
        match session.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_2 => Some(Self::Tls12),
            rustls::ProtocolVersion::TLSv1_3 => Some(Self::Tls13),
            _ => None,
        }
    }

    /// As logged: `1.2` or `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        }
    }
}

/// An employee as their certificate names them.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The subject CN.
    pub user: String,
    /// SHA-256 of the certificate, binding MFA sessions to it.
    pub fingerprint: [u8; 32],
    /// The chain presented, checked again when a reload changes roots or CRLs.
    pub chain: Arc<[CertificateDer<'static>]>,
    /// The earliest `notAfter` in the chain presented: the chain is checked again then.
    pub expires: SystemTime,
}

impl ClientIdentity {
    /// The verified client certificate's subject CN, if the handshake carried one.
    pub fn from_session(session: &rustls::ServerConnection) -> Option<Self> {
        let presented = session.peer_certificates()?;
        let leaf = presented.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let user = cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_owned();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf);
        let fingerprint = <[u8; 32]>::try_from(digest.as_ref()).ok()?;
        let chain = presented.iter().map(|c| c.clone().into_owned()).collect();
        let expires = presented
            .iter()
            .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, cert)| cert.validity().not_after.timestamp())
            .min()?;
        // Before 1970 or unreadable: expired, which the handshake would have refused anyway.
        let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(expires).ok()?);
        Some(Self {
            user,
            fingerprint,
            chain,
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn forwarded_for_writes_mapped_ipv6_as_ipv4() {
        assert_eq!(
            super::forwarded_for("::ffff:127.0.0.9".parse().unwrap()),
            "127.0.0.9"
        );
        assert_eq!(super::forwarded_for("::1".parse().unwrap()), "::1");
    }
}
