//! Real third-party clients through the proxy: curl over HTTP/1.1 and HTTP/2, and nghttp2's
//! `nghttp`. It proves that ordinary clients negotiate, get HSTS, and reach the upstream.
//!
//! The tools are installed by `.ci/run`; outside CI a missing tool skips its test with a
//! message, inside CI (CI=true) it fails.

mod support;

use std::process::Command;

use support::Setup;

#[tokio::test]
async fn curl_over_h1_and_h2() {
    if !support::require_tool("curl") {
        return;
    }
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let ca = setup.pki.ca_pem.clone();
    let port = proxy.https_addr.port();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let addr = proxy.https_addr;
        let ca = ca.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["-sS", "-i", flag, "--max-time", "10", "--cacert"])
                .arg(&ca)
                .args(["--resolve", &format!("app.test:{port}:{}", addr.ip())])
                .arg(format!("https://app.test:{port}/hello?x=1"))
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with(&format!("HTTP/{version} 200")), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("strict-transport-security: max-age=63072000")
        );
        assert!(text.contains("GET /hello?x=1"), "{text}");
    }
}

#[tokio::test]
async fn nghttp_speaks_h2() {
    if !support::require_tool("nghttp") {
        return;
    }
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let port = proxy.https_addr.port();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("nghttp")
            .args([
                "-v",
                "-t",
                "10",
                &format!("https://127.0.0.1:{port}/nghttp"),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(":status: 200"), "{text}");
    assert!(
        text.contains("strict-transport-security: max-age=63072000"),
        "{text}"
    );
    assert!(text.contains("GET /nghttp"), "{text}");
}
