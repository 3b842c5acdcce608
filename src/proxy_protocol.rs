//! The PROXY protocol (v1 text, v2 binary) from the load balancers in front of us: the client
//! address a trusted balancer vouches for, read before TLS or HTTP sees a byte.
//!
//! A connection from `[listen] proxy_protocol_from` must start with a header and one from
//! anywhere else must not: otherwise any client could choose the address that the deny list, the
//! environment check and `X-Forwarded-For` see. Parsing is the `ppp` crate's.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The longest header accepted: the fixed 16 bytes of v2 and 512 of addresses and TLVs (AWS
/// sends under 100; v1 is at most 107 by definition).
const MAX_HEADER: usize = 16 + 512;

/// The balancer ranges, from `[listen] proxy_protocol_from`.
#[derive(Debug, Clone, Default)]
pub struct Balancers(Vec<IpNet>);

impl Balancers {
    /// Trusts headers from `ranges` only (validated private networks).
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self(ranges)
    }

    /// True when `peer` must, and may, send a header.
    pub fn trust(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.iter().any(|net| net.contains(&peer))
    }

    /// True when no balancer is configured: nothing to read, nothing to screen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a balancer's connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The connection ended or failed before a whole header arrived.
    #[error("connection lost before the PROXY header: {0}")]
    Io(#[from] io::Error),
    /// Not a PROXY header, or a malformed one.
    #[error("no valid PROXY header")]
    Invalid,
    /// Longer than [`MAX_HEADER`].
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    /// A header naming no TCP client (UNIX socket, datagram, or no address under `PROXY`).
    #[error("PROXY header names no TCP client")]
    NotTcp,
}

/// Reads the header a balancer at `peer` sends first; returns the client it names (`peer`
/// itself for the balancer's own connections: v2 `LOCAL`, v1 `UNKNOWN`) and the socket with any
/// bytes read past the header put back in front. The caller bounds the wait.
pub async fn read_header(
    mut socket: TcpStream,
    peer: SocketAddr,
) -> Result<(ClientStream, SocketAddr), HeaderError> {
    let mut buffer = vec![0; MAX_HEADER];
    let mut filled = 0;
    loop {
        let read = socket.read(&mut buffer[filled..]).await?;
        if read == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        filled += read;
        let parsed = HeaderResult::parse(&buffer[..filled]);
        if let HeaderResult::V2(Err(v2::ParseError::Partial(_, length))) = parsed
            && 16 + length > MAX_HEADER
        {
            return Err(HeaderError::TooLong);
        }
        if parsed.is_incomplete() {
            if filled == MAX_HEADER {
                return Err(HeaderError::TooLong);
            }
            continue;
        }
        let (length, client) = match parsed {
            HeaderResult::V1(Ok(header)) => (header.header.len(), v1_client(&header, peer)),
            HeaderResult::V2(Ok(header)) => (header.len(), v2_client(&header, peer)?),
            HeaderResult::V1(Err(v1::BinaryParseError::Parse(v1::ParseError::HeaderTooLong))) => {
                return Err(HeaderError::TooLong);
            }
            HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => {
                return Err(HeaderError::Invalid);
            }
        };
        buffer.truncate(filled);
        buffer.drain(..length);
        let early = (!buffer.is_empty()).then(|| buffer.into_boxed_slice());
        return Ok((ClientStream { socket, early }, client));
    }
}

fn v1_client(header: &v1::Header<'_>, peer: SocketAddr) -> SocketAddr {
    match header.addresses {
        v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
        v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
        v1::Addresses::Unknown => peer,
    }
}

fn v2_client(header: &v2::Header<'_>, peer: SocketAddr) -> Result<SocketAddr, HeaderError> {
    if header.command == v2::Command::Local {
        return Ok(peer);
    }
    if header.protocol != v2::Protocol::Stream {
        return Err(HeaderError::NotTcp);
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => Err(HeaderError::NotTcp),
    }
}

/// True when a connection from outside the balancer ranges starts like a PROXY header. It is
/// closed rather than answered: a client trying to choose its own address is not served. Only
/// the first segment is looked at; a header trickled byte by byte reaches the HTTP parser,
/// which refuses it as a malformed request anyway.
pub async fn starts_with_header(socket: &TcpStream) -> bool {
    let mut start = [0; 12];
    match socket.peek(&mut start).await {
        Ok(read) => {
            let start = &start[..read];
            start.starts_with(b"PROXY ") || start == v2::PROTOCOL_PREFIX
        }
        Err(_) => false,
    }
}

pin_project_lite::pin_project! {
    /// A client's socket, with the bytes a balancer sent right after its header in front.
    #[derive(Debug)]
    pub struct ClientStream {
        #[pin]
        socket: TcpStream,
        early: Option<Box<[u8]>>,
    }
}

impl ClientStream {
    /// A socket that carried no header.
    pub fn direct(socket: TcpStream) -> Self {
        Self {
            socket,
            early: None,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if let Some(early) = this.early.take() {
            let taken = early.len().min(buf.remaining());
            buf.put_slice(&early[..taken]);
            if taken < early.len() {
                *this.early = Some(early[taken..].into());
            }
            return Poll::Ready(Ok(()));
        }
        this.socket.poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().socket.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().socket.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().socket.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().socket.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn parse(sent: &[u8]) -> Result<(SocketAddr, Vec<u8>), HeaderError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, peer) = listener.accept().await?;
        client.write_all(sent).await?;
        client.shutdown().await?;
        let (mut stream, addr) = read_header(server, peer).await?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await?;
        Ok((addr, rest))
    }

    #[tokio::test]
    async fn bytes_after_the_header_reach_the_reader() {
        let (addr, rest) =
            parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 443\r\nGET / HTTP/1.1\r\n\r\n")
                .await
                .expect("valid header");
        assert_eq!(addr, "192.0.2.7:5555".parse().expect("addr"));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_v2_length_beyond_the_limit_is_refused_before_reading_it() {
        let mut sent = v2::PROTOCOL_PREFIX.to_vec();
        sent.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&sent).await, Err(HeaderError::TooLong)));
    }
}
