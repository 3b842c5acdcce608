//! Pebble, a real ACME server, with real validation (no `PEBBLE_VA_ALWAYS_VALID`): its DNS
//! answered by pebble-challtestsrv with 127.0.0.1, or by a DNS server of the test's own.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{Pki, free_port};

/// Where Pebble validates: the TLS-ALPN-01 and HTTP-01 ports it connects to, and the DNS
/// server it resolves names and DNS-01 records with (pebble-challtestsrv by default).
#[derive(Debug, Clone)]
pub struct Ports {
    pub tls_alpn: u16,
    pub http: u16,
    pub dns: Option<String>,
}

impl Ports {
    /// TLS-ALPN-01 at `port`; HTTP-01 nowhere anything listens.
    pub fn tls_alpn(port: u16) -> Self {
        Self {
            tls_alpn: port,
            http: free_port(),
            dns: None,
        }
    }
}

/// Pebble and its DNS, killed on drop.
pub struct Pebble {
    processes: Vec<Child>,
    pub directory: String,
    management: SocketAddr,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    pub fn start(pki: &Pki, tls_alpn_port: u16) -> Self {
        Self::issuing_for(pki, tls_alpn_port, 157_766_400)
    }

    /// Pebble whose certificates are valid for `validity_secs` (its default is five years).
    pub fn issuing_for(pki: &Pki, tls_alpn_port: u16, validity_secs: u64) -> Self {
        Self::with(pki, Ports::tls_alpn(tls_alpn_port), validity_secs, 0)
    }

    /// Pebble that refuses `percent` of valid nonces with `badNonce`, as a CA whose nonces
    /// expire or are scoped to one of its servers does (RFC 8555 6.5).
    pub fn rejecting_nonces(pki: &Pki, tls_alpn_port: u16, percent: u8) -> Self {
        Self::with(pki, Ports::tls_alpn(tls_alpn_port), 157_766_400, percent)
    }

    /// Pebble validating at `ports`, its certificates valid for `validity_secs`, refusing
    /// `nonce_reject` percent of nonces.
    pub fn with(pki: &Pki, ports: Ports, validity_secs: u64, nonce_reject: u8) -> Self {
        let Ports {
            tls_alpn: tls_alpn_port,
            http: http_port,
            dns: resolver,
        } = ports;
        let dns = free_port();
        let (listen, management) = (free_port(), free_port());
        let (cert, key) = pki.leaf("pebble", &["localhost", "127.0.0.1"]);
        let config = pki.dir.path().join("pebble.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"pebble": {{"listenAddress": "127.0.0.1:{listen}", "managementListenAddress": "127.0.0.1:{management}",
                "certificate": "{}", "privateKey": "{}", "httpPort": {}, "tlsPort": {tls_alpn_port},
                "ocspResponderURL": "", "externalAccountBindingRequired": false,
                "certificateValidityPeriod": {validity_secs}}}}}"#,
                cert.display(),
                key.display(),
                http_port
            ),
        )
        .unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-management",
                &format!("127.0.0.1:{}", free_port()),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pebble = Command::new("pebble")
            .args([
                "-config",
                config.to_str().unwrap(),
                "-dnsserver",
                &resolver.unwrap_or_else(|| format!("127.0.0.1:{dns}")),
            ])
            // No random pre-validation sleep (slow, and validation itself stays real); nonces
            // rejected only where a test asks for it.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", nonce_reject.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pebble = Self {
            processes: vec![dns_server, pebble],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
        };
        // Pebble opens its ACME and management listeners independently; a test that asks the
        // management side for the root as soon as the ACME side answers races it.
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [listen, management] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "pebble did not open port {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        pebble
    }

    /// Pebble's directory object.
    pub async fn directory_json(&self, pki: &Pki) -> serde_json::Value {
        let address = self.directory.trim_start_matches("https://");
        let (authority, path) = address.split_once('/').unwrap();
        let addr: SocketAddr = authority.parse().unwrap();
        let mut sender = super::h1_with(addr, "127.0.0.1", pki.client(&[b"http/1.1"]))
            .await
            .unwrap();
        // Pebble writes its URLs with the Host it was asked for.
        let request = super::request("GET", authority, &format!("/{path}"))
            .body(Default::default())
            .unwrap();
        let body = super::collect(sender.send_request(request).await.unwrap())
            .await
            .body;
        serde_json::from_slice(&body).unwrap()
    }

    /// Pebble's issuing root, from its management interface.
    pub async fn root(&self, pki: &Pki) -> CertificateDer<'static> {
        let mut sender = super::h1_with(self.management, "127.0.0.1", pki.client(&[b"http/1.1"]))
            .await
            .unwrap();
        let request = super::request("GET", "127.0.0.1", "/roots/0")
            .body(Default::default())
            .unwrap();
        let body = super::collect(sender.send_request(request).await.unwrap())
            .await
            .body;
        CertificateDer::from_pem_slice(&body).unwrap()
    }
}

pub fn trusting(root: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// The leaf a client trusting only `client`'s roots is shown for `name`, once a handshake
/// completes (within `within`).
pub async fn served_certificate(
    addr: SocketAddr,
    name: &str,
    client: Arc<rustls::ClientConfig>,
    within: Duration,
) -> CertificateDer<'static> {
    let deadline = Instant::now() + within;
    loop {
        match super::tls_connect(addr, name, client.clone()).await {
            Ok(tls) => {
                return tls.get_ref().1.peer_certificates().unwrap()[0]
                    .clone()
                    .into_owned();
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "no valid certificate for {name} in time: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
