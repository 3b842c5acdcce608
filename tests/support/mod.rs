//! Shared test rig: a test CA (rcgen), real upstream servers, the real proxy on ephemeral
//! loopback ports, and real clients (hyper h1/h2 over rustls, raw TLS, raw TCP).
#![allow(dead_code)]

pub mod employees;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::{Config, Running};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub use upstream::Upstream;

/// True when an external tool is installed. Outside CI a missing tool skips its test with a
/// message; in CI (CI=true), where `.ci/run` installs every tool, it fails the test.
pub fn require_tool(name: &str) -> bool {
    let found = std::process::Command::new("which")
        .arg(name)
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{name} is missing in CI");
        eprintln!("SKIPPED: {name} is not installed");
    }
    found
}

/// Runs the `portcullis` binary to completion.
pub fn portcullis(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the `portcullis` binary, asserts that it succeeded, and returns its stdout.
pub fn portcullis_ok(args: &[&str]) -> String {
    let out = portcullis(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "portcullis {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A child process killed when dropped, so that a failed assertion leaves nothing running.
pub struct Spawned(pub std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Upper bound for any single network wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A test CA and one leaf certificate written to a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: CertificateDer<'static>,
    /// The CA certificate as a PEM file, for tools such as curl.
    pub ca_pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A CA and a leaf for `names` (DNS names, wildcards and IPs).
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: OpenSSL takes a leaf whose issuer equals its subject as self-signed.
        ca_params.distinguished_name = distinguished_name("Portcullis test CA");
        let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, issuer.pem()).unwrap();
        let mut pki = Self {
            ca: issuer.der().clone(),
            ca_pem,
            dir,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            issuer,
        };
        (pki.cert, pki.key) = pki.leaf("leaf", names);
        pki
    }

    /// Another leaf from the same CA, written as `<stem>.crt` / `<stem>.key`.
    pub fn leaf(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key_pair = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = distinguished_name(stem);
        let leaf = params.signed_by(&key_pair, &self.issuer).unwrap();
        let cert = self.dir.path().join(format!("{stem}.crt"));
        let key = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key, key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    /// TOML for an extra `[[tls.certificates]]` entry covering `names`.
    pub fn extra_certificate(&self, stem: &str, names: &[&str]) -> String {
        let (cert, key) = self.leaf(stem, names);
        format!(
            "[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    }

    /// A rustls client trusting only this CA, offering `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn distinguished_name(common_name: &str) -> rcgen::DistinguishedName {
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, common_name);
    name
}

/// The names the default test certificate covers.
pub const CERT_NAMES: &[&str] = &[
    "localhost",
    "app.test",
    "*.wild.test",
    "127.0.0.1",
    "unrouted.test",
];

/// A proxy with its certificate and one echo upstream.
pub struct Setup {
    pub pki: Pki,
    pub app: Upstream,
}

impl Setup {
    pub async fn new() -> Self {
        Self {
            pki: Pki::new(CERT_NAMES),
            app: Upstream::start().await,
        }
    }

    /// The base config (routes for localhost, app.test, *.wild.test to `app`) plus `extra`
    /// TOML appended, e.g. a `[limits]` table.
    pub fn toml(&self, extra: &str) -> String {
        format!(
            r#"
environment = "test"
[listen]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
[[tls.certificates]]
cert = "{cert}"
key = "{key}"
[networks]
test = ["127.0.0.0/8", "::1/128"]
[upstreams.app]
environment = "test"
addrs = ["{app}"]
[[routes]]
host = "localhost"
upstream = "app"
[[routes]]
host = "app.test"
upstream = "app"
[[routes]]
host = "*.wild.test"
upstream = "app"
[[routes]]
host = "127.0.0.1"
upstream = "app"
[log]
dir = "{logs}"
{extra}
"#,
            logs = self.log_dir().display(),
            cert = self.pki.cert.display(),
            key = self.pki.key.display(),
            app = self.app.addr,
        )
    }

    /// Where this setup's access logs go.
    pub fn log_dir(&self) -> PathBuf {
        self.pki.dir.path().join("logs")
    }

    /// Every line of every access-log file written so far.
    pub fn access_lines(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.log_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("access-"))
            .flat_map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The text of every audit file written so far (complete after `shutdown`, which flushes
    /// the audit writer).
    pub fn audit_text(&self) -> String {
        std::fs::read_dir(self.log_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("audit-"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every audit record written so far, parsed.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        self.audit_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Starts the real proxy on ephemeral ports.
    pub async fn start(&self, extra: &str) -> Running {
        start_toml(&self.toml(extra)).await
    }
}

/// Validates a TOML config and starts the proxy on it.
pub async fn start_toml(toml_text: &str) -> Running {
    let config = config_from(toml_text).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    start_config(config).await
}

pub fn config_from(toml_text: &str) -> Result<Config, portcullis::config::ConfigError> {
    Config::from_raw(toml::from_str(toml_text)?)
}

/// The problems of a config that validation must refuse.
pub fn problems(toml_text: &str) -> Vec<portcullis::config::Problem> {
    match config_from(toml_text) {
        Err(portcullis::config::ConfigError::Invalid(problems)) => problems,
        Err(other) => panic!("expected validation problems, got: {other}"),
        Ok(_) => panic!("config was accepted:\n{toml_text}"),
    }
}

/// Every problem of a refused config as `key: reason` lines.
pub fn problem_lines(toml_text: &str) -> Vec<String> {
    problems(toml_text)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Asserts that validation refuses `toml_text` with a problem at `key`.
pub fn assert_refused(toml_text: &str, key: &str) {
    let problems = problems(toml_text);
    assert!(
        problems.iter().any(|p| p.key == key),
        "no problem at {key}: {problems:#?}"
    );
}

pub async fn start_config(config: Config) -> Running {
    portcullis::start(config).await.unwrap()
}

/// TLS to `addr` presenting `server_name` as SNI (none for an IP literal).
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    client: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_connect_from(None, addr, server_name, client).await
}

/// TCP from a chosen local address (a loopback alias stands for a distinct client).
pub async fn tcp_from(
    local: Option<std::net::IpAddr>,
    addr: SocketAddr,
) -> std::io::Result<TcpStream> {
    match local {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await
        }
    }
}

/// [`tls_connect`] from a chosen local address.
pub async fn tls_connect_from(
    local: Option<std::net::IpAddr>,
    addr: SocketAddr,
    server_name: &str,
    client: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(local, addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(client).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::ErrorKind::TimedOut)?
}

pub type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
pub type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 client over TLS.
/// An HTTP/1.1 client over TLS with the caller's rustls config (client certificates, other
/// roots); `None` when the handshake fails.
pub async fn h1_with(addr: SocketAddr, sni: &str, client: Arc<rustls::ClientConfig>) -> Option<H1> {
    let tls = tls_connect(addr, sni, client).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(conn.with_upgrades());
    Some(sender)
}

pub async fn h1(addr: SocketAddr, sni: &str, pki: &Pki) -> H1 {
    h1_from(None, addr, sni, pki).await
}

pub async fn h1_from(
    local: Option<std::net::IpAddr>,
    addr: SocketAddr,
    sni: &str,
    pki: &Pki,
) -> H1 {
    let tls = tls_connect_from(local, addr, sni, pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

/// An HTTP/2 client over TLS.
pub async fn h2(addr: SocketAddr, sni: &str, pki: &Pki) -> H2 {
    h2_from(None, addr, sni, pki).await
}

pub async fn h2_from(
    local: Option<std::net::IpAddr>,
    addr: SocketAddr,
    sni: &str,
    pki: &Pki,
) -> H2 {
    let tls = tls_connect_from(local, addr, sni, pki.client(&[b"h2"]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A finished response.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Either protocol, so a test body can run over both.
pub enum Client {
    H1(H1),
    H2(H2),
}

impl Client {
    /// Connects with h1 or h2.
    pub async fn connect(h2_: bool, addr: SocketAddr, sni: &str, pki: &Pki) -> Self {
        Self::connect_from(None, h2_, addr, sni, pki).await
    }

    /// Connects from a chosen local address.
    pub async fn connect_from(
        local: Option<std::net::IpAddr>,
        h2_: bool,
        addr: SocketAddr,
        sni: &str,
        pki: &Pki,
    ) -> Self {
        if h2_ {
            Self::H2(h2_from(local, addr, sni, pki).await)
        } else {
            Self::H1(h1_from(local, addr, sni, pki).await)
        }
    }

    /// Builds a request for `host` (Host on h1, :authority on h2) and sends it.
    pub async fn get(&mut self, host: &str, path: &str) -> Answer {
        self.send(request("GET", host, path).body(Full::default()).unwrap())
            .await
    }

    pub async fn send(&mut self, mut req: Request<Full<Bytes>>) -> Answer {
        if let Self::H2(_) = self {
            let host = req.headers_mut().remove("host").unwrap();
            let pq = req.uri().path_and_query().unwrap().clone();
            *req.uri_mut() = format!("https://{}{pq}", host.to_str().unwrap())
                .parse()
                .unwrap();
            *req.version_mut() = http::Version::HTTP_2;
        }
        let response = tokio::time::timeout(WAIT, async {
            match self {
                Self::H1(s) => match s.ready().await {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                },
                Self::H2(s) => match s.ready().await {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                },
            }
        })
        .await
        .expect("response in time")
        .expect("response");
        collect(response).await
    }
}

/// Starts an h1-style request builder with a Host header.
pub fn request(method: &str, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
}

pub async fn collect(response: http::Response<hyper::body::Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Writes `bytes` on a stream and reads until the peer closes or `WAIT` passes.
pub async fn exchange<S>(stream: &mut S, bytes: &[u8]) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = stream.write_all(bytes).await;
    read_to_close(stream).await
}

/// True when the peer closes `stream` (EOF or reset) within `WAIT`, reading and discarding
/// whatever it sends first; false when it is still open at the deadline.
pub async fn closed_by_peer<S>(stream: &mut S) -> bool
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut sink = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// Everything read until the peer closes, or until `WAIT` passes (which this does not report:
/// use [`closed_by_peer`] to assert a close).
pub async fn read_to_close<S>(stream: &mut S) -> String
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A TLS stream (ALPN http/1.1) on which `bytes` have been written, for raw exchanges that go
/// on afterwards.
pub async fn h1_tls_sending(
    addr: SocketAddr,
    sni: &str,
    pki: &Pki,
    bytes: &[u8],
) -> TlsStream<TcpStream> {
    let mut tls = tls_connect(addr, sni, pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    tls.write_all(bytes).await.unwrap();
    tls
}

/// Raw bytes over TLS (ALPN http/1.1), returning everything read until close.
pub async fn raw_tls(addr: SocketAddr, sni: &str, pki: &Pki, bytes: &[u8]) -> String {
    let mut tls = tls_connect(addr, sni, pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    exchange(&mut tls, bytes).await
}

/// Raw bytes over plain TCP.
pub async fn raw_tcp(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    exchange(&mut tcp, bytes).await
}

/// The status code of the first response in a raw exchange.
pub fn status_of(raw: &str) -> Option<u16> {
    let rest = raw
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| raw.strip_prefix("HTTP/1.0 "))?;
    rest.get(..3)?.parse().ok()
}

/// Reads one response (head plus a `content-length` body), leaving the connection open.
pub async fn read_response<S>(stream: &mut S) -> String
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let done = |out: &[u8]| {
        let text = String::from_utf8_lossy(out);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        body.len() >= length
    };
    let _ = tokio::time::timeout(WAIT, async {
        while !done(&out) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A GET on an h1 sender with extra headers; `None` when the connection is gone.
pub async fn get(
    sender: &mut H1,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Answer> {
    let mut builder = request("GET", host, path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    sender.ready().await.ok()?;
    let response = sender
        .send_request(builder.body(Full::default()).unwrap())
        .await
        .ok()?;
    Some(collect(response).await)
}

/// The status of one GET over a new h1 connection made with `client`; `None` when the handshake
/// or the request fails.
pub async fn status_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    client: Arc<rustls::ClientConfig>,
) -> Option<u16> {
    let mut sender = h1_with(addr, host, client).await?;
    get(&mut sender, host, path, &[])
        .await
        .map(|a| a.status.as_u16())
}
