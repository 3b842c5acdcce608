//! The gateway for internal tools, tried with real employee certificates (a test employee CA
//! from rcgen). It proves that:
//! - an allowed user (by name or group) reaches an internal route and the upstream learns who
//!   from `X-Portcullis-User`, never from a client-sent copy or `X-Forwarded-Client-Cert`;
//! - a user not granted, an unconfigured person, no certificate, an untrusted CA, an expired or
//!   a revoked certificate are refused (403, or no handshake where the host requires one);
//! - a host mixing public and internal routes serves the public ones without a certificate and
//!   answers 403 on the internal ones;
//! - SNI of a public host with the Host of an internal one is 421;
//! - identity-bearing hosts resume no TLS session, so no session carries an identity anywhere;
//! - TOTP: the form, a wrong code, a right code (session cookie, never forwarded), a replayed code;
//! - every decision is in the audit trail, no employee name is in the access log, and
//!   `portcullis access-report` summarises the trail, idle users and unused grants;
//! - bad gateway configs are refused with their keys.

mod support;

use http_body_util::Full;
use support::employees::{Employees, client, gateway_toml};
use support::upstream::seen;
use support::{Setup, config_from, get, request, start_toml, strings, tls_connect};

/// `[log] path = "route"` holds for the audit trail too: an employee's line names the route's
/// prefix, never the path typed after it.
#[tokio::test]
async fn route_mode_keeps_typed_paths_out_of_the_audit_trail() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    // `setup.toml` appends inside its `[log]` table first.
    let toml = setup.toml(&format!(
        "path = \"route\"\n{}",
        gateway_toml(&setup, &employees, 666)
    ));
    let proxy = start_toml(&toml).await;
    let mixed = "mixed.corp.test";
    let mut alice = support::h1_with(
        proxy.https_addr,
        mixed,
        client(&setup, Some(employees.valid("alice", 1))),
    )
    .await
    .unwrap();
    let typed = "/admin/reports/quarterly-secret-plan";
    assert_eq!(
        get(&mut alice, mixed, typed, &[]).await.unwrap().status,
        200
    );
    assert!(proxy.shutdown().await);
    let audit = setup.audit();
    let access = audit
        .iter()
        .find(|r| r["event"] == "access" && r["user"] == "alice")
        .unwrap_or_else(|| panic!("no access line: {audit:?}"));
    assert_eq!(access["path"], "/admin");
    let everything = format!(
        "{}\n{}",
        setup.audit_text(),
        setup.access_lines().join("\n")
    );
    assert!(!everything.contains("quarterly"), "{everything}");
}

#[tokio::test]
async fn identities_grants_and_certificate_failures() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let proxy = start_toml(&setup.toml(&gateway_toml(&setup, &employees, 666))).await;
    let addr = proxy.https_addr;
    let tools = "tools.corp.test";

    let mut alice = support::h1_with(
        addr,
        tools,
        client(&setup, Some(employees.valid("alice", 1))),
    )
    .await
    .unwrap();
    let answer = get(
        &mut alice,
        tools,
        "/",
        &[
            ("x-portcullis-user", "root"),
            ("x-forwarded-client-cert", "Hash=forged"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(seen(&answer.text(), "x-portcullis-user"), ["alice"]);
    assert!(seen(&answer.text(), "x-forwarded-client-cert").is_empty());

    let mut bob = support::h1_with(addr, tools, client(&setup, Some(employees.valid("bob", 2))))
        .await
        .unwrap();
    assert_eq!(
        get(&mut bob, tools, "/", &[]).await.unwrap().status,
        200,
        "group grant"
    );
    for (name, serial) in [("carol", 3), ("mallory", 4)] {
        let mut other = support::h1_with(
            addr,
            tools,
            client(&setup, Some(employees.valid(name, serial))),
        )
        .await
        .unwrap();
        assert_eq!(
            get(&mut other, tools, "/", &[]).await.unwrap().status,
            403,
            "{name}"
        );
    }

    let stranger_ca = Employees::new();
    let refused = [
        ("no certificate", None),
        (
            "untrusted CA",
            Some(employees.person("alice", 5, false, &stranger_ca.ca)),
        ),
        (
            "expired",
            Some(employees.person("alice", 6, true, &employees.ca)),
        ),
        ("revoked", Some(employees.valid("bob", 666))),
    ];
    for (what, identity) in refused {
        let served = support::status_with(addr, tools, "/", client(&setup, identity)).await;
        assert_eq!(
            served, None,
            "{what}: the required-certificate host served a request"
        );
    }

    let mixed = "mixed.corp.test";
    let mut anonymous = support::h1_with(addr, mixed, client(&setup, None))
        .await
        .unwrap();
    assert_eq!(
        get(&mut anonymous, mixed, "/", &[]).await.unwrap().status,
        200
    );
    assert_eq!(
        get(&mut anonymous, mixed, "/admin", &[])
            .await
            .unwrap()
            .status,
        403
    );
    let mut alice_mixed = support::h1_with(
        addr,
        mixed,
        client(&setup, Some(employees.valid("alice", 7))),
    )
    .await
    .unwrap();
    let admitted = get(&mut alice_mixed, mixed, "/admin", &[]).await.unwrap();
    assert_eq!(admitted.status, 200);
    let admitted_id = admitted.header("x-request-id").unwrap().to_owned();

    let mut public = support::h1_with(addr, "www.corp.test", client(&setup, None))
        .await
        .unwrap();
    assert_eq!(
        get(&mut public, tools, "/", &[]).await.unwrap().status,
        421,
        "SNI of a public host, Host of an internal one"
    );

    let resuming = client(&setup, Some(employees.valid("alice", 8)));
    drop(
        support::h1_with(addr, tools, resuming.clone())
            .await
            .unwrap(),
    );
    for host in [tools, mixed] {
        let again = tls_connect(addr, host, resuming.clone()).await.unwrap();
        assert_eq!(
            again.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "{host} resumed a session"
        );
    }
    assert!(proxy.shutdown().await);

    let audit = setup.audit_text();
    for expected in [
        "\"user\":\"alice\"",
        "\"decision\":\"allowed\"",
        "\"user\":\"carol\"",
        "\"event\":\"denied\"",
        "not granted on this route",
        "not a configured user",
        "no client certificate",
    ] {
        assert!(audit.contains(expected), "audit lacks {expected}:\n{audit}");
    }
    // The audit line and the access line of one request share its id, as the client saw it.
    let audited = setup.audit();
    assert!(
        audited.iter().any(|r| r["event"] == "access"
            && r["user"] == "alice"
            && r["request_id"] == admitted_id.as_str()),
        "no audit line with {admitted_id}: {audited:?}"
    );
    let access = setup.access_lines().join("\n");
    assert!(access.contains(&admitted_id), "{access}");
    for name in ["alice", "bob", "carol", "mallory"] {
        assert!(!access.contains(name), "{name} leaked into the access log");
    }

    let file = setup.pki.dir.path().join("gateway.toml");
    std::fs::write(&file, setup.toml(&gateway_toml(&setup, &employees, 666))).unwrap();
    let file_arg = file.to_str().unwrap();
    let json =
        support::portcullis_ok(&["access-report", "-c", file_arg, "--since", "1d", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        report["users"]["alice"]["requests"].as_u64().unwrap() >= 2,
        "{report:#}"
    );
    assert!(
        report["users"]["carol"]["denials"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    assert!(
        report["idle_users"]
            .as_array()
            .unwrap()
            .contains(&"dave".into()),
        "{report:#}"
    );
    assert!(
        report["unused_grants"]
            .as_array()
            .unwrap()
            .contains(&"mfa.corp.test/: alice".into()),
        "{report:#}"
    );
    let check = support::portcullis_ok(&["check", "-c", file_arg]);
    assert!(
        check.contains("internal tools.corp.test/: client certificate; allowed: alice, group:ops"),
        "{check}"
    );
    assert!(
        check.contains("internal mfa.corp.test/: client certificate + TOTP; allowed: alice"),
        "{check}"
    );
    let table = support::portcullis_ok(&["access-report", "-c", file_arg, "--since", "1d"]);
    assert!(
        table.contains("candidates for revocation") && table.contains("dave"),
        "{table}"
    );
}

#[tokio::test]
async fn second_factor_form_session_and_replay() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let proxy = start_toml(&setup.toml(&gateway_toml(&setup, &employees, 666))).await;
    let host = "mfa.corp.test";
    let config = client(&setup, Some(employees.valid("alice", 1)));
    let mut alice = support::h1_with(proxy.https_addr, host, config.clone())
        .await
        .unwrap();
    let form = get(&mut alice, host, "/tool", &[]).await.unwrap();
    assert_eq!(form.status, 401);
    assert!(form.text().contains("name=code") && form.text().contains("value=\"/tool\""));

    let post = |code: String| {
        request("POST", host, "/.portcullis/mfa")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(bytes::Bytes::from(format!(
                "code={code}&route=mfa.corp.test%2F&return=%2Ftool"
            ))))
            .unwrap()
    };
    alice.ready().await.unwrap();
    let wrong = support::collect(alice.send_request(post("000000".into())).await.unwrap()).await;
    assert_eq!(wrong.status, 403);
    let code = employees.code(0);
    let mut fresh = support::h1_with(proxy.https_addr, host, config.clone())
        .await
        .unwrap();
    let passed = support::collect(fresh.send_request(post(code.clone())).await.unwrap()).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    assert_eq!(passed.header("location"), Some("/tool"));
    let cookie = passed.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.starts_with("__Host-portcullis-mfa-")
            && cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/")
            && !cookie.to_ascii_lowercase().contains("domain="),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();

    let mut replay = support::h1_with(proxy.https_addr, host, config.clone())
        .await
        .unwrap();
    let replayed = support::collect(replay.send_request(post(code)).await.unwrap()).await;
    assert_eq!(replayed.status, 403, "a replayed code was accepted");

    let mut with_session = support::h1_with(proxy.https_addr, host, config)
        .await
        .unwrap();
    let cookies = format!("{session}; theme=dark");
    let through = get(&mut with_session, host, "/tool", &[("cookie", &cookies)])
        .await
        .unwrap();
    assert_eq!(through.status, 200);
    assert_eq!(
        seen(&through.text(), "cookie"),
        ["theme=dark"],
        "the session cookie reached the upstream"
    );

    let mut bob = support::h1_with(
        proxy.https_addr,
        host,
        client(&setup, Some(employees.valid("alice", 9))),
    )
    .await
    .unwrap();
    assert_eq!(
        get(&mut bob, host, "/tool", &[("cookie", &session)])
            .await
            .unwrap()
            .status,
        401,
        "a session is bound to its certificate"
    );
}

#[tokio::test]
async fn bad_gateway_configs_are_refused_by_key() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let good = setup.config().merge(&gateway_toml(&setup, &employees, 666));
    assert!(config_from(&good.text()).is_ok());
    let open_secret = employees.secret_file(0o644);
    let cases = [
        (
            good.clone().set(
                "gateway.users.alice.totp_secret_file",
                open_secret.display().to_string(),
            ),
            "gateway.users.alice.totp_secret_file",
        ),
        (
            good.clone().set("routes[4].allow[1]", "group:nobody"),
            "routes[4].allow[1]",
        ),
        (
            good.clone().set("routes[7].allow", strings(&["bob"])),
            "routes[7].mfa",
        ),
        (
            good.clone().set("routes[8].allow", strings(&["alice"])),
            "routes[8].allow",
        ),
        (
            // Filed under its own key, not under `allow`.
            good.clone().set("routes[8].mfa", true),
            "routes[8].mfa",
        ),
    ];
    for (toml, key) in cases {
        support::assert_refused(&toml.text(), key);
    }
    let no_gateway = setup.toml("[[routes]]\nhost = \"app.test\"\npath_prefix = \"/x\"\nupstream = \"app\"\ninternal = true\n");
    support::assert_refused(&no_gateway, "routes[4].internal");
}
