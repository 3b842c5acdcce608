//! Checks on the request message itself, before it is routed: framing a smuggler could play
//! with, header values HTTP/2 forbids, and the size of the whole header section.
//!
//! hyper parses leniently where the RFCs let a server choose; an edge proxy chooses strictly,
//! because the upstream behind it may read the same bytes differently.

use http::header::TRANSFER_ENCODING;
use http::{HeaderMap, Request, Version};

use crate::error::MessageError;

/// Refuses what no upstream should be asked to interpret. The header section is measured as
/// HTTP/1.1 writes it (`name: value\r\n` per field, plus the request target), on h1 and h2
/// alike, so `max_header_bytes` means the same on both.
pub fn check<B>(request: &Request<B>, max_header_bytes: usize) -> Result<(), MessageError> {
    let headers = request.headers();
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |pq| pq.as_str().len());
    if size > max_header_bytes {
        return Err(MessageError::HeadersTooLarge);
    }
    if headers.contains_key(TRANSFER_ENCODING)
        && (request.version() == Version::HTTP_10 || !single_chunked(headers))
    {
        return Err(MessageError::TransferEncoding);
    }
    if request.version() == Version::HTTP_2
        && headers.values().any(|value| {
            let bytes = value.as_bytes();
            matches!(bytes.first(), Some(b' ' | b'\t'))
                || matches!(bytes.last(), Some(b' ' | b'\t'))
        })
    {
        return Err(MessageError::Whitespace);
    }
    Ok(())
}

/// Exactly one `Transfer-Encoding` field holding exactly `chunked`.
fn single_chunked(headers: &HeaderMap) -> bool {
    let mut fields = headers.get_all(TRANSFER_ENCODING).iter();
    match (fields.next(), fields.next()) {
        (Some(only), None) => only
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/x").version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_a_single_chunked_passes() {
        let ok = request(Version::HTTP_11, &[("transfer-encoding", "chunked")]);
        assert_eq!(check(&ok, 8192), Ok(()));
        for bad in [
            vec![("transfer-encoding", "chunked, chunked")],
            vec![
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            vec![("transfer-encoding", "gzip, chunked")],
            vec![("transfer-encoding", "identity")],
        ] {
            assert_eq!(
                check(&request(Version::HTTP_11, &bad), 8192),
                Err(MessageError::TransferEncoding),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn http_10_never_carries_transfer_encoding() {
        let old = request(Version::HTTP_10, &[("transfer-encoding", "chunked")]);
        assert_eq!(check(&old, 8192), Err(MessageError::TransferEncoding));
    }

    #[test]
    fn h2_whitespace_and_header_size() {
        let padded = request(Version::HTTP_2, &[("x-a", " v")]);
        assert_eq!(check(&padded, 8192), Err(MessageError::Whitespace));
        let big = "v".repeat(100);
        let sized = request(Version::HTTP_11, &[("x-a", &big)]);
        // "x-a: " + 100 + "\r\n" = 107, plus "/x".
        assert_eq!(check(&sized, 109), Ok(()));
        assert_eq!(check(&sized, 108), Err(MessageError::HeadersTooLarge));
    }
}
