//! The edge under hostile clients (issue #10), from outside: raw h1 bytes, raw HTTP/2 frames
//! through the `h2` crate's client, real TLS and real WebSocket upgrades. It proves that:
//! - an HTTP/2 stream whose client grants no flow-control window is reset after `send_timeout`
//!   and its upstream connection released (`zero_window_streams_are_reset_and_released`);
//! - an HTTP/2 connection with nothing in flight gets GOAWAY after `idle_timeout`, even while
//!   its client keeps it busy with PINGs (`idle_h2_connection_is_closed_even_when_pinging`);
//! - WebSocket tunnels keep their connection permit and place in the gauge, end when idle
//!   (`tunnels_hold_their_permit_and_end_when_idle`), and are waited for, then cut, at shutdown
//!   (`shutdown_waits_for_tunnels_then_cuts_them`);
//! - no header claiming to describe the client, its certificate or its original URL reaches an
//!   upstream, in any `_` spelling, on h1 and h2 (`client_claims_never_reach_the_upstream`);
//! - `Transfer-Encoding` other than one `chunked`, raw non-ASCII path bytes, padded HTTP/2 field
//!   values and header sections over `max_header_bytes` are refused before any upstream IO
//!   (`malformed_messages_are_refused`, `h2_padded_values_and_oversized_headers_are_refused`).

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use support::upstream::seen;
use support::{Client, Setup, WAIT, request, status_of, until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP/2 client over TLS to `app.test`, with the caller's settings.
async fn h2_raw(
    setup: &Setup,
    addr: std::net::SocketAddr,
    builder: &h2::client::Builder,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = support::tls_connect(addr, "app.test", setup.pki.client(&[b"h2"]))
        .await
        .unwrap();
    let (sender, connection) = builder.handshake(tls).await.unwrap();
    (sender, tokio::spawn(connection))
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("https://app.test{path}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn zero_window_streams_are_reset_and_released() {
    let setup = Setup::new().await;
    let proxy = setup
        .start("[limits]\nsend_timeout = \"1s\"\nidle_timeout = \"60s\"\n")
        .await;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (mut sender, _connection) = h2_raw(&setup, proxy.https_addr, &builder).await;
    let mut bodies = Vec::new();
    for _ in 0..10 {
        sender = sender.ready().await.unwrap();
        let (response, _) = sender.send_request(get("/bytes/200000"), true).unwrap();
        bodies.push(response);
    }
    until("every stream reached the upstream", async || {
        setup.app.hits() == 10
    })
    .await;
    for response in bodies {
        let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let end = tokio::time::timeout(WAIT, body.data()).await;
        assert!(
            matches!(end, Ok(Some(Err(_)))),
            "the stalled stream was not reset: {end:?}"
        );
    }
    until("the upstream connections were released", async || {
        setup.app.open_connections() == 0
    })
    .await;
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn idle_h2_connection_is_closed_even_when_pinging() {
    let setup = Setup::new().await;
    let proxy = setup.start("[limits]\nidle_timeout = \"1s\"\n").await;
    let tls = support::tls_connect(proxy.https_addr, "app.test", setup.pki.client(&[b"h2"]))
        .await
        .unwrap();
    let (sender, mut connection) = h2::client::handshake(tls).await.unwrap();
    let mut ping_pong = connection.ping_pong().unwrap();
    let closed = tokio::spawn(connection);
    // One request, then only PINGs: bytes keep flowing, but nothing is in flight.
    let mut sender = sender.ready().await.unwrap();
    let (response, _) = sender.send_request(get("/"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let pinging = tokio::spawn(async move {
        while ping_pong.ping(h2::Ping::opaque()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let ended = tokio::time::timeout(WAIT, closed).await;
    assert!(
        ended.is_ok(),
        "an idle h2 connection was kept open by PINGs"
    );
    pinging.abort();
    assert!(proxy.shutdown().await);
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// An open WebSocket tunnel through the proxy, echo checked.
async fn tunnel(
    setup: &Setup,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = support::h1_tls_sending(addr, "app.test", &setup.pki, UPGRADE).await;
    let head = support::read_response(&mut tls).await;
    assert_eq!(status_of(&head), Some(101), "{head}");
    tls.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(WAIT, tls.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");
    tls
}

#[tokio::test]
async fn tunnels_hold_their_permit_and_end_when_idle() {
    let setup = Setup::new().await;
    let proxy = setup
        .start("[admin]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_connections = 3\nidle_timeout = \"2s\"\n")
        .await;
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        tunnels.push(tunnel(&setup, proxy.https_addr).await);
    }
    let metrics = support::raw_tcp(
        proxy.admin_addr.unwrap(),
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        metrics.contains("portcullis_connections_active 4"),
        "three tunnels and this admin request: {metrics}"
    );
    // The limit is full: a fourth client waits in the backlog.
    let addr = proxy.https_addr;
    let client = setup.pki.client(&[b"http/1.1"]);
    let fourth = tokio::spawn(async move { support::tls_connect(addr, "app.test", client).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !fourth.is_finished(),
        "a fourth connection was served past max_connections"
    );
    // Idle tunnels end after idle_timeout, and their permits go to the waiting client.
    for tunnel in &mut tunnels {
        assert!(
            support::closed_by_peer(tunnel).await,
            "an idle tunnel stayed open"
        );
    }
    let fourth = tokio::time::timeout(WAIT, fourth).await;
    assert!(
        matches!(fourth, Ok(Ok(Ok(_)))),
        "the freed permits were not used"
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn shutdown_waits_for_tunnels_then_cuts_them() {
    let setup = Setup::new().await;
    let proxy = setup
        .start("[limits]\nshutdown_grace = \"1s\"\nidle_timeout = \"60s\"\n")
        .await;
    let mut open = tunnel(&setup, proxy.https_addr).await;
    let started = tokio::time::Instant::now();
    let drained = tokio::time::timeout(WAIT, proxy.shutdown()).await.unwrap();
    assert!(!drained, "shutdown did not wait for the open tunnel");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        support::closed_by_peer(&mut open).await,
        "the tunnel outlived the shutdown grace"
    );
}

#[tokio::test]
async fn client_claims_never_reach_the_upstream() {
    let setup = Setup::new().await;
    let proxy = setup.start("[headers]\nstrip = [\"X-Tenant\"]\n").await;
    let claims = [
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "x-original-url",
        "x-rewrite-url",
        "x-ssl-client-verify",
        "x-client-dn",
        "x_forwarded_for",
        "x_portcullis_user",
        "x_real_ip",
        "x-portcullis-anything",
        "x-tenant",
    ];
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "app.test", &setup.pki).await;
        let mut builder = request("GET", "app.test", "/echo");
        for name in claims {
            builder = builder.header(name, "127.0.0.66");
        }
        let answer = client
            .send(builder.body(http_body_util::Full::default()).unwrap())
            .await;
        assert_eq!(answer.status, 200);
        let echo = answer.text();
        for name in claims {
            assert!(
                seen(&echo, name).is_empty(),
                "h2={h2}: {name} reached the upstream:\n{echo}"
            );
        }
        assert!(!echo.contains("127.0.0.66"), "{echo}");
        assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    }
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn malformed_messages_are_refused() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let big = format!("X-Big: {}\r\n", "b".repeat(1000)).repeat(70);
    let cases: [(&str, Vec<u8>, u16); 7] = [
        (
            "HTTP/1.0 with Transfer-Encoding",
            b"POST / HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "DEL in the path",
            b"GET /a\x7fb HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (
            "chunked, chunked",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two chunked lines",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "gzip, chunked",
            b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "raw non-ASCII path",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (
            "70 KB of headers with max_header_bytes = 65536",
            format!("GET / HTTP/1.1\r\nHost: app.test\r\n{big}Connection: close\r\n\r\n").into_bytes(),
            431,
        ),
    ];
    for (what, bytes, status) in cases {
        let raw = support::raw_tls(proxy.https_addr, "app.test", &setup.pki, &bytes).await;
        assert_eq!(status_of(&raw), Some(status), "{what}: {raw}");
    }
    assert_eq!(
        setup.app.hits(),
        0,
        "a malformed message reached the upstream"
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn h2_padded_values_and_oversized_headers_are_refused() {
    let setup = Setup::new().await;
    let proxy = setup.start("[limits]\nmax_header_bytes = 16384\n").await;
    let (mut sender, _connection) =
        h2_raw(&setup, proxy.https_addr, &h2::client::Builder::new()).await;
    for value in [" padded", "padded\t"] {
        let mut request = get("/");
        request
            .headers_mut()
            .insert("x-a", http::HeaderValue::from_str(value).unwrap());
        sender = sender.ready().await.unwrap();
        let (response, _) = sender.send_request(request, true).unwrap();
        let status = tokio::time::timeout(WAIT, response)
            .await
            .unwrap()
            .map(|r| r.status().as_u16());
        assert!(
            matches!(status, Ok(400)),
            "{value:?} was served: {status:?}"
        );
    }
    // 12 fields of 1.4 KB: about 17 KB as HTTP/1.1 writes them, over the limit.
    let mut request = get("/");
    for i in 0..12 {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-big-{i}").as_bytes()).unwrap(),
            http::HeaderValue::from_str(&"b".repeat(1400)).unwrap(),
        );
    }
    sender = sender.ready().await.unwrap();
    let (response, _) = sender.send_request(request, true).unwrap();
    let status = tokio::time::timeout(WAIT, response)
        .await
        .unwrap()
        .map(|r| r.status().as_u16());
    assert!(matches!(status, Ok(431)), "{status:?}");
    assert_eq!(setup.app.hits(), 0);
    assert!(proxy.shutdown().await);
}

/// Heads hyper cannot parse never reach the service: hyper answers them itself (with the
/// `error_response_headers` our vendored hyper adds), and on the HTTPS listener that answer
/// carries HSTS like every other. The plain listener's does not (RFC 6797 8.1).
#[tokio::test]
async fn hypers_own_errors_carry_hsts_on_the_https_listener_only() {
    let setup = Setup::new().await;
    let proxy = setup.start("[limits]\nmax_header_bytes = 16384\n").await;
    let big = format!("X-Big: {}\r\n", "b".repeat(1000)).repeat(20);
    let cases = [
        (
            "a header line without a colon",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nNo colon here\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a space in the method",
            b"G T / HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "20 KB of headers with max_header_bytes = 16384",
            format!("GET / HTTP/1.1\r\nHost: app.test\r\n{big}\r\n").into_bytes(),
            431,
        ),
    ];
    for (what, bytes, status) in cases {
        let raw = support::raw_tls(proxy.https_addr, "app.test", &setup.pki, &bytes).await;
        assert_eq!(status_of(&raw), Some(status), "{what}: {raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains("\r\nstrict-transport-security: max-age="),
            "{what}: no HSTS on the HTTPS listener:\n{raw}"
        );
        let plain = support::raw_tcp(proxy.http_addr.unwrap(), &bytes).await;
        assert_eq!(status_of(&plain), Some(status), "{what}: {plain}");
        assert!(
            !plain
                .to_ascii_lowercase()
                .contains("strict-transport-security"),
            "{what}: HSTS on plain HTTP:\n{plain}"
        );
    }
    assert_eq!(
        setup.app.hits(),
        0,
        "an unparsable head reached the upstream"
    );
    assert!(proxy.shutdown().await);
}
