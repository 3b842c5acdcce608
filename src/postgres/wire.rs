//! The PostgreSQL v3 wire protocol's framing (PostgreSQL docs, "Frontend/Backend Protocol",
//! "Message Formats"): a startup packet is a length and a code; every later message is a type
//! byte and a length that counts itself. A message the gateway must read (a `Query`, a `Parse`,
//! a `CommandComplete`) is read whole up to a cap; any other is passed on in pieces, so a large
//! bind parameter or `COPY` row costs no more memory than a small one.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// PostgreSQL's own cap on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP: usize = 10_000;
/// A message read whole: a `Query` or `Parse` this long is already a script, not a statement.
pub const MAX_READ_WHOLE: usize = 16 << 20;
/// Passed on in pieces of this size.
const PIECE: usize = 16 << 10;

/// Why a tunnel's protocol stream was closed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("message type {0:?} of {1} bytes is over the limit")]
    TooLong(char, usize),
    #[error("unexpected message type {0:?}")]
    Unexpected(char),
    #[error("the database does not offer TLS")]
    NoTls,
}

/// A message's type and the length of its body.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub tag: u8,
    pub len: usize,
}

impl Header {
    /// The five bytes that start it again.
    pub fn bytes(self) -> [u8; 5] {
        let mut out = [0; 5];
        out[0] = self.tag;
        // The body was at most MAX_READ_WHOLE or came from a u32 length.
        out[1..].copy_from_slice(
            &u32::try_from(self.len + 4)
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out
    }
}

/// The next message's header; `None` when the stream ends between messages.
pub async fn read_header(from: &mut (impl AsyncRead + Unpin)) -> Result<Option<Header>, WireError> {
    let mut head = [0u8; 5];
    match from.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    from.read_exact(&mut head[1..]).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let len = len.checked_sub(4).ok_or(WireError::Malformed("length"))?;
    Ok(Some(Header { tag: head[0], len }))
}

/// The body of `header`, which may be at most `cap` bytes.
pub async fn read_body(
    from: &mut (impl AsyncRead + Unpin),
    header: Header,
    cap: usize,
) -> Result<Vec<u8>, WireError> {
    if header.len > cap {
        return Err(WireError::TooLong(char::from(header.tag), header.len));
    }
    let mut body = vec![0; header.len];
    from.read_exact(&mut body).await?;
    Ok(body)
}

/// Passes `len` bytes of a body on, in pieces.
pub async fn pass_body(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    mut len: usize,
) -> Result<(), WireError> {
    let mut piece = vec![0; len.min(PIECE)];
    while len > 0 {
        let n = len.min(piece.len());
        from.read_exact(&mut piece[..n]).await?;
        to.write_all(&piece[..n]).await?;
        len -= n;
    }
    Ok(())
}

/// A whole message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(
        &Header {
            tag,
            len: body.len(),
        }
        .bytes(),
    );
    out.extend_from_slice(body);
    out
}

/// Reads NUL-terminated strings from a body.
pub struct Fields<'a> {
    body: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self { body }
    }

    /// The next string, without its NUL.
    pub fn cstr(&mut self) -> Option<&'a str> {
        let end = self.body.iter().position(|&b| b == 0)?;
        let text = std::str::from_utf8(&self.body[..end]).ok()?;
        self.body = &self.body[end + 1..];
        Some(text)
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.body
    }
}

/// A NUL-terminated string for a message body.
pub fn push_cstr(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

/// An `ErrorResponse` of `severity` with `code` (SQLSTATE) and `text`.
pub fn error_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.push(field);
        push_cstr(&mut body, value);
    }
    body.push(0);
    message(b'E', &body)
}

/// The SQLSTATE of an `ErrorResponse` body: the only field of it the audit trail keeps (the
/// message and detail may quote values: `Key (email)=(...) already exists`).
pub fn sqlstate(body: &[u8]) -> Option<String> {
    let mut rest = body;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let mut fields = Fields::new(after);
        let value = fields.cstr()?;
        if field == b'C' {
            let code = value.chars().all(|c| c.is_ascii_alphanumeric()) && value.len() == 5;
            return code.then(|| value.to_owned());
        }
        rest = fields.rest();
    }
    None
}

/// A `Query` message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    push_cstr(&mut body, sql);
    message(b'Q', &body)
}

/// A `Parse` message of an unnamed-parameter statement.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    push_cstr(&mut body, name);
    push_cstr(&mut body, sql);
    body.extend_from_slice(&0u16.to_be_bytes());
    message(b'P', &body)
}

/// An authentication request, with `SCRAM-SHA-256-PLUS` taken out of an `AuthenticationSASL`
/// list: the client's channel would be bound to the gateway's TLS, not the database's.
pub fn without_channel_binding(body: &[u8]) -> Vec<u8> {
    const SASL: [u8; 4] = 10u32.to_be_bytes();
    if body.get(..4) != Some(&SASL[..]) {
        return message(b'R', body);
    }
    let mut kept = SASL.to_vec();
    let mut fields = Fields::new(&body[4..]);
    while let Some(mechanism) = fields.cstr().filter(|m| !m.is_empty()) {
        if !mechanism.ends_with("-PLUS") {
            push_cstr(&mut kept, mechanism);
        }
    }
    kept.push(0);
    message(b'R', &kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_response_gives_its_code_and_nothing_else() {
        let error = error_response("ERROR", "23505", "Key (email)=(canary) already exists");
        assert_eq!(sqlstate(&error[5..]).as_deref(), Some("23505"));
        assert_eq!(sqlstate(b"Mno code\0\0"), None);
        assert_eq!(sqlstate(b"C2350"), None);
    }

    #[tokio::test]
    async fn lengths_under_four_and_over_the_cap_are_refused() {
        let mut short: &[u8] = &[b'Q', 0, 0, 0, 3];
        assert!(matches!(
            read_header(&mut short).await,
            Err(WireError::Malformed(_))
        ));
        let mut long: &[u8] = &[b'Q', 0x7f, 0xff, 0xff, 0xff];
        let header = read_header(&mut long).await.unwrap().unwrap();
        assert!(matches!(
            read_body(&mut long, header, MAX_READ_WHOLE).await,
            Err(WireError::TooLong('Q', _))
        ));
        let mut none: &[u8] = &[];
        assert!(read_header(&mut none).await.unwrap().is_none());
    }

    #[test]
    fn channel_binding_is_taken_out_of_the_mechanisms() {
        let mut offered = 10u32.to_be_bytes().to_vec();
        for m in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", ""] {
            push_cstr(&mut offered, m);
        }
        let kept = without_channel_binding(&offered);
        assert_eq!(&kept[5..9], &10u32.to_be_bytes());
        assert_eq!(&kept[9..], b"SCRAM-SHA-256\0\0");
        let ok = 0u32.to_be_bytes();
        assert_eq!(&without_channel_binding(&ok)[5..], &ok);
    }
}
