//! What crosses the proxy, over HTTP/1.1 and HTTP/2. It proves that:
//! - the upstream sees the original Host, our X-Forwarded-For/Proto/Host, and none of the
//!   forwarding headers a client tried to spoof;
//! - hop-by-hop headers, and every header named in Connection, are removed both ways;
//! - bodies stream both ways (a large body round-trips byte for byte);
//! - WebSocket upgrades are tunnelled only after the upstream answers 101; `Upgrade: h2c` is
//!   never forwarded;
//! - a refused upstream is 502, a slow one 504, and neither body names an internal address.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        for _ in 0..3 {
            let answer = client.get("localhost", "/echo").await;
            assert_eq!(answer.status, 200, "h2={h2}");
            assert!(answer.text().starts_with("GET /echo\n"), "h2={h2}");
        }
        // A response without a body is never read: it must give its connection back too.
        let head = request("HEAD", "localhost", "/echo")
            .body(Full::default())
            .unwrap();
        assert_eq!(client.send(head).await.status, 200, "h2={h2}");
        let post = request("POST", "localhost", "/echo")
            .body(Full::new(Bytes::from_static(b"posted")))
            .unwrap();
        assert_eq!(client.send(post).await.text(), "posted", "h2={h2}");
        let large = client.get("localhost", "/bytes/300000").await;
        assert_eq!(large.body.len(), 300_000, "h2={h2}");
        assert_eq!(client.get("localhost", "/echo").await.status, 200);
    }
    assert_eq!(
        setup.app.accepted(),
        1,
        "sequential requests should share one upstream connection"
    );
}

/// A raw upstream that writes `answer` for every request head it reads. With `close_after`, it
/// closes each connection that long after its first answer without having said so (no
/// `Connection: close`), as an upstream whose keep-alive timeout runs out does. Counts
/// connections accepted and closed.
async fn raw_upstream(
    answer: &'static [u8],
    close_after: Option<Duration>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (accepts, closes) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            accepts.fetch_add(1, Ordering::SeqCst);
            let closes = closes.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                'requests: loop {
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break 'requests,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if stream.write_all(answer).await.is_err() {
                        break;
                    }
                    if let Some(linger) = close_after {
                        tokio::time::sleep(linger).await;
                        break;
                    }
                }
                drop(stream);
                closes.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, closed)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_used_again() {
    let setup = Setup::new().await;
    // At once: the close arrives with the answer. Later: the connection is back in the pool,
    // idle, when the upstream closes it.
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (at_once, accepted_at_once, _) = raw_upstream(ok, Some(Duration::ZERO)).await;
    let (later, accepted_later, closed_later) =
        raw_upstream(ok, Some(Duration::from_millis(50))).await;
    let extra = format!(
        "[upstreams.at_once]\nenvironment = \"test\"\naddrs = [\"{at_once}\"]\n\
         [upstreams.later]\nenvironment = \"test\"\naddrs = [\"{later}\"]\n\
         [[routes]]\nhost = \"app.test\"\npath_prefix = \"/at-once\"\nupstream = \"at_once\"\n\
         [[routes]]\nhost = \"app.test\"\npath_prefix = \"/later\"\nupstream = \"later\"\n"
    );
    let proxy = setup.start(&extra).await;
    let mut sent = 0;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "app.test", &setup.pki).await;
        for i in 0..5 {
            for path in ["/at-once", "/later"] {
                let answer = client.get("app.test", path).await;
                assert_eq!(answer.status, 200, "h2={h2} {path} #{i}: {}", answer.text());
                assert_eq!(answer.text(), "ok");
            }
            sent += 1;
            // Until the upstream has closed, and the proxy has had time to read that close.
            let closed = async {
                while closed_later.load(Ordering::SeqCst) < sent {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), closed)
                .await
                .expect("the upstream closes its connection");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(accepted_at_once.load(Ordering::SeqCst), sent);
    assert_eq!(accepted_later.load(Ordering::SeqCst), sent);
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_upstream_idle_timeout() {
    let setup = Setup::new().await;
    support::assert_refused(
        &setup.toml("[limits]\nupstream_idle_timeout = \"0s\"\n"),
        "limits.upstream_idle_timeout",
    );
    let proxy = setup
        .start("[limits]\nupstream_idle_timeout = \"1s\"\n")
        .await;
    let mut client = Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
    assert_eq!(client.get("localhost", "/echo").await.status, 200);
    assert_eq!(setup.app.open_connections(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while setup.app.open_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        setup.app.open_connections(),
        0,
        "an unused upstream connection outlived upstream_idle_timeout"
    );
    // The client's own connection is still open, and a new upstream connection serves it.
    assert_eq!(client.get("localhost", "/echo").await.status, 200);
    assert_eq!(setup.app.accepted(), 2);
}

/// Response queue poisoning (catalogue PRX-20, PRX-22): an upstream that writes a second,
/// unasked-for response after its answer, or a body after the head of a `HEAD` answer, must
/// not be asked again on that connection, or the next client would get the leftover bytes as
/// its answer.
#[tokio::test]
async fn bytes_an_upstream_sent_unasked_never_answer_the_next_request() {
    let setup = Setup::new().await;
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst\
        HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\npoison!";
    let (addr, accepted, _) = raw_upstream(answer, None).await;
    let extra = format!(
        "[upstreams.poisoning]\nenvironment = \"test\"\naddrs = [\"{addr}\"]\n\
         [[routes]]\nhost = \"app.test\"\npath_prefix = \"/p\"\nupstream = \"poisoning\"\n"
    );
    let proxy = setup.start(&extra).await;
    let mut asked = 0;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "app.test", &setup.pki).await;
        for method in ["GET", "GET", "HEAD", "GET"] {
            let req = request(method, "app.test", "/p")
                .body(Full::default())
                .unwrap();
            let answer = client.send(req).await;
            asked += 1;
            assert_eq!(answer.status, 200, "h2={h2} {method}");
            let expected = if method == "HEAD" { "" } else { "first" };
            assert_eq!(answer.text(), expected, "h2={h2} {method}");
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        asked,
        "a connection that sent unasked bytes was used again"
    );
}
