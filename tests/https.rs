//! The TLS listener as a client sees it, over HTTP/1.1 and HTTP/2. It proves that:
//! - ALPN picks h2 or http/1.1; TLS 1.2 and 1.3 both work;
//! - every response carries our HSTS (proxied, the proxy's own 400/404/421/502, and an
//!   upstream's own HSTS replaced), built from `[hsts]`;
//! - SNI picks the certificate, no SNI gets the first, an unknown SNI fails the handshake;
//! - a Host the presented certificate does not cover gets 421 (no domain fronting);
//! - routing: exact, wildcard, longest prefix on segment boundaries, 404 otherwise;
//! - paths are normalised before routing and forwarding; traversal and encoded separators
//!   get 400 and never reach an upstream.

mod support;

use std::sync::Arc;

use support::upstream::Upstream;
use support::{Client, Setup, start_toml, tls_connect};

const HSTS: &str = "max-age=63072000; includeSubDomains";

#[tokio::test]
async fn alpn_and_tls_versions() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let h2 = tls_connect(
        proxy.https_addr,
        "localhost",
        setup.pki.client(&[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h1 = tls_connect(
        proxy.https_addr,
        "localhost",
        setup.pki.client(&[b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(setup.pki.ca.clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = tls_connect(proxy.https_addr, "localhost", Arc::new(client))
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    }
}

#[tokio::test]
async fn every_response_carries_our_hsts() {
    let setup = Setup::new().await;
    let proxy = setup.start("[upstreams.down]\nenvironment = \"test\"\naddrs = [\"127.0.0.1:1\"]\n[[routes]]\nhost = \"app.test\"\npath_prefix = \"/down\"\nupstream = \"down\"\n").await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        for (host, path, status) in [
            ("localhost", "/", 200),
            ("localhost", "/hop", 200),
            ("localhost", "/a/../../x", 400),
            ("unrouted.test", "/", 404),
            ("evil.example", "/", 421),
            ("app.test", "/down", 502),
        ] {
            let answer = client.get(host, path).await;
            assert_eq!(answer.status, status, "h2={h2} {host}{path}");
            let all: Vec<_> = answer
                .headers
                .get_all("strict-transport-security")
                .iter()
                .collect();
            assert_eq!(all, [HSTS], "h2={h2} {host}{path}");
        }
    }
}

#[tokio::test]
async fn hsts_follows_config() {
    let setup = Setup::new().await;
    let proxy = setup
        .start("[hsts]\nmax_age = 300\ninclude_subdomains = false\npreload = true\n")
        .await;
    let answer = Client::connect(false, proxy.https_addr, "localhost", &setup.pki)
        .await
        .get("localhost", "/")
        .await;
    assert_eq!(
        answer.header("strict-transport-security"),
        Some("max-age=300; preload")
    );
}

#[tokio::test]
async fn sni_selects_certificates_and_unknown_sni_fails() {
    let setup = Setup::new().await;
    let extra = setup.pki.extra_certificate("other", &["other.test"]);
    let proxy = setup.start(&extra).await;
    let other = tls_connect(proxy.https_addr, "other.test", setup.pki.client(&[b"h2"]))
        .await
        .unwrap();
    let presented = other.get_ref().1.peer_certificates().unwrap()[0].clone();
    let default = tls_connect(proxy.https_addr, "127.0.0.1", setup.pki.client(&[b"h2"]))
        .await
        .unwrap();
    let first = default.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(
        presented, first,
        "SNI other.test must select the second certificate"
    );
    assert!(
        tls_connect(
            proxy.https_addr,
            "unknown.example",
            setup.pki.client(&[b"h2"])
        )
        .await
        .is_err(),
        "an SNI no certificate covers must fail the handshake"
    );
}

#[tokio::test]
async fn host_outside_the_presented_certificate_is_misdirected() {
    let setup = Setup::new().await;
    let extra = setup.pki.extra_certificate("other", &["other.test"])
        + "[[routes]]\nhost = \"other.test\"\nupstream = \"app\"\n";
    let proxy = setup.start(&extra).await;
    for h2 in [false, true] {
        let mut fronted = Client::connect(h2, proxy.https_addr, "other.test", &setup.pki).await;
        assert_eq!(fronted.get("other.test", "/").await.status, 200);
        assert_eq!(fronted.get("app.test", "/").await.status, 421, "h2={h2}");
        let mut no_sni = Client::connect(h2, proxy.https_addr, "127.0.0.1", &setup.pki).await;
        assert_eq!(no_sni.get("127.0.0.1", "/").await.status, 200);
        assert_eq!(no_sni.get("other.test", "/").await.status, 421, "h2={h2}");
    }
    assert_eq!(
        setup.app.hits(),
        4,
        "misdirected requests never reach the upstream"
    );
}

#[tokio::test]
async fn routes_by_host_then_longest_prefix() {
    let setup = Setup::new().await;
    let api = Upstream::start().await;
    let extra = format!(
        "[upstreams.api]\nenvironment = \"test\"\naddrs = [\"{}\"]\n[[routes]]\nhost = \"app.test\"\npath_prefix = \"/api\"\nupstream = \"api\"\n",
        api.addr
    );
    let proxy = start_toml(&setup.toml(&extra)).await;
    let mut client = Client::connect(true, proxy.https_addr, "app.test", &setup.pki).await;
    for (path, to_api) in [
        ("/api", true),
        ("/api/v1?x=1", true),
        ("/apix", false),
        ("/", false),
    ] {
        let (app_before, api_before) = (setup.app.hits(), api.hits());
        assert_eq!(client.get("app.test", path).await.status, 200);
        assert_eq!(api.hits() - api_before, usize::from(to_api), "{path}");
        assert_eq!(
            setup.app.hits() - app_before,
            usize::from(!to_api),
            "{path}"
        );
    }
    assert_eq!(client.get("deep.wild.test", "/").await.status, 200);
    assert_eq!(client.get("a.b.wild.test", "/").await.status, 421);
    assert_eq!(client.get("unrouted.test", "/").await.status, 404);
}

#[tokio::test]
async fn paths_are_normalised_once_for_routing_and_forwarding() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        for (sent, forwarded) in [
            ("/a/./b/../c?q=%2F..", "/a/c?q=%2F.."),
            ("//x//y", "/x/y"),
            ("/%7Euser/%61", "/~user/a"),
            ("/caf%c3%a9", "/caf%C3%A9"),
        ] {
            let answer = client.get("localhost", sent).await;
            assert_eq!(answer.status, 200, "{sent}");
            assert_eq!(answer.header("x-seen-target"), Some(forwarded), "{sent}");
        }
        let before = setup.app.hits();
        for bad in [
            "/..",
            "/a/../../etc/passwd",
            "/%2e%2e/etc",
            "/a%2fb",
            "/a%5cb",
            "/a%00b",
            "/a%zz",
        ] {
            assert_eq!(
                client.get("localhost", bad).await.status,
                400,
                "h2={h2} {bad}"
            );
        }
        assert_eq!(
            setup.app.hits(),
            before,
            "refused paths never reach the upstream"
        );
    }
}

#[tokio::test]
async fn backslash_traversal_over_raw_tls_is_refused() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let raw = support::raw_tls(
        proxy.https_addr,
        "localhost",
        &setup.pki,
        b"GET /a/..\\..\\etc HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(support::status_of(&raw), Some(400), "{raw}");
    assert_eq!(setup.app.hits(), 0);
}

#[tokio::test]
async fn responder_routes_answer_themselves_with_hsts_and_a_log_line() {
    let setup = Setup::new().await;
    let extra = "[[routes]]\nhost = \"app.test\"\npath_prefix = \"/healthz\"\nrespond = { status = 200, body = \"ok\" }\n";
    let proxy = setup.start(extra).await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "app.test", &setup.pki).await;
        let answer = client.get("app.test", "/healthz").await;
        assert_eq!(
            (answer.status.as_u16(), answer.text().as_str()),
            (200, "ok")
        );
        assert_eq!(answer.header("strict-transport-security"), Some(HSTS));
    }
    assert_eq!(
        setup.app.hits(),
        0,
        "a responder route reached the upstream"
    );
    assert!(proxy.shutdown().await);
    let lines = setup.access_lines();
    assert_eq!(lines.len(), 2);
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["route"], "app.test/healthz");
    assert_eq!(line["upstream"], serde_json::Value::Null);
    assert_eq!(line["response_bytes"], 2);
}

#[tokio::test]
async fn responder_routes_are_validated() {
    let setup = Setup::new().await;
    for (route, key) in [
        (
            "respond = { status = 200 }\nupstream = \"app\"",
            "routes[4].upstream",
        ),
        ("path_prefix = \"/x\"", "routes[4].upstream"),
        ("respond = { status = 101 }", "routes[4].respond.status"),
        (
            "respond = { status = 700, body = \"x\" }",
            "routes[4].respond.status",
        ),
    ] {
        let toml = setup.toml(&format!("[[routes]]\nhost = \"app.test\"\n{route}\n"));
        support::assert_refused(&toml, key);
    }
}
