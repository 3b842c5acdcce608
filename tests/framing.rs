//! Request smuggling, tried from raw TLS sockets. It proves that:
//! - `Content-Length` with `Transfer-Encoding`, differing or malformed lengths, a non-chunked
//!   transfer coding and broken chunking are refused or re-framed, never forwarded as sent;
//! - a body left unread behind an early response is never parsed as the next request.

mod support;

use support::{Setup, raw_tls, status_of};

#[tokio::test]
async fn conflicting_or_malformed_framing_never_reaches_upstream_as_sent() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let refused: &[&[u8]] = &[
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4x\r\n\r\nabcd",
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
        b"POST /echo HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for request in refused {
        let raw = raw_tls(proxy.https_addr, "localhost", &setup.pki, request).await;
        assert_eq!(
            status_of(&raw),
            Some(400),
            "{}\n-> {raw}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(setup.app.hits(), 0, "refused framing reached the upstream");
}

#[tokio::test]
async fn content_length_with_chunked_is_reframed_and_smuggled_request_dropped() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let raw = raw_tls(
        proxy.https_addr,
        "localhost",
        &setup.pki,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    let status = status_of(&raw);
    assert!(matches!(status, Some(200 | 400)), "{raw}");
    assert!(
        !setup.app.targets().iter().any(|t| t.contains("smuggled")),
        "smuggled request reached the upstream: {:?}",
        setup.app.targets()
    );
}

#[tokio::test]
async fn broken_chunking_is_a_client_error() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let raw = raw_tls(
        proxy.https_addr,
        "localhost",
        &setup.pki,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_of(&raw),
        Some(400),
        "broken chunking must be refused: {raw}"
    );
    assert!(
        !raw.contains("hello"),
        "the malformed body was echoed back: {raw}"
    );
}

#[tokio::test]
async fn unread_body_after_early_response_is_not_a_request() {
    let setup = Setup::new().await;
    let proxy = setup.start("[limits]\nmax_body_bytes = 1024\n").await;
    let raw = raw_tls(
        proxy.https_addr,
        "localhost",
        &setup.pki,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&raw), Some(413), "{raw}");
    assert_eq!(
        raw.matches("HTTP/1.1 ").count(),
        1,
        "a second response came back: {raw}"
    );
    assert_eq!(setup.app.hits(), 0);
}
