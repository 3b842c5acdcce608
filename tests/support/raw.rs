//! Raw exchanges, as an attacker makes them: bytes over TCP or TLS, reads until close, and
//! whether the peer closed.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Answer, H1, Pki, WAIT, collect, h1_with, request, tls_connect};

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

/// `GET /metrics` of a plain-HTTP admin listener: the whole answer, head included.
pub async fn metrics(admin: SocketAddr) -> String {
    raw_tcp(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await
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
