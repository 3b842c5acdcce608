//! The proxy's connections to its upstreams, driven by the requests that use them. It proves
//! that:
//! - sequential requests share one upstream connection, whatever their method and body, and a
//!   response without a body gives its connection back too;
//! - a connection the upstream closed, with its answer or later while pooled, is never used
//!   again, and the request goes on a new one without an error;
//! - unused connections close after `limits.upstream_idle_timeout`;
//! - bytes an upstream sent unasked never answer the next request;
//! - a client that leaves mid-response takes the upstream connection with it and stops counting
//!   as in flight (HTTP/1.1 by closing, HTTP/2 by resetting only its stream);
//! - a connection whose upstream answered before the request body ended finishes sending the
//!   body and is used again.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::{Client, Setup, WAIT, read_response, request, status_of, tls_connect, until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// A raw upstream: what it accepted, closed and read.
struct RawUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    /// Request body bytes read.
    body_bytes: Arc<AtomicUsize>,
}

/// A raw upstream that writes `answer` as soon as it has read a request's head, then reads the
/// request's `content-length` body, and goes on to the next request on the same connection.
/// With `close_after`, it closes each connection that long after its first answer without having
/// said so (no `Connection: close`), as an upstream whose keep-alive timeout runs out does.
async fn raw_upstream(answer: &'static [u8], close_after: Option<Duration>) -> RawUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw = RawUpstream {
        addr: listener.local_addr().unwrap(),
        accepted: Arc::default(),
        closed: Arc::default(),
        body_bytes: Arc::default(),
    };
    let (accepts, closes, reads) = (
        raw.accepted.clone(),
        raw.closed.clone(),
        raw.body_bytes.clone(),
    );
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            accepts.fetch_add(1, Ordering::SeqCst);
            let (closes, reads) = (closes.clone(), reads.clone());
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 16384];
                'requests: loop {
                    let end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break 'requests,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                    let mut length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    pending.drain(..end);
                    if stream.write_all(answer).await.is_err() {
                        break;
                    }
                    while length > 0 {
                        if pending.is_empty() {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => break 'requests,
                                Ok(n) => pending.extend_from_slice(&buf[..n]),
                            }
                        }
                        let taken = pending.len().min(length);
                        pending.drain(..taken);
                        length -= taken;
                        reads.fetch_add(taken, Ordering::SeqCst);
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
    raw
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_used_again() {
    let setup = Setup::new().await;
    // At once: the close arrives with the answer. Later: the connection is back in the pool,
    // idle, when the upstream closes it.
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let at_once = raw_upstream(ok, Some(Duration::ZERO)).await;
    let later = raw_upstream(ok, Some(Duration::from_millis(50))).await;
    let extra = format!(
        "[upstreams.at_once]\nenvironment = \"test\"\naddrs = [\"{}\"]\n\
         [upstreams.later]\nenvironment = \"test\"\naddrs = [\"{}\"]\n\
         [[routes]]\nhost = \"app.test\"\npath_prefix = \"/at-once\"\nupstream = \"at_once\"\n\
         [[routes]]\nhost = \"app.test\"\npath_prefix = \"/later\"\nupstream = \"later\"\n",
        at_once.addr, later.addr
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
            until("the upstream closes its connection", async || {
                later.closed.load(Ordering::SeqCst) >= sent
            })
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(at_once.accepted.load(Ordering::SeqCst), sent);
    assert_eq!(later.accepted.load(Ordering::SeqCst), sent);
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
    until(
        "an unused upstream connection outlived upstream_idle_timeout",
        async || setup.app.open_connections() == 0,
    )
    .await;
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
    let poisoning = raw_upstream(answer, None).await;
    let extra = format!(
        "[upstreams.poisoning]\nenvironment = \"test\"\naddrs = [\"{}\"]\n\
         [[routes]]\nhost = \"app.test\"\npath_prefix = \"/p\"\nupstream = \"poisoning\"\n",
        poisoning.addr
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
        poisoning.accepted.load(Ordering::SeqCst),
        asked,
        "a connection that sent unasked bytes was used again"
    );
}

/// The upstream's requests in flight, from the proxy's metrics.
async fn outstanding(admin: std::net::SocketAddr) -> u64 {
    let metrics = support::metrics(admin).await;
    metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_upstream_outstanding{upstream=\"app\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn a_client_leaving_mid_response_closes_its_upstream_connection() {
    let setup = Setup::new().await;
    let proxy = setup.start("[admin]\nlisten = \"127.0.0.1:0\"\n").await;
    let admin = proxy.admin_addr.unwrap();
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        // 64 MiB: far more than the sockets between the three can hold.
        let req = request("GET", "localhost", "/bytes/67108864")
            .body(Full::default())
            .unwrap();
        let mut response = client.start(req).await;
        let first = tokio::time::timeout(WAIT, response.body_mut().frame())
            .await
            .expect("a first frame in time");
        assert!(first.is_some_and(|f| f.is_ok()), "h2={h2}");
        assert_eq!(outstanding(admin).await, 1, "h2={h2}");
        assert_eq!(setup.app.open_connections(), 1, "h2={h2}");
        let accepted = setup.app.accepted();
        // HTTP/1.1: the client closes its connection; HTTP/2: it resets the stream only.
        drop(response);
        if !h2 {
            drop(client);
        }
        until(
            &format!("h2={h2}: the upstream connection stayed open"),
            async || setup.app.open_connections() == 0,
        )
        .await;
        until(&format!("h2={h2}: the request still counts"), async || {
            outstanding(admin).await == 0
        })
        .await;
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        assert_eq!(client.get("localhost", "/echo").await.status, 200);
        assert_eq!(setup.app.accepted(), accepted + 1, "h2={h2}");
    }
}

#[tokio::test]
async fn a_connection_answered_before_its_request_body_ended_is_used_again_after_it() {
    let setup = Setup::new().await;
    let early = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly", None).await;
    let extra = format!(
        "[upstreams.early]\nenvironment = \"test\"\naddrs = [\"{}\"]\n\
         [[routes]]\nhost = \"app.test\"\npath_prefix = \"/early\"\nupstream = \"early\"\n",
        early.addr
    );
    let proxy = setup.start(&extra).await;
    let mut tls = tls_connect(
        proxy.https_addr,
        "app.test",
        setup.pki.client(&[b"http/1.1"]),
    )
    .await
    .unwrap();
    let body = vec![b'b'; 100_000];
    let head = "POST /early HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..1000]).await.unwrap();
    // The answer comes while most of the body is still to be sent.
    let answer = read_response(&mut tls).await;
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    assert!(answer.ends_with("early"), "{answer}");
    tls.write_all(&body[1000..]).await.unwrap();
    until("the rest of the body went up", async || {
        early.body_bytes.load(Ordering::SeqCst) == body.len()
    })
    .await;
    // The connection goes back to the pool from its own task once the body is written; the
    // next request on this client could otherwise come first (generously, for a loaded CI).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let get = "GET /early HTTP/1.1\r\nHost: app.test\r\n\r\n";
    tls.write_all(get.as_bytes()).await.unwrap();
    let answer = read_response(&mut tls).await;
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    assert_eq!(
        early.accepted.load(Ordering::SeqCst),
        1,
        "the connection was not used again once its request body had ended"
    );
}
