//! Limits and timeouts on everything a client controls, each shown to really fire. It proves
//! that:
//! - a request head dribbled byte by byte is cut off (slowloris), and so is a TLS handshake
//!   that never completes;
//! - oversized heads get 431 and never reach an upstream;
//! - bodies over the route's limit get 413, declared or streamed;
//! - a body that stops arriving gets 408;
//! - idle keep-alive connections are closed, on HTTP/1.1 and HTTP/2;
//! - at `max_connections`, a further client waits until a slot frees.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{
    Client, Setup, WAIT, closed_by_peer, read_response, read_to_close, request, status_of,
    tls_connect,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn slowloris_head_is_cut_off() {
    let setup = Setup::new().await;
    let proxy = setup
        .start("[limits]\nheader_read_timeout = \"400ms\"\n")
        .await;
    let tls = tls_connect(
        proxy.https_addr,
        "localhost",
        setup.pki.client(&[b"http/1.1"]),
    )
    .await
    .unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let dribble = async {
        writer
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"X-a: b\r\n").await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = read_to_close(&mut reader) => {}
        () = dribble => panic!("a 5 s dribble outlived a 400 ms header timeout"),
    }
    assert_eq!(setup.app.hits(), 0);
}

#[tokio::test]
async fn stalled_tls_handshake_is_cut_off() {
    let setup = Setup::new().await;
    let proxy = setup
        .start("[limits]\nhandshake_timeout = \"300ms\"\n")
        .await;
    for opening in [&b""[..], &b"\x16\x03\x01\x02\x00\x01"[..]] {
        let mut tcp = TcpStream::connect(proxy.https_addr).await.unwrap();
        tcp.write_all(opening).await.unwrap();
        assert!(closed_by_peer(&mut tcp).await, "handshake never timed out");
    }
}

#[tokio::test]
async fn oversized_heads_are_431() {
    let setup = Setup::new().await;
    let proxy = setup.start("[limits]\nmax_header_bytes = 8192\n").await;
    let big = "a".repeat(20_000);
    let raw = support::raw_tls(
        proxy.https_addr,
        "localhost",
        &setup.pki,
        format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&raw), Some(431), "{}", &raw[..raw.len().min(200)]);
    let mut h2 = support::h2(proxy.https_addr, "localhost", &setup.pki).await;
    let req = request("GET", "localhost", "/")
        .uri("https://localhost/")
        .version(http::Version::HTTP_2)
        .header("x-big", big)
        .body(Full::default())
        .unwrap();
    let response = tokio::time::timeout(WAIT, h2.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(
        setup.app.hits(),
        0,
        "an oversized head reached the upstream"
    );
}

#[tokio::test]
async fn bodies_over_the_route_limit_are_413() {
    let setup = Setup::new().await;
    let extra = "[[routes]]\nhost = \"app.test\"\npath_prefix = \"/small\"\nupstream = \"app\"\nmax_body_bytes = 16\n";
    let proxy = setup.start(extra).await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "app.test", &setup.pki).await;
        let body = Bytes::from(vec![b'x'; 17]);
        let answer = client
            .send(
                request("POST", "app.test", "/small")
                    .body(Full::new(body))
                    .unwrap(),
            )
            .await;
        assert_eq!(answer.status, 413, "h2={h2}");
        let fits = client
            .send(
                request("POST", "app.test", "/small")
                    .body(Full::new(Bytes::from_static(b"0123456789abcdef")))
                    .unwrap(),
            )
            .await;
        assert_eq!(fits.status, 200, "h2={h2}");
    }
    let chunked = support::raw_tls(
        proxy.https_addr,
        "app.test",
        &setup.pki,
        b"POST /small HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&chunked), Some(413), "{chunked}");
}

#[tokio::test]
async fn stalled_body_is_408() {
    let setup = Setup::new().await;
    let proxy = setup
        .start("[limits]\nbody_read_timeout = \"300ms\"\n")
        .await;
    let mut tls = support::h1_tls_sending(
        proxy.https_addr,
        "localhost",
        &setup.pki,
        b"POST /collect HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nab",
    )
    .await;
    let raw = read_response(&mut tls).await;
    assert_eq!(status_of(&raw), Some(408), "{raw}");
}

#[tokio::test]
async fn idle_connections_are_closed_on_h1_and_h2() {
    let setup = Setup::new().await;
    let proxy = setup
        .start("[limits]\nidle_timeout = \"500ms\"\nheader_read_timeout = \"60s\"\n")
        .await;
    let mut tls = support::h1_tls_sending(
        proxy.https_addr,
        "localhost",
        &setup.pki,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&read_response(&mut tls).await), Some(200));
    assert!(
        closed_by_peer(&mut tls).await,
        "idle h1 connection stayed open"
    );

    let tls = tls_connect(proxy.https_addr, "localhost", setup.pki.client(&[b"h2"]))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let req = request("GET", "localhost", "/")
        .uri("https://localhost/")
        .version(http::Version::HTTP_2)
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    let ended = tokio::time::timeout(WAIT, driver).await;
    assert!(ended.is_ok(), "idle h2 connection stayed open");
}

#[tokio::test]
async fn connection_limit_holds_new_clients_back() {
    let setup = Setup::new().await;
    let proxy = setup.start("[limits]\nmax_connections = 1\n").await;
    let first = tls_connect(proxy.https_addr, "localhost", setup.pki.client(&[b"h2"]))
        .await
        .unwrap();
    let client = setup.pki.client(&[b"h2"]);
    let second = tokio::spawn(tls_connect(proxy.https_addr, "localhost", client));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served beyond the limit"
    );
    drop(first);
    let second = tokio::time::timeout(WAIT, second).await.unwrap().unwrap();
    assert!(second.is_ok(), "the waiting client was never served");
}
