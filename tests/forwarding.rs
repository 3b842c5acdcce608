//! What crosses the proxy, over HTTP/1.1 and HTTP/2. It proves that:
//! - the upstream sees the original Host, our X-Forwarded-For/Proto/Host, and none of the
//!   forwarding headers a client tried to spoof;
//! - hop-by-hop headers, and every header named in Connection, are removed both ways;
//! - bodies stream both ways (a large body round-trips byte for byte);
//! - WebSocket upgrades are tunnelled only after the upstream answers 101; `Upgrade: h2c` is
//!   never forwarded;
//! - a refused upstream is 502, a slow one 504, and neither body names an internal address.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use support::upstream::seen;
use support::{Client, Setup, read_response, request, status_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn upstream_sees_trusted_forwarding_headers_only() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let port = proxy.https_addr.port();
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        let req = request("GET", &format!("localhost:{port}"), "/echo")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-proto", "http")
            .header("forwarded", "for=6.6.6.6;proto=http")
            .header("x-real-ip", "6.6.6.6")
            .body(Full::default())
            .unwrap();
        let echo = client.send(req).await.text();
        assert_eq!(
            seen(&echo, "host"),
            [format!("localhost:{port}")],
            "h2={h2}\n{echo}"
        );
        assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"], "h2={h2}");
        assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"]);
        assert_eq!(
            seen(&echo, "x-forwarded-host"),
            [format!("localhost:{port}")]
        );
        assert!(seen(&echo, "forwarded").is_empty());
        assert!(seen(&echo, "x-real-ip").is_empty());
        assert!(!echo.contains("6.6.6.6") && !echo.contains("evil.example"));
    }
}

/// What an app behind an auth proxy reads as the signed-in user (Grafana, oauth2-proxy,
/// Django, Authelia, Kubernetes, Pomerium, IAP ...): a client may set none of it, not even by
/// naming it in `Connection` or spelling it with underscores.
#[tokio::test]
async fn identity_headers_from_clients_never_reach_the_upstream() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let claims = [
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "X-Forwarded-Preferred-Username",
        "Remote-User",
        "Remote-Groups",
        "X-Remote-User",
        "X-Remote-Extra-Scopes",
        "X-Auth-Request-User",
        "X-Auth-Request-Email",
        "X-WEBAUTH-USER",
        "X-Authenticated-User",
        "X-User",
        "X-Email",
        "X-Pomerium-Claim-Email",
        "X-Goog-Authenticated-User-Email",
        "Cf-Access-Authenticated-User-Email",
        "X-Amzn-Oidc-Identity",
        "X-Ms-Client-Principal-Name",
        "X-Consumer-Username",
        "Remote_User",
    ];
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        let mut req = request("GET", "localhost", "/echo");
        if !h2 {
            req = req.header("connection", "x-forwarded-user, remote-user, x-user");
        }
        for name in claims {
            req = req.header(name, "alice-from-bob");
        }
        let echo = client.send(req.body(Full::default()).unwrap()).await.text();
        assert!(echo.starts_with("GET /echo"), "h2={h2}\n{echo}");
        assert!(!echo.contains("alice-from-bob"), "h2={h2}\n{echo}");
        assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"], "h2={h2}");
    }
}

/// An app may set a cookie with UTF-8 in its value; the proxy's own cookies in the same
/// header must still be stripped, on h1 and on h2, where h2 joins every cookie into one field.
#[tokio::test]
async fn own_cookies_are_stripped_beside_a_non_ascii_cookie() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        // On h1 the non-ASCII header itself carries an own cookie; on h2 every field is joined.
        let mixed = "name=J\u{fc}rgen; __Host-portcullis-mfa-0=session-canary";
        let mixed = http::HeaderValue::from_bytes(mixed.as_bytes()).unwrap();
        let req = request("GET", "localhost", "/echo")
            .header("cookie", mixed)
            .header("cookie", "__HOST-PORTCULLIS-mfa-1=canary-two")
            .header("cookie", "theme=dark")
            .body(Full::default())
            .unwrap();
        let echo = client.send(req).await.text();
        assert!(echo.starts_with("GET /echo"), "h2={h2}\n{echo}");
        assert!(!echo.contains("canary"), "h2={h2}\n{echo}");
        assert!(
            echo.contains("theme=dark") && echo.contains("rgen"),
            "h2={h2}\n{echo}"
        );
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let mut client = Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
    let req = request("GET", "localhost", "/echo")
        .header("connection", "x-secret, keep-alive")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-kept", "yes")
        .body(Full::default())
        .unwrap();
    let echo = client.send(req).await.text();
    for gone in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            seen(&echo, gone).is_empty(),
            "{gone} reached the upstream:\n{echo}"
        );
    }
    assert_eq!(seen(&echo, "x-kept"), ["yes"]);
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        let answer = client.get("localhost", "/hop").await;
        assert_eq!(answer.header("x-public"), Some("ok"));
        // The upstream's own id is replaced by the one our logs carry.
        let id = answer.header("x-request-id").unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "h2={h2}: {id}");
        assert_eq!(answer.headers.get_all("x-request-id").iter().count(), 1);
        for gone in ["x-private", "keep-alive", "connection"] {
            assert!(
                answer.header(gone).is_none(),
                "h2={h2}: {gone} reached the client"
            );
        }
    }
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let body: Bytes = (0..3 * 1024 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        let answer = client
            .send(
                request("POST", "localhost", "/echo")
                    .body(Full::new(body.clone()))
                    .unwrap(),
            )
            .await;
        assert_eq!(answer.status, 200);
        assert!(answer.body == body, "h2={h2}: body changed in transit");
    }
}

#[tokio::test]
async fn chunked_request_bodies_are_forwarded() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let raw = support::raw_tls(
        proxy.https_addr,
        "localhost",
        &setup.pki,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&raw), Some(200), "{raw}");
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains("hello") && body.contains(" world"), "{raw}");
}

#[tokio::test]
async fn websocket_is_tunnelled_after_the_upstream_switches() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let mut tls = support::h1_tls_sending(proxy.https_addr, "localhost", &setup.pki, b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await;
    let head = read_response(&mut tls).await;
    assert_eq!(status_of(&head), Some(101), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"));
    tls.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = vec![0u8; 23];
    tokio::time::timeout(support::WAIT, tls.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping through the tunnel");
}

#[tokio::test]
async fn refused_upgrade_and_h2c_stay_plain_http() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let mut tls = support::h1_tls_sending(proxy.https_addr, "localhost", &setup.pki, b"GET /no-upgrade HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await;
    let first = read_response(&mut tls).await;
    assert_eq!(status_of(&first), Some(200), "{first}");
    tls.write_all(b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut tls).await;
    assert_eq!(status_of(&second), Some(200), "{second}");
    let echo = second.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(
        seen(echo, "upgrade").is_empty(),
        "h2c reached the upstream:\n{echo}"
    );
    assert!(seen(echo, "http2-settings").is_empty());
}

#[tokio::test]
async fn upstream_failures_are_502_and_504_without_addresses() {
    let setup = Setup::new().await;
    let extra = "[upstreams.down]\nenvironment = \"test\"\naddrs = [\"127.0.0.1:1\"]\n\
        [[routes]]\nhost = \"app.test\"\npath_prefix = \"/down\"\nupstream = \"down\"\n\
        [limits]\nupstream_response_timeout = \"300ms\"\n";
    let proxy = setup.start(extra).await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "app.test", &setup.pki).await;
        for (path, status) in [("/down", 502), ("/slow/3000", 504)] {
            let answer = client.get("app.test", path).await;
            assert_eq!(answer.status, status, "h2={h2} {path}");
            let text = answer.text();
            assert!(
                !text.contains("127.0.0.1") && !text.contains(&setup.app.addr.port().to_string())
            );
        }
    }
}
