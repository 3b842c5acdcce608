//! Start, abuse and stop. It proves that:
//! - plain HTTP sent to the TLS port, TLS sent to the plain port, and random bytes on either are
//!   closed quietly, and the proxy keeps serving;
//! - graceful shutdown stops accepting, lets an in-flight request finish, and reports success.

mod support;

use std::time::Duration;

use support::{Client, Setup, closed_by_peer, raw_tcp, status_of, tls_connect};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn garbage_on_either_port_is_closed_quietly() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let https = proxy.https_addr;
    let http = proxy.http_addr.unwrap();
    let plain_to_tls = raw_tcp(https, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(
        !plain_to_tls.contains("HTTP/1.1"),
        "TLS port answered plain HTTP: {plain_to_tls:?}"
    );
    let hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03random-client-hello-bytes";
    let tls_to_plain = raw_tcp(http, hello).await;
    assert!(
        tls_to_plain.is_empty() || status_of(&tls_to_plain) == Some(400),
        "{tls_to_plain:?}"
    );
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for addr in [https, http] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tcp.write_all(&noise).await;
        assert!(
            closed_by_peer(&mut tcp).await,
            "{addr} kept a garbage connection open"
        );
    }
    let mut client = Client::connect(true, https, "localhost", &setup.pki).await;
    assert_eq!(
        client.get("localhost", "/").await.status,
        200,
        "proxy stopped serving"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let setup = Setup::new().await;
    let proxy = setup.start("[limits]\nshutdown_grace = \"5s\"\n").await;
    let https = proxy.https_addr;
    let mut client = Client::connect(false, https, "localhost", &setup.pki).await;
    let in_flight = tokio::spawn(async move { client.get("localhost", "/slow/700").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::spawn(async move { proxy.shutdown().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = tls_connect(https, "localhost", setup.pki.client(&[b"h2"])).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted during shutdown"
    );
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "slow");
    assert!(
        stopped.await.unwrap(),
        "shutdown did not complete within its grace"
    );
}
