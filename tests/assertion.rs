//! `Portcullis-Assertion`, verified from outside as an internal app would: with a stock JWT
//! library (PyJWT, `tests/support/verify_assertion.py`) against the key set the gateway serves
//! at `/.portcullis/jwks.json`. It proves that:
//! - a route with `assertion = true` sends its upstream exactly one assertion, the gateway's,
//!   whatever the client sent, naming the employee, their groups, the route, the host, the
//!   upstream as audience and the certificate's thumbprint;
//! - the same token presented to another upstream (another audience), a token whose claims
//!   were changed, an unsigned one and one past its short lifetime fail verification;
//! - a client's `Portcullis-Assertion` never reaches an upstream on other routes, over HTTP/1.1
//!   (also named in `Connection`) and HTTP/2.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use support::employees::{Employees, client, gateway_toml};
use support::upstream::{Upstream, seen};
use support::{Client, Setup, get, request, start_toml};

const VERIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/verify_assertion.py"
);

/// The gateway's routes, and two with assertions: to `app` and to `app2`.
fn config(setup: &Setup, employees: &Employees, app2: &Upstream, jwks_file: &Path) -> String {
    let gateway = gateway_toml(setup, employees, 666).replace(
        "[gateway]\n",
        &format!("[gateway]\njwks_file = \"{}\"\n", jwks_file.display()),
    );
    setup.toml(&format!(
        "{}[upstreams.app2]\nenvironment = \"test\"\naddrs = [\"{}\"]\n\
         [[routes]]\nhost = \"signed.corp.test\"\nupstream = \"app\"\ninternal = true\nallow = [\"alice\"]\nassertion = true\n\
         [[routes]]\nhost = \"other.corp.test\"\nupstream = \"app2\"\ninternal = true\nallow = [\"alice\"]\nassertion = true\n",
        gateway,
        app2.addr
    ))
}

/// PyJWT's verdict on `token` for `audience`, with its clock moved by `clock` (a libfaketime
/// offset such as `+2m`) when given: the claims, or the error's name.
fn verify(jwks: &Path, audience: &str, clock: Option<&str>, token: &str) -> Result<Value, String> {
    use std::io::Write;
    let mut command = Command::new("pyjwt-python");
    if let Some(spec) = clock {
        assert!(support::fake_clock(&mut command, spec), "no libfaketime");
    }
    let mut child = command
        .arg(VERIFIER)
        .arg(jwks)
        .arg(audience)
        .arg("0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(serde_json::from_str(&text).unwrap())
    } else {
        Err(text)
    }
}

/// The assertions an upstream saw, from its echo of the request.
fn assertions(echo: &str) -> Vec<String> {
    seen(echo, "portcullis-assertion")
}

#[tokio::test]
async fn upstreams_verify_the_assertion_with_a_stock_jwt_library() {
    if !support::require_tool("pyjwt-python") {
        return;
    }
    let setup = Setup::new().await;
    let employees = Employees::new();
    let app2 = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let proxy = start_toml(&config(&setup, &employees, &app2, &jwks)).await;
    let identity = employees.valid("alice", 1);
    let thumbprint = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &identity.0[0],
    ));
    let alice = client(&setup, Some(identity));

    let mut signed = support::h1_with(proxy.https_addr, "signed.corp.test", alice.clone())
        .await
        .unwrap();
    let set = get(
        &mut signed,
        "signed.corp.test",
        "/.portcullis/jwks.json",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(set.status, 200);
    assert_eq!(set.header("content-type"), Some("application/jwk-set+json"));
    // The same set in `jwks_file`, for upstreams that cannot reach the gateway: what PyJWT reads.
    let deadline = std::time::Instant::now() + support::WAIT;
    while !jwks.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_to_string(&jwks).unwrap(), set.text());

    // A client's own assertion, even one named in `Connection`, is replaced by the gateway's.
    let forged = [
        ("portcullis-assertion", "forged"),
        ("connection", "portcullis-assertion"),
    ];
    let answer = get(&mut signed, "signed.corp.test", "/x", &forged)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let tokens = assertions(&answer.text());
    assert_eq!(tokens.len(), 1, "{}", answer.text());
    let token = &tokens[0];
    let claims = verify(&jwks, "app", None, token).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["groups"], serde_json::json!(["dev"]));
    assert_eq!(claims["host"], "signed.corp.test");
    assert_eq!(claims["aud"], "app");
    assert!(
        claims["route"]
            .as_str()
            .unwrap()
            .starts_with("signed.corp.test")
    );
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint);
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 60);

    // Replayed to another app: its audience is not this one.
    assert_eq!(
        verify(&jwks, "app2", None, token),
        Err("refused: InvalidAudienceError".into())
    );
    let mut other = support::h1_with(proxy.https_addr, "other.corp.test", alice.clone())
        .await
        .unwrap();
    let elsewhere = get(&mut other, "other.corp.test", "/", &[]).await.unwrap();
    let other_token = &assertions(&elsewhere.text())[0];
    assert_eq!(
        verify(&jwks, "app2", None, other_token).unwrap()["aud"],
        "app2"
    );
    assert!(verify(&jwks, "app", None, other_token).is_err());

    // Changed claims keep the old signature; an unsigned token; a token past its lifetime.
    let parts: Vec<&str> = token.split('.').collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let mallory = URL_SAFE_NO_PAD.encode(payload.replace("\"alice\"", "\"mallory\""));
    let changed = format!("{}.{mallory}.{}", parts[0], parts[2]);
    assert_eq!(
        verify(&jwks, "app", None, &changed),
        Err("refused: InvalidSignatureError".into())
    );
    let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"x"}"#);
    assert!(verify(&jwks, "app", None, &format!("{none}.{}.", parts[1])).is_err());
    assert_eq!(
        verify(&jwks, "app", Some("+2m"), token),
        Err("refused: ExpiredSignatureError".into())
    );

    // Elsewhere, a client's assertion reaches no upstream, over h1 and h2.
    for h2 in [false, true] {
        let mut public = Client::connect(h2, proxy.https_addr, "app.test", &setup.pki).await;
        let mut forged = request("GET", "app.test", "/").header("portcullis-assertion", "forged");
        if !h2 {
            forged = forged.header("connection", "portcullis-assertion");
        }
        let answer = public
            .send(forged.body(Full::new(Bytes::new())).unwrap())
            .await;
        assert_eq!(answer.status, 200);
        assert!(assertions(&answer.text()).is_empty(), "{}", answer.text());
    }
    let mut tools = support::h1_with(proxy.https_addr, "tools.corp.test", alice)
        .await
        .unwrap();
    let unsigned = get(&mut tools, "tools.corp.test", "/", &forged)
        .await
        .unwrap();
    assert_eq!(unsigned.status, 200);
    assert!(
        assertions(&unsigned.text()).is_empty(),
        "{}",
        unsigned.text()
    );
    proxy.shutdown().await;
}
