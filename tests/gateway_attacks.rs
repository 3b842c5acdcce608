//! The gateway attacked from outside, as someone holding one employee certificate and a loopback
//! socket would. Each test is one way around the gateway that an earlier version let through
//! (issue #9), kept so it stays closed:
//! 1. the MFA form on a prefixed internal route never reaches the public upstream of `/`, and
//!    the employee passes (`mfa_form_on_a_prefixed_route_stays_in_the_proxy`);
//! 2. wrong TOTP codes lock the user out across connections, with one audit line per lockout
//!    (`totp_guesses_are_locked_out_across_connections`);
//! 3. `Connection: X-Portcullis-User` cannot remove the identity header
//!    (`connection_header_cannot_strip_the_identity`);
//! 4. a reload reaches open connections: a removed grant is 403 on the next request of a
//!    keep-alive connection, and a connection whose certificate a new CRL revokes is cut
//!    (`reload_reaches_open_connections`);
//! 5. path spellings an upstream reads as `/admin` are judged by the `/admin` gateway
//!    (`path_spellings_cannot_walk_past_an_internal_prefix`);
//! 6. the MFA cookie is never forwarded and is bound to its host and route
//!    (`mfa_cookie_is_bound_and_never_forwarded`);
//! 7. `return` cannot send the employee off-site after the form (`mfa_return_stays_on_the_route`);
//! 8. anonymous denials are aggregated, not written one line each
//!    (`anonymous_denials_are_aggregated`);
//! 10. an expired CRL fails closed and says so (`expired_crl_fails_closed`).
//!
//! Item 9, the admin listener, is attacked in `tests/admin.rs`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::Full;
use support::employees::{Employees, client};
use support::upstream::{Upstream, seen};
use support::{Answer, H1, Setup, get, request};
use tokio::io::AsyncWriteExt;

/// A proxy in front of a public upstream (`app`) and an internal one (`tools`).
struct Rig {
    setup: Setup,
    employees: Employees,
    tools: Upstream,
}

impl Rig {
    async fn new() -> Self {
        Self {
            setup: Setup::new().await,
            employees: Employees::new(),
            tools: Upstream::start().await,
        }
    }

    /// `tools.corp.test` grants `tools_allow`; the CRL revokes `revoked` and expires in
    /// `crl_until`. The form's rate limit per address is raised: the lockout tests post more
    /// forms from one address than it lets through.
    fn toml(&self, tools_allow: &str, revoked: &[u64], crl_until: i32) -> String {
        let internal_cert = self.setup.pki.extra_certificate("corp", &["*.corp.test"]);
        let secret = self.employees.secret_file(0o600);
        let crl = self.employees.crl(revoked, crl_until);
        let routes = [
            ("mixed.corp.test", "/", "app", ""),
            ("mixed.corp.test", "/admin", "tools", "allow = [\"alice\", \"group:ops\"]"),
            ("mixed.corp.test", "/mfa", "tools", "allow = [\"alice\", \"erin\"]\nmfa = true"),
            ("tools.corp.test", "/", "tools", tools_allow),
            ("other.corp.test", "/", "tools", "allow = [\"alice\"]\nmfa = true"),
        ]
        .iter()
        .map(|(host, prefix, upstream, access)| {
            let internal = if access.is_empty() { "" } else { "internal = true\n" };
            format!("[[routes]]\nhost = \"{host}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{internal}{access}\n")
        })
        .collect::<String>();
        self.setup.toml(&format!(
            "{internal_cert}[upstreams.tools]\nenvironment = \"test\"\naddrs = [\"{tools}\"]\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [limits]\nheader_read_timeout = \"60s\"\n\
             [gateway]\nclient_ca = \"{ca}\"\ncrls = [\"{crl}\"]\nmfa_max_failures = 3\nmfa_lockout = \"2s\"\n\
             mfa_rate = {{ rate = \"600/m\", burst = 100 }}\n\
             [gateway.users.alice]\ngroups = [\"dev\"]\ntotp_secret_file = \"{secret}\"\n\
             [gateway.users.erin]\ngroups = [\"dev\"]\ntotp_secret_file = \"{secret}\"\n\
             [gateway.users.bob]\ngroups = [\"ops\"]\n{routes}",
            tools = self.tools.addr,
            ca = self.employees.dir.path().join("ca.pem").display(),
            crl = crl.display(),
            secret = secret.display(),
        ))
    }

    /// A code that is not the current one, different for each `n`.
    fn wrong_code(&self, n: u32) -> String {
        let right = self.employees.code(0).parse::<u32>().unwrap();
        format!("{:06}", (right + 500_000 + n) % 1_000_000)
    }

    fn default_toml(&self) -> String {
        self.toml("allow = [\"alice\", \"group:ops\"]", &[666], 2099)
    }

    async fn start(&self) -> portcullis::Running {
        support::start_toml(&self.default_toml()).await
    }

    /// An h1 connection for `sni` with `who`'s certificate (serial `serial`), or none.
    async fn connect(
        &self,
        addr: std::net::SocketAddr,
        sni: &str,
        who: Option<(&str, u64)>,
    ) -> Option<H1> {
        let identity = who.map(|(name, serial)| self.employees.valid(name, serial));
        support::h1_with(addr, sni, client(&self.setup, identity)).await
    }
}

/// Posts the MFA form as a browser would.
async fn post_code(sender: &mut H1, host: &str, fields: &[(&str, &str)]) -> Option<Answer> {
    post_to(sender, host, "/.portcullis/mfa", fields).await
}

async fn post_to(
    sender: &mut H1,
    host: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Option<Answer> {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let request = request("POST", host, path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    sender.ready().await.ok()?;
    Some(support::collect(sender.send_request(request).await.ok()?).await)
}

/// The `name=value` part of a `Set-Cookie`.
fn cookie_pair(answer: &Answer) -> String {
    let cookie = answer.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

/// Passes the form for `route` as `who` with the code `steps` steps from now.
async fn pass(
    rig: &Rig,
    sender: &mut H1,
    host: &str,
    route: &str,
    back: &str,
    steps: i64,
) -> Answer {
    let code = rig.employees.code(steps);
    let answer = post_code(
        sender,
        host,
        &[("code", &code), ("route", route), ("return", back)],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 303, "{}", answer.text());
    answer
}

#[tokio::test]
async fn mfa_form_on_a_prefixed_route_stays_in_the_proxy() {
    let rig = Rig::new().await;
    let proxy = rig.start().await;
    let host = "mixed.corp.test";
    let mut alice = rig
        .connect(proxy.https_addr, host, Some(("alice", 1)))
        .await
        .unwrap();

    let form = get(&mut alice, host, "/mfa/x", &[]).await.unwrap();
    assert_eq!(form.status, 401);
    assert!(
        form.text().contains("action=\"/.portcullis/mfa\""),
        "{}",
        form.text()
    );
    assert!(
        form.text()
            .contains("name=route value=\"mixed.corp.test/mfa\""),
        "{}",
        form.text()
    );

    let passed = pass(&rig, &mut alice, host, "mixed.corp.test/mfa", "/mfa/x", 0).await;
    assert_eq!(passed.header("location"), Some("/mfa/x"));
    let session = cookie_pair(&passed);
    let through = get(&mut alice, host, "/mfa/x", &[("cookie", &session)])
        .await
        .unwrap();
    assert_eq!(through.status, 200, "{}", through.text());
    assert_eq!(seen(&through.text(), "x-portcullis-user"), ["alice"]);

    // Every spelling of the reserved namespace stays in the proxy, on every host.
    for path in [
        "/.portcullis/mfa",
        "/.PORTCULLIS/mfa",
        "/.portcullis;x/mfa",
        "/.portcullis/other",
        "/.Portcullis",
    ] {
        for host in [host, "app.test"] {
            let sni_ok = if host == "app.test" {
                support::h1(proxy.https_addr, host, &rig.setup.pki).await
            } else {
                rig.connect(proxy.https_addr, host, None).await.unwrap()
            };
            let mut sender = sni_ok;
            let answer = post_to(
                &mut sender,
                host,
                path,
                &[("code", "123456"), ("return", "/")],
            )
            .await
            .unwrap();
            assert_eq!(answer.status, 404, "{host}{path}");
        }
    }
    let leaked: Vec<String> = rig
        .setup
        .app
        .targets()
        .into_iter()
        .chain(rig.tools.targets())
        .filter(|t| t.to_ascii_lowercase().contains("portcullis"))
        .collect();
    assert!(leaked.is_empty(), "reached an upstream: {leaked:?}");
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn totp_guesses_are_locked_out_across_connections() {
    let rig = Rig::new().await;
    let proxy = rig.start().await;
    let host = "other.corp.test";
    let route = "other.corp.test/";
    let wrong = |n: u32| rig.wrong_code(n);
    let mut first = rig
        .connect(proxy.https_addr, host, Some(("alice", 1)))
        .await
        .unwrap();
    for n in 0..2 {
        let answer = post_code(
            &mut first,
            host,
            &[("code", &wrong(n)), ("route", route), ("return", "/")],
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 403);
    }
    // The third wrong code, on another connection with another certificate of hers, locks.
    let mut second = rig
        .connect(proxy.https_addr, host, Some(("alice", 2)))
        .await
        .unwrap();
    let answer = post_code(
        &mut second,
        host,
        &[("code", &wrong(2)), ("route", route), ("return", "/")],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 403);
    // Locked: even the right code is not looked at, on any connection.
    for sender in [&mut first, &mut second] {
        for _ in 0..20 {
            let code = rig.employees.code(0);
            let answer = post_code(
                sender,
                host,
                &[("code", &code), ("route", route), ("return", "/")],
            )
            .await
            .unwrap();
            assert_eq!(answer.status, 429, "a code was judged during the lockout");
            let retry: u64 = answer.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "retry-after {retry}");
        }
    }
    // The lockout is two seconds here (mfa_lockout = "2s"); after it, the right code passes.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    pass(&rig, &mut first, host, route, "/", 0).await;
    assert!(proxy.shutdown().await);

    let audit = rig.setup.audit();
    let decisions = |d: &str| {
        audit
            .iter()
            .filter(|r| r["decision"] == d)
            .collect::<Vec<_>>()
    };
    assert_eq!(decisions("mfa_failed").len(), 3);
    let locks = decisions("mfa_locked");
    assert_eq!(locks.len(), 1, "one line per lockout: {audit:#?}");
    assert!(
        locks[0]["reason"]
            .as_str()
            .unwrap()
            .contains("3 wrong TOTP codes"),
        "{:?}",
        locks[0]
    );
    let locked_out: u64 = audit
        .iter()
        .filter(|r| r["event"] == "denied" && r["reason"].as_str().unwrap().contains("locked out"))
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        locked_out, 40,
        "attempts during the lockout are counted, not written"
    );
    assert_eq!(decisions("mfa_passed").len(), 1);
}

#[tokio::test]
async fn mfa_forms_from_one_address_are_limited_whoever_posts_them() {
    let rig = Rig::new().await;
    let toml = support::ConfigToml::parse(&rig.default_toml())
        .merge("[gateway]\nmfa_rate = { rate = \"1/m\", burst = 3 }\n")
        .text();
    let proxy = support::start_toml(&toml).await;
    let (host, route) = ("mixed.corp.test", "mixed.corp.test/mfa");
    let wrong = |n: u32| rig.wrong_code(n);
    // Two people's certificates from one address, each below their own lockout.
    let mut alice = rig
        .connect(proxy.https_addr, host, Some(("alice", 1)))
        .await
        .unwrap();
    let mut erin = rig
        .connect(proxy.https_addr, host, Some(("erin", 1)))
        .await
        .unwrap();
    for (n, who) in [(0, "alice"), (1, "erin"), (2, "alice")] {
        let sender = if who == "alice" {
            &mut alice
        } else {
            &mut erin
        };
        let code = wrong(n);
        let fields = [
            ("code", code.as_str()),
            ("route", route),
            ("return", "/mfa"),
        ];
        assert_eq!(
            post_code(sender, host, &fields).await.unwrap().status,
            403,
            "{who}"
        );
    }
    // The fourth form within the minute is not read: not even the right code is judged.
    let code = rig.employees.code(0);
    let right = [
        ("code", code.as_str()),
        ("route", route),
        ("return", "/mfa"),
    ];
    let answer = post_code(&mut erin, host, &right).await.unwrap();
    assert_eq!(answer.status, 429);
    let retry: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (3..=60).contains(&retry),
        "retry-after {retry}: the form's limit, not a lockout"
    );
    assert!(proxy.shutdown().await);
    let audit = rig.setup.audit();
    let judged = audit
        .iter()
        .filter(|r| r["decision"] == "mfa_failed" || r["decision"] == "mfa_passed")
        .count();
    assert_eq!(judged, 3, "{audit:#?}");
}

#[tokio::test]
async fn connection_header_cannot_strip_the_identity() {
    let rig = Rig::new().await;
    let proxy = rig.start().await;
    let host = "tools.corp.test";
    let mut alice = rig
        .connect(proxy.https_addr, host, Some(("alice", 1)))
        .await
        .unwrap();
    let answer = get(
        &mut alice,
        host,
        "/",
        &[
            (
                "connection",
                "X-Portcullis-User, X-Forwarded-For, X-Forwarded-Proto",
            ),
            ("x-portcullis-user", "root"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let echo = answer.text();
    assert_eq!(seen(&echo, "x-portcullis-user"), ["alice"], "{echo}");
    assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"], "{echo}");
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"], "{echo}");
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn reload_reaches_open_connections() {
    let rig = Rig::new().await;
    let file: PathBuf = rig.setup.pki.dir.path().join("gateway.toml");
    std::fs::write(&file, rig.default_toml()).unwrap();
    let proxy = support::start_file(&file).await;
    let tools = "tools.corp.test";

    let mut alice = rig
        .connect(proxy.https_addr, tools, Some(("alice", 1)))
        .await
        .unwrap();
    assert_eq!(get(&mut alice, tools, "/", &[]).await.unwrap().status, 200);
    let mut alice_public = rig
        .connect(proxy.https_addr, "mixed.corp.test", Some(("alice", 1)))
        .await
        .unwrap();
    let mut bob_tls = support::tls_connect(
        proxy.https_addr,
        tools,
        client(&rig.setup, Some(rig.employees.valid("bob", 2))),
    )
    .await
    .unwrap();
    bob_tls
        .write_all(b"GET / HTTP/1.1\r\nHost: tools.corp.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        support::status_of(&support::read_response(&mut bob_tls).await),
        Some(200)
    );

    // Alice loses her grant on tools; bob's certificate is revoked.
    std::fs::write(&file, rig.toml("allow = [\"group:ops\"]", &[2], 2099)).unwrap();
    proxy
        .reload_file(portcullis::audit::Trigger::Signal)
        .unwrap();

    assert_eq!(
        get(&mut alice, tools, "/", &[]).await.unwrap().status,
        403,
        "a removed grant still served an open connection"
    );
    assert_eq!(
        get(&mut alice_public, "mixed.corp.test", "/", &[])
            .await
            .unwrap()
            .status,
        200,
        "a trusted certificate's connection stays"
    );
    assert!(
        support::closed_by_peer(&mut bob_tls).await,
        "the revoked certificate's connection was not cut"
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn path_spellings_cannot_walk_past_an_internal_prefix() {
    let rig = Rig::new().await;
    let proxy = rig.start().await;
    let host = "mixed.corp.test";
    let spellings = [
        "/admin;jsessionid=x",
        "/admin;/x",
        "/ADMIN",
        "/Admin/x",
        "/admin%2e",
        "/admin.",
        "/admin%09",
        "/admin%20",
        "/admin..%20/",
        "/public/..;/admin",
        "/x/..;/ADMIN/y",
    ];
    let mut anonymous = rig.connect(proxy.https_addr, host, None).await.unwrap();
    for path in spellings {
        let answer = get(&mut anonymous, host, path, &[]).await.unwrap();
        assert_eq!(answer.status, 403, "{path} walked past the /admin gateway");
    }
    // The same over HTTP/2, where the path travels as `:path`.
    let mut h2 = support::Client::connect(true, proxy.https_addr, host, &rig.setup.pki).await;
    for path in spellings {
        let answer = h2.get(host, path).await;
        assert_eq!(
            answer.status, 403,
            "h2 {path} walked past the /admin gateway"
        );
    }
    assert_eq!(
        rig.setup.app.hits(),
        0,
        "the public upstream got an /admin spelling"
    );
    assert_eq!(rig.tools.hits(), 0);
    // The gateway judges them: a granted employee reaches the internal upstream.
    let mut alice = rig
        .connect(proxy.https_addr, host, Some(("alice", 1)))
        .await
        .unwrap();
    for path in spellings {
        let answer = get(&mut alice, host, path, &[]).await.unwrap();
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(seen(&answer.text(), "x-portcullis-user"), ["alice"]);
    }
    assert_eq!(rig.tools.hits(), spellings.len());
    // Not over-broad: other names stay public.
    for path in ["/administrator", "/adm", "/x/admin"] {
        assert_eq!(
            get(&mut anonymous, host, path, &[]).await.unwrap().status,
            200,
            "{path}"
        );
    }
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn mfa_cookie_is_bound_and_never_forwarded() {
    let rig = Rig::new().await;
    let proxy = rig.start().await;
    let (mixed, other) = ("mixed.corp.test", "other.corp.test");
    // One certificate for both hosts, so that only the host and route binding can refuse.
    let alice = client(&rig.setup, Some(rig.employees.valid("alice", 1)));
    let mut on_mixed = support::h1_with(proxy.https_addr, mixed, alice.clone())
        .await
        .unwrap();
    let mut on_other = support::h1_with(proxy.https_addr, other, alice)
        .await
        .unwrap();
    let mixed_session =
        cookie_pair(&pass(&rig, &mut on_mixed, mixed, "mixed.corp.test/mfa", "/mfa", 0).await);
    let other_session =
        cookie_pair(&pass(&rig, &mut on_other, other, "other.corp.test/", "/", 1).await);
    let (mixed_name, mixed_value) = mixed_session.split_once('=').unwrap();
    let (other_name, _) = other_session.split_once('=').unwrap();
    assert!(mixed_name.starts_with("__Host-") && mixed_name != other_name);

    // Never forwarded, on the MFA route or a public route of the same host, in any case.
    let shouting = mixed_session.replacen("__Host-portcullis", "__HOST-PORTCULLIS", 1);
    for path in ["/mfa/x", "/", "/admin"] {
        let cookies = format!("{mixed_session}; {shouting}; theme=dark");
        let answer = get(&mut on_mixed, mixed, path, &[("cookie", &cookies)])
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(seen(&answer.text(), "cookie"), ["theme=dark"], "{path}");
    }
    // Worth nothing on another host's MFA route, even under that route's cookie name.
    let moved = format!("{other_name}={mixed_value}");
    assert_eq!(
        get(&mut on_other, other, "/", &[("cookie", &moved)])
            .await
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        get(&mut on_other, other, "/", &[("cookie", &other_session)])
            .await
            .unwrap()
            .status,
        200
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn mfa_return_stays_on_the_route() {
    let rig = Rig::new().await;
    let proxy = rig.start().await;
    let host = "mixed.corp.test";
    let route = "mixed.corp.test/mfa";
    let attempts = [
        ("/%09/evil.example/", "/mfa"),
        ("//evil.example/", "/mfa"),
        ("/\\evil.example", "/mfa"),
        ("https://evil.example/", "/mfa"),
        ("/admin", "/mfa"),
        ("/mfa/ok?x=1", "/mfa/ok?x=1"),
    ];
    let mut alice = rig
        .connect(proxy.https_addr, host, Some(("alice", 1)))
        .await
        .unwrap();
    let mut erin = rig
        .connect(proxy.https_addr, host, Some(("erin", 3)))
        .await
        .unwrap();
    for (i, (back, expected)) in attempts.iter().enumerate() {
        // One fresh code per pass: alice and erin take turns through the next time steps.
        let sender = if i % 2 == 0 { &mut alice } else { &mut erin };
        let passed = pass(&rig, sender, host, route, back, i as i64 / 2 - 1).await;
        assert_eq!(
            passed.header("location"),
            Some(*expected),
            "return={back:?}"
        );
    }
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn anonymous_denials_are_aggregated() {
    let rig = Rig::new().await;
    let proxy = rig.start().await;
    let host = "mixed.corp.test";
    let mut anonymous = rig.connect(proxy.https_addr, host, None).await.unwrap();
    for _ in 0..300 {
        assert_eq!(
            get(&mut anonymous, host, "/admin", &[])
                .await
                .unwrap()
                .status,
            403
        );
    }
    let mut alice = rig
        .connect(proxy.https_addr, host, Some(("alice", 1)))
        .await
        .unwrap();
    assert_eq!(
        get(&mut alice, host, "/admin", &[]).await.unwrap().status,
        200
    );
    assert!(proxy.shutdown().await);

    let audit = rig.setup.audit();
    let denied: Vec<&serde_json::Value> = audit.iter().filter(|r| r["event"] == "denied").collect();
    assert!(
        denied.len() <= 2,
        "one line per minute, not per request: {}",
        denied.len()
    );
    let count: u64 = denied.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(count, 300);
    assert!(
        denied
            .iter()
            .all(|r| r["user"] == "-" && r["route"] == "mixed.corp.test/admin")
    );
    assert_eq!(
        audit.iter().filter(|r| r["decision"] == "allowed").count(),
        1,
        "decisions that matter are written one by one"
    );
}

#[tokio::test]
async fn expired_crl_fails_closed() {
    let rig = Rig::new().await;
    let toml = rig.toml("allow = [\"alice\", \"group:ops\"]", &[666], 2025);
    let proxy = support::start_toml(&toml).await;
    let tools = "tools.corp.test";
    let alice = client(&rig.setup, Some(rig.employees.valid("alice", 1)));
    let served = support::status_with(proxy.https_addr, tools, "/", alice).await;
    assert_eq!(
        served, None,
        "a certificate was accepted under an expired CRL"
    );
    let metrics = support::raw_tcp(
        proxy.admin_addr.unwrap(),
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        metrics.contains("portcullis_gateway_crl_expired 1"),
        "{metrics}"
    );
    assert!(proxy.shutdown().await);

    let file = rig.setup.pki.dir.path().join("expired.toml");
    std::fs::write(&file, &toml).unwrap();
    let check = support::portcullis_ok(&["check", "-c", file.to_str().unwrap()]);
    assert!(
        check.contains("gateway.crls[0]") && check.contains("expired"),
        "{check}"
    );
}
