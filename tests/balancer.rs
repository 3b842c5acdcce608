//! Behind a TCP load balancer. It proves that:
//! - the PROXY protocol (v1 text, v2 binary, IPv4 and IPv6) from `listen.proxy_protocol_from`
//!   names the client for everything: `X-Forwarded-For`, the deny list, the environment check,
//!   on both listeners; a header split across segments is read whole and the bytes after it
//!   reach TLS or HTTP;
//! - the balancer's own connections (v2 `LOCAL`, v1 `UNKNOWN`) are its own address;
//! - a balancer connection without a valid header (none, truncated, oversized, a UNIX socket)
//!   is closed, and a header from outside the ranges is closed too, never answered;
//! - ranges outside private space and malformed ones are refused by key;
//! - on shutdown with `drain_delay`, `/readyz` fails at once while both listeners keep serving,
//!   keep-alive clients are told to go (`Connection: close`, GOAWAY), in-flight requests finish:
//!   a client that keeps sending through the whole sequence sees no failure.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use support::upstream::seen;
use support::{
    Answer, ConfigToml, Setup, WAIT, closed_by_peer, collect, exchange, request, status_of,
    strings, tcp_from,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 `PROXY` header for a TCP client at `source`.
fn v2(source: SocketAddr) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x21); // version 2, PROXY
    match source {
        SocketAddr::V4(v4) => {
            header.extend([0x11, 0, 12]); // TCP over IPv4, 12 bytes
            header.extend(v4.ip().octets());
            header.extend([10, 0, 0, 1]);
            header.extend(v4.port().to_be_bytes());
            header.extend(443u16.to_be_bytes());
        }
        SocketAddr::V6(v6) => {
            header.extend([0x21, 0, 36]); // TCP over IPv6, 36 bytes
            header.extend(v6.ip().octets());
            header.extend(std::net::Ipv6Addr::LOCALHOST.octets());
            header.extend(v6.port().to_be_bytes());
            header.extend(443u16.to_be_bytes());
        }
    }
    header
}

/// The v2 header a balancer sends for its own health checks.
fn v2_local() -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend([0x20, 0x00, 0, 0]);
    header
}

/// A proxy that trusts PROXY headers from 127.0.0.1 only; the tests connect from 127.0.0.2 to
/// be outside. `extra` changes the config by key.
async fn behind_balancer(
    setup: &Setup,
    extra: impl FnOnce(ConfigToml) -> ConfigToml,
) -> portcullis::Running {
    let toml = setup
        .config()
        .set("listen.proxy_protocol_from", strings(&["127.0.0.1/32"]))
        .set("limits.handshake_timeout", "1s");
    support::start_toml(&extra(toml).text()).await
}

/// TLS after `header` from `local`, then one h1 or h2 GET of `/echo`; `None` when the proxy
/// closed the connection instead.
async fn get_after(
    local: Option<std::net::IpAddr>,
    addr: SocketAddr,
    header: &[u8],
    h2: bool,
    setup: &Setup,
) -> Option<Answer> {
    let mut tcp = tcp_from(local, addr).await.ok()?;
    tcp.write_all(header).await.ok()?;
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(setup.pki.client(&[alpn])).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .ok()?;
    let request = request("GET", "localhost", "/echo")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .ok()?;
        tokio::spawn(conn);
        let (mut parts, body) = request.into_parts();
        parts.uri = "https://localhost/echo".parse().unwrap();
        parts.version = http::Version::HTTP_2;
        parts.headers.remove("host");
        sender
            .send_request(http::Request::from_parts(parts, body))
            .await
            .ok()?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .ok()?;
        tokio::spawn(conn);
        sender.send_request(request).await.ok()?
    };
    Some(collect(response).await)
}

fn forwarded_for(answer: &Answer) -> Vec<String> {
    seen(&answer.text(), "x-forwarded-for")
}

#[tokio::test]
async fn a_trusted_balancer_names_the_client_in_v1_and_v2() {
    let setup = Setup::new().await;
    let proxy = behind_balancer(&setup, |t| t).await;
    let https = proxy.https_addr;
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "v1 TCP4",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n".to_vec(),
            "192.0.2.7",
        ),
        (
            "v1 TCP6",
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n".to_vec(),
            "2001:db8::7",
        ),
        (
            "v2 IPv4",
            v2("198.51.100.23:40000".parse().unwrap()),
            "198.51.100.23",
        ),
        (
            "v2 IPv6",
            v2("[2001:db8::99]:40000".parse().unwrap()),
            "2001:db8::99",
        ),
        // The balancer's own connection (a health check) is the balancer.
        ("v2 LOCAL", v2_local(), "127.0.0.1"),
    ];
    for (case, header, client) in cases {
        for h2 in [false, true] {
            let answer = get_after(None, https, &header, h2, &setup)
                .await
                .unwrap_or_else(|| panic!("{case} h2={h2}: closed"));
            assert_eq!(answer.status, 200, "{case} h2={h2}");
            assert_eq!(forwarded_for(&answer), [client], "{case} h2={h2}");
        }
    }
    let unknown = get_after(None, https, b"PROXY UNKNOWN\r\n", false, &setup)
        .await
        .expect("v1 UNKNOWN served");
    assert_eq!(forwarded_for(&unknown), ["127.0.0.1"]);
}

#[tokio::test]
async fn a_header_split_across_segments_is_read_whole() {
    let setup = Setup::new().await;
    let proxy = behind_balancer(&setup, |t| t).await;
    let header = v2("203.0.113.5:1234".parse().unwrap());
    let mut tcp = TcpStream::connect(proxy.https_addr).await.unwrap();
    for piece in [&header[..5], &header[5..14], &header[14..]] {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(setup.pki.client(&[b"http/1.1"]))
        .connect(name, tcp)
        .await
        .expect("TLS after a trickled header");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            request("GET", "localhost", "/echo")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(forwarded_for(&collect(response).await), ["203.0.113.5"]);
}

#[tokio::test]
async fn the_plain_listener_reads_the_header_too() {
    let setup = Setup::new().await;
    let proxy = behind_balancer(&setup, |t| {
        t.set("access.deny_clients", strings(&["192.0.2.0/24"]))
    })
    .await;
    let http = proxy.http_addr.unwrap();
    let get = b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    // Header and request in one segment, as a balancer forwards them.
    let mut allowed = b"PROXY TCP4 198.51.100.9 10.0.0.1 5000 80\r\n".to_vec();
    allowed.extend(get);
    let answer = exchange(&mut TcpStream::connect(http).await.unwrap(), &allowed).await;
    assert_eq!(status_of(&answer), Some(301), "{answer}");
    let mut denied = b"PROXY TCP4 192.0.2.7 10.0.0.1 5000 80\r\n".to_vec();
    denied.extend(get);
    let answer = exchange(&mut TcpStream::connect(http).await.unwrap(), &denied).await;
    assert_eq!(
        answer, "",
        "a denied client behind the balancer was answered"
    );
}

#[tokio::test]
async fn the_client_it_names_meets_the_deny_list_and_the_environment_check() {
    let setup = Setup::new().await;
    // 10.9/16 belongs to a provider we peer to: it never reaches us.
    let proxy = behind_balancer(&setup, |t| {
        t.set("networks.test", strings(&["127.0.0.0/8", "::1/128"]))
            .set("networks.db", strings(&["10.9.0.0/16"]))
            .push("peerings", &[("from", "test".into()), ("to", "db".into())])
            .set(
                "access.deny_clients",
                strings(&["192.0.2.0/24", "2001:db8:bad::/48"]),
            )
    })
    .await;
    let https = proxy.https_addr;
    for refused in ["192.0.2.7:1000", "[2001:db8:bad::1]:1000", "10.9.0.5:1000"] {
        let header = v2(refused.parse().unwrap());
        assert!(
            get_after(None, https, &header, false, &setup)
                .await
                .is_none(),
            "{refused} was served behind the balancer"
        );
    }
    let fine = get_after(
        None,
        https,
        &v2("198.51.100.1:1000".parse().unwrap()),
        false,
        &setup,
    )
    .await
    .expect("an allowed client is served");
    assert_eq!(fine.status, 200);
}

#[tokio::test]
async fn a_balancer_connection_without_a_valid_header_is_closed() {
    let setup = Setup::new().await;
    let proxy = behind_balancer(&setup, |t| t).await;
    let https = proxy.https_addr;
    // No header at all: the ClientHello is not one.
    assert!(
        get_after(None, https, b"", false, &setup).await.is_none(),
        "served without a header"
    );
    let mut oversized_v2 = V2_SIGNATURE.to_vec();
    oversized_v2.extend([0x21, 0x11, 0xff, 0xff]);
    oversized_v2.extend([0u8; 2048]);
    let mut unix = V2_SIGNATURE.to_vec();
    unix.extend([0x21, 0x31, 0, 216]);
    unix.extend([0u8; 216]);
    let bad: [(&str, Vec<u8>); 7] = [
        ("oversized v2", oversized_v2),
        (
            "v1 without its CRLF",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat(),
        ),
        (
            "v1 with a bad address",
            b"PROXY TCP4 300.1.1.1 10.0.0.1 1 2\r\n".to_vec(),
        ),
        (
            "v1 family mismatch",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n".to_vec(),
        ),
        (
            "v2 version 3",
            [V2_SIGNATURE.as_slice(), &[0x31, 0x11, 0, 12], &[0; 12]].concat(),
        ),
        ("v2 UNIX socket", unix),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
    ];
    for (case, bytes) in bad {
        let mut tcp = TcpStream::connect(https).await.unwrap();
        let answer = exchange(&mut tcp, &bytes).await;
        assert_eq!(answer, "", "{case}: answered");
        assert!(closed_by_peer(&mut tcp).await, "{case}: left open");
    }
    // A header that stops halfway is closed by the handshake timeout (1 s here), not held.
    for truncated in [
        &b"PROXY TCP4 192.0.2.7 "[..],
        &v2("192.0.2.7:1".parse().unwrap())[..20],
    ] {
        let mut tcp = TcpStream::connect(https).await.unwrap();
        tcp.write_all(truncated).await.unwrap();
        assert!(
            closed_by_peer(&mut tcp).await,
            "a truncated header held the connection"
        );
    }
    // The listener still serves.
    assert!(
        get_after(None, https, &v2_local(), false, &setup)
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_header_from_outside_the_ranges_is_closed() {
    let setup = Setup::new().await;
    let proxy = behind_balancer(&setup, |t| t).await;
    let outside: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let (https, http) = (proxy.https_addr, proxy.http_addr.unwrap());
    for header in [
        b"PROXY TCP4 198.51.100.9 10.0.0.1 5000 443\r\n".to_vec(),
        v2("198.51.100.9:5000".parse().unwrap()),
    ] {
        assert!(
            get_after(Some(outside), https, &header, false, &setup)
                .await
                .is_none(),
            "a spoofed header was accepted on the TLS listener"
        );
        let mut sent = header.clone();
        sent.extend(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let mut tcp = tcp_from(Some(outside), http).await.unwrap();
        let answer = exchange(&mut tcp, &sent).await;
        assert_eq!(
            answer, "",
            "a spoofed header was answered on the plain listener"
        );
    }
    // Without a header, a client outside the ranges is itself.
    let direct = get_after(Some(outside), https, b"", true, &setup)
        .await
        .expect("a direct client is served");
    assert_eq!(forwarded_for(&direct), ["127.0.0.2"]);
    let answer = exchange(
        &mut tcp_from(Some(outside), http).await.unwrap(),
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), Some(301));
}

#[test]
fn balancer_ranges_must_be_private_networks() {
    let setup_toml = |ranges: &[&str]| {
        let pki = support::Pki::new(support::CERT_NAMES);
        let toml = ConfigToml::parse(&format!(
            "environment = \"test\"\n[listen]\nhttps = \"127.0.0.1:0\"\n[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.cert.display(),
            pki.key.display()
        ))
        .set("listen.proxy_protocol_from", strings(ranges))
        .text();
        (pki, toml)
    };
    for (ranges, key) in [
        (&["0.0.0.0/0"][..], "listen.proxy_protocol_from[0]"),
        (
            &["10.0.0.0/8", "8.8.8.0/24"][..],
            "listen.proxy_protocol_from[1]",
        ),
        (&["10.0.0.0/33"][..], "listen.proxy_protocol_from[0]"),
        (&["::/0"][..], "listen.proxy_protocol_from[0]"),
    ] {
        let (_pki, toml) = setup_toml(ranges);
        support::assert_refused(&toml, key);
    }
    let (_pki, toml) = setup_toml(&["10.0.0.0/8", "fd00::/8"]);
    let described = portcullis::config::describe(&support::config_from(&toml).unwrap());
    assert!(
        described.contains("PROXY protocol required from 10.0.0.0/8, fd00::/8"),
        "{described}"
    );
}

/// A tiny balancer: polls `/readyz` every 50 ms and stops routing to the instance at the first
/// failure, as a cloud balancer deregisters a target whose health check fails. Its flag says
/// whether it routes here; its handle returns the failing status (0: no answer at all).
fn health_checker(admin: SocketAddr) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u16>) {
    let routed = Arc::new(AtomicBool::new(true));
    let flag = routed.clone();
    let checker = tokio::spawn(async move {
        let mut status = 0;
        for _ in 0..400 {
            let Ok(mut tcp) = TcpStream::connect(admin).await else {
                break;
            };
            let answer = exchange(
                &mut tcp,
                b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await;
            status = status_of(&answer).unwrap_or(0);
            if status != 200 {
                break;
            }
            status = 0;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        flag.store(false, Ordering::SeqCst);
        status
    });
    (routed, checker)
}

#[derive(Default)]
struct Tally {
    served: AtomicUsize,
    served_while_leaving: AtomicUsize,
    goaway_early: AtomicUsize,
    leaving_at: std::sync::Mutex<Option<std::time::Instant>>,
    connection_close: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

/// Keeps sending GETs on keep-alive connections (h1 or h2) while the balancer routes to the
/// instance; a connection the proxy asked to close (`Connection: close`, GOAWAY) is replaced
/// through the balancer, or not at all once it has stopped routing here. As any correct client,
/// it resends a request that never left it (RFC 9113 8.7), which is not a failure; every other
/// error is.
async fn keep_sending(
    h2: bool,
    addr: SocketAddr,
    setup: Arc<Setup>,
    routed: Arc<AtomicBool>,
    leaving: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let fail = |what: String| tally.failures.lock().unwrap().push(what);
    for _ in 0..2000 {
        if !routed.load(Ordering::SeqCst) {
            return;
        }
        let connect = async {
            if h2 {
                support::Client::H2(support::h2(addr, "localhost", &setup.pki).await)
            } else {
                support::Client::H1(support::h1(addr, "localhost", &setup.pki).await)
            }
        };
        let Ok(mut client) = tokio::time::timeout(WAIT, connect).await else {
            return fail(format!("h2={h2}: connect timed out"));
        };
        loop {
            let was_leaving = leaving.load(Ordering::SeqCst);
            let request = request("GET", "localhost", "/echo")
                .body(Full::default())
                .unwrap();
            let sent = match &mut client {
                support::Client::H1(s) => s.try_send_request(request).await,
                support::Client::H2(s) => {
                    let (mut parts, body) = request.into_parts();
                    parts.uri = "https://localhost/echo".parse().unwrap();
                    parts.version = http::Version::HTTP_2;
                    parts.headers.remove("host");
                    s.try_send_request(http::Request::from_parts(parts, body))
                        .await
                }
            };
            let answer = match sent {
                Ok(response) => collect(response).await,
                Err(mut e) => {
                    if e.take_message().is_none() {
                        return fail(format!("h2={h2}: {}", e.error()));
                    }
                    // Sent away by GOAWAY well before accepting stops (at 1.5 s), so at
                    // leaving, not at draining.
                    let early = tally
                        .leaving_at
                        .lock()
                        .unwrap()
                        .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
                    if h2 && early {
                        tally.goaway_early.fetch_add(1, Ordering::SeqCst);
                    }
                    break;
                }
            };
            if answer.status != 200 {
                return fail(format!("h2={h2}: status {}", answer.status));
            }
            tally.served.fetch_add(1, Ordering::SeqCst);
            if was_leaving {
                tally.served_while_leaving.fetch_add(1, Ordering::SeqCst);
            }
            if answer.header("connection") == Some("close") {
                tally.connection_close.fetch_add(1, Ordering::SeqCst);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn shutdown_with_a_drain_delay_drops_no_request() {
    let setup = Arc::new(Setup::new().await);
    let toml = setup
        .config()
        .merge("[admin]\nlisten = \"127.0.0.1:0\"\n")
        .set("limits.drain_delay", "1500ms")
        .set("limits.shutdown_grace", "5s")
        .text();
    let proxy = Arc::new(support::start_toml(&toml).await);
    let (routed, checker) = health_checker(proxy.admin_addr.unwrap());
    let leaving = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for h2 in [false, true, false, true] {
        clients.push(tokio::spawn(keep_sending(
            h2,
            proxy.https_addr,
            setup.clone(),
            routed.clone(),
            leaving.clone(),
            tally.clone(),
        )));
    }
    // One client opens a new connection for every request, as through a balancer that spreads
    // connections; it stops when the balancer stops routing here.
    let fresh = {
        let (routed, leaving, tally, http) = (
            routed.clone(),
            leaving.clone(),
            tally.clone(),
            proxy.http_addr.unwrap(),
        );
        tokio::spawn(async move {
            for _ in 0..2000 {
                if !routed.load(Ordering::SeqCst) {
                    return;
                }
                let was_leaving = leaving.load(Ordering::SeqCst);
                let answer = match TcpStream::connect(http).await {
                    Ok(mut tcp) => {
                        exchange(
                            &mut tcp,
                            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                        )
                        .await
                    }
                    Err(e) => {
                        return tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("plain connect: {e}"));
                    }
                };
                if status_of(&answer) != Some(301) {
                    return tally
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("plain: {answer:?}"));
                }
                if was_leaving {
                    tally.served_while_leaving.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A request in flight when accepting stops finishes in the grace.
    let mut slow_client =
        support::Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
    let stopping = proxy.clone();
    leaving.store(true, Ordering::SeqCst);
    *tally.leaving_at.lock().unwrap() = Some(std::time::Instant::now());
    let stopped = tokio::spawn(async move { stopping.shutdown().await });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let slow = tokio::spawn(async move { slow_client.get("localhost", "/slow/1000").await });
    for client in clients {
        client.await.unwrap();
    }
    fresh.await.unwrap();
    assert_eq!(
        checker.await.unwrap(),
        503,
        "/readyz did not fail while serving"
    );
    assert_eq!(
        slow.await.unwrap().status,
        200,
        "the in-flight request was cut"
    );
    assert!(
        stopped.await.unwrap(),
        "shutdown did not finish in its grace"
    );
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests failed during the drain: {failures:?}"
    );
    assert!(
        tally.served_while_leaving.load(Ordering::SeqCst) > 0,
        "nothing was served after the signal"
    );
    assert!(
        tally.connection_close.load(Ordering::SeqCst) >= 2,
        "HTTP/1.1 keep-alive clients were not told to go"
    );
    assert!(
        tally.goaway_early.load(Ordering::SeqCst) >= 2,
        "HTTP/2 clients were not sent away"
    );
    // Once the delay is over the listeners are closed.
    assert!(TcpStream::connect(proxy.https_addr).await.is_err());
}
