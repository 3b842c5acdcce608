//! Real clients: TLS from chosen addresses, hyper h1 and h2 senders, and either behind one
//! `Client`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Pki, WAIT};

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

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        collect(self.start(req).await).await
    }

    /// Sends `req` and returns once the response head has arrived, its body unread.
    pub async fn start(
        &mut self,
        mut req: Request<Full<Bytes>>,
    ) -> http::Response<hyper::body::Incoming> {
        if let Self::H2(_) = self {
            let host = req.headers_mut().remove("host").unwrap();
            let pq = req.uri().path_and_query().unwrap().clone();
            *req.uri_mut() = format!("https://{}{pq}", host.to_str().unwrap())
                .parse()
                .unwrap();
            *req.version_mut() = http::Version::HTTP_2;
        }
        tokio::time::timeout(WAIT, async {
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
        .expect("response")
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
