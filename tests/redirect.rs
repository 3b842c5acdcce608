//! The plain-HTTP listener, attacked from raw sockets. It proves that:
//! - any method on a routed host gets a 301 to https with path and query byte-for-byte, the
//!   configured public port, a tiny body and no HSTS;
//! - port 443 is left out of the Location;
//! - a missing, duplicate or malformed Host gets 400; an unrouted host 404 and no Location;
//! - an absolute-form target is redirected by its own authority;
//! - h2c (prior knowledge or Upgrade) never switches protocols;
//! - CR/LF in a target never becomes a header.

mod support;

use support::{Setup, raw_tcp, read_response, start_toml, status_of};
use tokio::io::AsyncWriteExt;

fn location(raw: &str) -> Option<&str> {
    raw.lines()
        .find_map(|l| l.strip_prefix("location: "))
        .map(str::trim_end)
}

#[tokio::test]
async fn any_method_is_redirected_with_target_intact() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let http = proxy.http_addr.unwrap();
    let port = proxy.https_addr.port();
    for method in ["GET", "POST", "DELETE", "OPTIONS", "PATCH", "BREW"] {
        let raw = raw_tcp(
            http,
            format!(
                "{method} /a/b%20c/../d?x=1&y=%2F&z HTTP/1.1\r\nHost: LocalHost:8080\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(status_of(&raw), Some(301), "{method}: {raw}");
        assert_eq!(
            location(&raw),
            Some(format!("https://localhost:{port}/a/b%20c/../d?x=1&y=%2F&z").as_str())
        );
        assert!(
            !raw.to_ascii_lowercase()
                .contains("strict-transport-security")
        );
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(body.len() < 64, "body should be tiny: {body:?}");
    }
    assert_eq!(setup.app.hits(), 0, "the redirect listener never proxies");
}

#[tokio::test]
async fn public_port_443_is_omitted_and_wildcards_are_served() {
    let setup = Setup::new().await;
    let toml = setup.config().set("listen.public_https_port", 443).text();
    let proxy = start_toml(&toml).await;
    let raw = raw_tcp(
        proxy.http_addr.unwrap(),
        b"GET /p?q HTTP/1.1\r\nHost: a.wild.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(location(&raw), Some("https://a.wild.test/p?q"));
}

#[tokio::test]
async fn bad_hosts_are_refused_and_unknown_hosts_never_redirected() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let http = proxy.http_addr.unwrap();
    let cases: &[(&str, u16)] = &[
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        ("GET / HTTP/1.0\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n", 400),
        (
            "GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: local host\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: user@localhost\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: localhost:x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            404,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.b.wild.test\r\nConnection: close\r\n\r\n",
            404,
        ),
        (
            "GET http://evil.example/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            404,
        ),
        (
            "OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\nConnection: close\r\n\r\n",
            400,
        ),
    ];
    for (request, want) in cases {
        let raw = raw_tcp(http, request.as_bytes()).await;
        assert_eq!(status_of(&raw), Some(*want), "{request:?} -> {raw}");
        assert_eq!(location(&raw), None, "{request:?}");
    }
}

#[tokio::test]
async fn absolute_form_is_redirected_by_its_own_authority() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let raw = raw_tcp(
        proxy.http_addr.unwrap(),
        b"GET http://app.test/x?y HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let port = proxy.https_addr.port();
    assert_eq!(
        location(&raw),
        Some(format!("https://app.test:{port}/x?y").as_str())
    );
}

#[tokio::test]
async fn h2c_never_switches_protocols() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let http = proxy.http_addr.unwrap();
    let preface = raw_tcp(
        http,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
    )
    .await;
    assert!(
        preface.is_empty() || status_of(&preface).is_some_and(|s| s >= 400),
        "prior knowledge must not be answered as h2: {preface:?}"
    );
    let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        .await
        .unwrap();
    let upgrade = read_response(&mut tcp).await;
    assert_eq!(status_of(&upgrade), Some(301), "{upgrade}");
}

#[tokio::test]
async fn crlf_in_the_target_never_becomes_a_header() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let http = proxy.http_addr.unwrap();
    let encoded = raw_tcp(
        http,
        b"GET /a%0d%0aSet-Cookie:%20x=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&encoded), Some(301));
    assert!(
        location(&encoded)
            .unwrap()
            .ends_with("/a%0d%0aSet-Cookie:%20x=1")
    );
    let raw_cr = raw_tcp(
        http,
        b"GET /a\rSet-Cookie: x=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    for raw in [&encoded, &raw_cr] {
        assert!(
            !raw.lines()
                .any(|l| l.to_ascii_lowercase().starts_with("set-cookie")),
            "{raw}"
        );
    }
}
