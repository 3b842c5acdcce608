//! The two ends of a session before its first statement: the client's startup packet (the
//! gateway answers `N` to its requests for TLS or GSSAPI encryption, as the employee's mutual
//! TLS to the gateway already carries it) and the database's TLS, negotiated as PostgreSQL does
//! (`SSLRequest`, then a handshake that verifies the server against the tunnel's `tls_ca`).
//! Exactly one byte is read after `SSLRequest`: anything a man in the middle put behind it is
//! read by the TLS handshake, which refuses it (CVE-2021-23222).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

use super::wire::{Fields, MAX_STARTUP, WireError, push_cstr};

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// The client's first message that is not a request for encryption.
#[derive(Debug)]
pub enum First {
    /// A `StartupMessage`: passed on as it came; its user and database name the audit lines.
    Startup {
        packet: Vec<u8>,
        user: String,
        database: String,
    },
    /// A `CancelRequest` for a running query, passed on over a connection of its own.
    Cancel(Vec<u8>),
}

/// Reads the client's startup packet, answering its encryption requests with `N`.
pub async fn from_client(
    client: &mut (impl AsyncRead + AsyncWrite + Unpin),
) -> Result<First, WireError> {
    // SSLRequest and GSSENCRequest may each come once before the startup packet.
    for _ in 0..3 {
        let mut len = [0u8; 4];
        client.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if !(8..=MAX_STARTUP).contains(&len) {
            return Err(WireError::Malformed("startup"));
        }
        let mut packet = vec![0; len];
        packet[..4].copy_from_slice(&u32::try_from(len).unwrap_or(0).to_be_bytes());
        client.read_exact(&mut packet[4..]).await?;
        let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST if len == 8 => {
                client.write_all(b"N").await?;
                client.flush().await?;
            }
            CANCEL_REQUEST if len == 16 => return Ok(First::Cancel(packet)),
            version if version >> 16 == 3 => return startup(packet),
            _ => break,
        }
    }
    Err(WireError::Malformed("startup"))
}

fn startup(packet: Vec<u8>) -> Result<First, WireError> {
    let mut fields = Fields::new(&packet[8..]);
    let (mut user, mut database) = (None, None);
    loop {
        let name = fields.cstr().ok_or(WireError::Malformed("startup"))?;
        if name.is_empty() {
            break;
        }
        let value = fields.cstr().ok_or(WireError::Malformed("startup"))?;
        match name {
            "user" => user = Some(value.to_owned()),
            "database" => database = Some(value.to_owned()),
            _ => {}
        }
    }
    // The server requires a user; without a database it takes the user's name.
    let user = user.ok_or(WireError::Malformed("startup"))?;
    let database = database.unwrap_or_else(|| user.clone());
    Ok(First::Startup {
        packet,
        user,
        database,
    })
}

/// The startup packet of a session that may not write: `default_transaction_read_only` on, in
/// its `options`, so that the database refuses any write the gateway's reading of a statement
/// missed (a function that writes, say); the gateway refuses the statements that would turn it
/// off.
pub fn read_only(packet: &[u8]) -> Vec<u8> {
    const FLAG: &str = "-c default_transaction_read_only=on";
    let mut body = packet[4..8].to_vec();
    let mut fields = Fields::new(&packet[8..]);
    let mut had_options = false;
    while let Some(name) = fields.cstr().filter(|n| !n.is_empty()) {
        let value = fields.cstr().unwrap_or_default();
        push_cstr(&mut body, name);
        if name == "options" {
            had_options = true;
            push_cstr(&mut body, &format!("{value} {FLAG}"));
        } else {
            push_cstr(&mut body, value);
        }
    }
    if !had_options {
        push_cstr(&mut body, "options");
        push_cstr(&mut body, FLAG);
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    [len.to_be_bytes().to_vec(), body].concat()
}

/// Asks the database for TLS and completes the handshake, verifying its certificate.
pub async fn secure<U>(
    mut upstream: U,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
) -> Result<TlsStream<U>, WireError>
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = [0u8; 8];
    request[..4].copy_from_slice(&8u32.to_be_bytes());
    request[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    upstream.write_all(&request).await?;
    upstream.flush().await?;
    let mut answer = [0u8; 1];
    upstream.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return Err(WireError::NoTls);
    }
    Ok(tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, upstream)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, rest: &[u8]) -> Vec<u8> {
        let len = u32::try_from(8 + rest.len()).unwrap();
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(rest);
        out
    }

    #[tokio::test]
    async fn encryption_requests_get_n_and_the_startup_names_user_and_database() {
        let (mut near, mut far) = tokio::io::duplex(4096);
        let mut sent = packet(SSL_REQUEST, &[]);
        sent.extend(packet(GSSENC_REQUEST, &[]));
        sent.extend(packet(196_608, b"user\0app\0application_name\0psql\0\0"));
        far.write_all(&sent).await.unwrap();
        let First::Startup { user, database, .. } = from_client(&mut near).await.unwrap() else {
            panic!("not a startup");
        };
        assert_eq!((user.as_str(), database.as_str()), ("app", "app"));
        let mut answers = [0u8; 2];
        far.read_exact(&mut answers).await.unwrap();
        assert_eq!(&answers, b"NN");
    }

    #[tokio::test]
    async fn a_read_only_startup_asks_the_database_for_read_only_transactions() {
        for (sent, options) in [
            (&b"user\0app\0\0"[..], "-c default_transaction_read_only=on"),
            (
                b"user\0app\0options\0-c search_path=x\0\0",
                "-c search_path=x -c default_transaction_read_only=on",
            ),
        ] {
            let changed = read_only(&packet(196_608, sent));
            let (mut near, mut far) = tokio::io::duplex(4096);
            far.write_all(&changed).await.unwrap();
            let First::Startup { packet, user, .. } = from_client(&mut near).await.unwrap() else {
                panic!("not a startup");
            };
            assert_eq!(user, "app");
            let text = String::from_utf8_lossy(&packet);
            assert!(text.contains(&format!("options\0{options}\0")), "{text:?}");
            assert_eq!(text.matches("options").count(), 1);
        }
    }

    #[tokio::test]
    async fn oversized_or_unknown_startups_are_refused() {
        for sent in [
            (20_000u32).to_be_bytes().to_vec(),
            packet(1234, &[]),
            packet(196_608, b"database\0d\0\0"),
            packet(196_608, b"user\0unterminated"),
        ] {
            let (mut near, mut far) = tokio::io::duplex(4096);
            far.write_all(&sent).await.unwrap();
            drop(far);
            assert!(from_client(&mut near).await.is_err(), "{sent:?}");
        }
    }
}
