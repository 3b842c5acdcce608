//! SSH and other byte streams through the gateway: `CONNECT` tunnels, tried from outside with
//! real employee certificates. It proves that:
//! - a granted employee's `CONNECT` on the gateway host opens a tunnel to the configured
//!   upstream, over HTTP/1.1 (raw bytes) and HTTP/2 (the `h2` crate), and bytes go both ways;
//! - every open and close is in the audit trail, with the certificate's fingerprint and the
//!   byte counts of what was really sent, and counted in the metrics;
//! - no certificate, a person not granted or not configured, another target, port or an
//!   address, and `CONNECT` on a host without tunnels are refused, and none reaches upstream;
//! - the second factor travels in `Portcullis-OTP`: missing, wrong and replayed codes are
//!   refused, a passed one opens a session for this certificate;
//! - bytes sent right behind a `CONNECT` go through the tunnel when it opens and nowhere when it
//!   is refused; a client's `Portcullis-OTP` never reaches an upstream;
//! - an open tunnel keeps its HTTP/2 connection busy, and ends on its own idle timeout or at
//!   the end of the shutdown grace;
//! - a reload that revokes the certificate or removes the grant closes the open tunnel, and
//!   says so in the audit trail; `access-report` and `check` show tunnels;
//! - tunnels count against `max_connections` (on HTTP/2 each stream's tunnel holds a permit and
//!   a place in the gauge of its own) and against `[gateway] max_tunnels_per_user`;
//! - a certificate that expires while in use cuts its tunnel (`closed_by = "expired"`) and its
//!   keep-alive connection to an internal route, with no reload;
//! - bad `[[tunnels]]` entries are refused by key;
//! - real OpenSSH reaches a real sshd through `portcullis connect` as its ProxyCommand.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use support::employees::{Employees, Identity, client, gateway_toml};
use support::upstream::{Echo, seen};
use support::{ConfigToml, Setup, WAIT, metrics, start_toml, strings, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const GATEWAY: &str = "gw.corp.test";
const DB1: &str = "gw.corp.test CONNECT db1:22";

/// A proxy with the tunnels below, its echo target, and the employees.
struct Rig {
    setup: Setup,
    employees: Employees,
    echo: Echo,
    proxy: portcullis::Running,
}

impl Rig {
    /// Tunnels for `group:ops` on `db1:22`, and `extra` TOML merged in (a `[limits]` table).
    async fn start(extra: &str) -> Self {
        Self::start_with(|config| config.merge(extra)).await
    }

    /// The tunnels' config as `change` leaves it.
    async fn start_with(change: impl FnOnce(ConfigToml) -> ConfigToml) -> Self {
        let setup = Setup::new().await;
        let employees = Employees::new();
        let echo = Echo::start().await;
        let toml = tunnels_toml(&setup, &employees, echo.addr, "\"group:ops\"");
        let proxy = start_toml(&change(ConfigToml::parse(&toml)).text()).await;
        Self {
            setup,
            employees,
            echo,
            proxy,
        }
    }

    /// A raw `CONNECT` to `target` on a connection for `sni`; see [`connect`].
    async fn connect(
        &self,
        sni: &str,
        identity: Option<Identity>,
        target: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, Option<TlsStream<TcpStream>>) {
        connect(
            &self.setup,
            self.proxy.https_addr,
            sni,
            identity,
            target,
            headers,
        )
        .await
    }

    /// An HTTP/2 connection to the gateway with `name`'s certificate.
    async fn h2_as(&self, name: &str, serial: u64) -> h2::client::SendRequest<Bytes> {
        let identity = Some(self.employees.valid(name, serial));
        let mut config = (*client(&self.setup, identity)).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tls = tls_connect(self.proxy.https_addr, GATEWAY, Arc::new(config))
            .await
            .unwrap();
        let (h2, connection) = h2::client::handshake(tls).await.unwrap();
        tokio::spawn(connection);
        h2.ready().await.unwrap()
    }

    /// bob, of group ops, opens `db1:22`.
    async fn bob_opens_db1(&self) -> TlsStream<TcpStream> {
        let bob = Some(self.employees.valid("bob", 2));
        let (status, head, tunnel) = self.connect(GATEWAY, bob, "db1:22", &[]).await;
        assert_eq!(status, 200, "{head}");
        tunnel.unwrap()
    }
}

/// The gateway tests' config plus tunnels on `gw.corp.test` to `target_addr`: `db1:22` for the
/// ops group, `vault:2222` for alice with a second factor; and an admin listener for metrics.
fn tunnels_toml(
    setup: &Setup,
    employees: &Employees,
    target_addr: SocketAddr,
    db1_allow: &str,
) -> String {
    setup.toml(&format!(
        "{gateway}\
         [upstreams.db1-ssh]\nenvironment = \"test\"\naddrs = [\"{target_addr}\"]\n\
         [[tunnels]]\nhost = \"{GATEWAY}\"\ntarget = \"db1\"\nupstream = \"db1-ssh\"\nallow = [{db1_allow}]\n\
         [[tunnels]]\nhost = \"{GATEWAY}\"\ntarget = \"vault\"\nport = 2222\nupstream = \"db1-ssh\"\nallow = [\"alice\"]\nmfa = true\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        gateway = gateway_toml(setup, employees, 666),
    ))
}

/// Sends a raw `CONNECT` on a new TLS connection for `sni`; returns the status (0 when the
/// handshake or the exchange failed), the response head, and the stream for what follows.
async fn connect(
    setup: &Setup,
    proxy: SocketAddr,
    sni: &str,
    identity: Option<Identity>,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Option<TlsStream<TcpStream>>) {
    let Ok(mut tls) = tls_connect(proxy, sni, client(setup, identity)).await else {
        return (0, String::new(), None);
    };
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if tls.write_all(head.as_bytes()).await.is_err() {
        return (0, String::new(), None);
    }
    let mut response = Vec::new();
    let read_head = async {
        let mut byte = [0u8; 1];
        while !response.ends_with(b"\r\n\r\n") && response.len() < 8192 {
            match tls.read(&mut byte).await {
                Ok(1) => response.push(byte[0]),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(WAIT, read_head).await;
    let head = String::from_utf8_lossy(&response).into_owned();
    let status = support::status_of(&head).unwrap_or(0);
    (status, head, Some(tls))
}

fn connect_to(target: &str) -> http::Request<()> {
    http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(target)
        .body(())
        .unwrap()
}

/// Writes `message` into an open tunnel and reads the echo back.
async fn echo_through<S>(tunnel: &mut S, message: &[u8]) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tunnel.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(WAIT, tunnel.read_exact(&mut back))
        .await
        .expect("echo within WAIT")
        .unwrap();
    back
}

/// Sends `message` on an h2 tunnel stream and reads the echo back.
async fn h2_echo(
    send: &mut h2::SendStream<Bytes>,
    receive: &mut h2::RecvStream,
    message: &[u8],
) -> Vec<u8> {
    send.send_data(Bytes::copy_from_slice(message), false)
        .unwrap();
    let mut back = Vec::new();
    while back.len() < message.len() {
        let chunk = tokio::time::timeout(WAIT, receive.data())
            .await
            .expect("echo within WAIT")
            .expect("stream open")
            .unwrap();
        let _ = receive.flow_control().release_capacity(chunk.len());
        back.extend_from_slice(&chunk);
    }
    back
}

fn events<'a>(audit: &'a [Value], event: &str) -> Vec<&'a Value> {
    audit.iter().filter(|r| r["event"] == event).collect()
}

#[tokio::test]
async fn connects_from_one_address_beyond_connect_rate_get_429() {
    let rig = Rig::start("[gateway]\nconnect_rate = { rate = \"1/m\", burst = 2 }\n").await;
    for _ in 0..2 {
        drop(rig.bob_opens_db1().await);
    }
    let bob = Some(rig.employees.valid("bob", 2));
    let (status, head, _) = rig.connect(GATEWAY, bob, "db1:22", &[]).await;
    assert_eq!(status, 429, "{head}");
    let retry = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{head}");
    assert_eq!(
        rig.echo.accepted(),
        2,
        "a refused CONNECT reached its target"
    );
    let gauge = metrics(rig.proxy.admin_addr.unwrap()).await;
    assert!(
        gauge.contains("portcullis_rate_limited_total{limit=\"connect\"} 1"),
        "{gauge}"
    );
}

#[tokio::test]
async fn h1_tunnel_carries_bytes_and_is_audited_from_open_to_close() {
    let rig = Rig::start("").await;
    let admin = rig.proxy.admin_addr.unwrap();
    let mut tunnel = rig.bob_opens_db1().await;
    let first = b"SSH-2.0-OpenSSH_9.2 canary-7f3a\r\n".to_vec();
    assert_eq!(echo_through(&mut tunnel, &first).await, first);
    let second = vec![0xA5u8; 100_000];
    assert_eq!(echo_through(&mut tunnel, &second).await, second);
    let open = metrics(admin).await;
    for expected in [
        // The tunnel keeps its connection's permit: it and this admin request.
        "portcullis_connections_active 2".to_owned(),
        format!("portcullis_tunnels_open{{tunnel=\"{DB1}\"}} 1"),
        format!("portcullis_tunnels_opened_total{{tunnel=\"{DB1}\"}} 1"),
    ] {
        assert!(open.contains(&expected), "{expected} in {open}");
    }

    // The client closes its side: the target sees EOF, closes too, and the client sees EOF.
    tunnel.shutdown().await.unwrap();
    assert!(support::closed_by_peer(&mut tunnel).await);
    let sent = (first.len() + second.len()) as u64;
    let closed = async {
        let gauge = format!("portcullis_tunnels_open{{tunnel=\"{DB1}\"}} 0");
        while !metrics(admin).await.contains(&gauge) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the tunnel gauge goes back to 0");

    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    let opened = events(&audit, "tunnel_opened");
    let [opened] = opened.as_slice() else {
        panic!("one open line: {audit:?}");
    };
    assert_eq!(opened["user"], "bob");
    assert_eq!(opened["tunnel"], DB1);
    assert_eq!(opened["decision"], "allowed");
    assert_eq!(opened["fingerprint"].as_str().unwrap().len(), 64);
    let close = only_close(&audit);
    assert_eq!(close["id"], opened["id"]);
    assert_eq!(close["user"], "bob");
    assert_eq!(close["bytes_from_client"], sent);
    assert_eq!(close["bytes_to_client"], sent);
    assert_eq!(close["closed_by"], "client");
    // The employee's name stays in the audit trail: the access log has the tunnel, not who.
    let access = rig.setup.access_lines().join("\n");
    assert!(access.contains(DB1), "{access}");
    // The tunnel's id is its CONNECT request's: the access line joins the two audit lines.
    let id = opened["id"].as_str().unwrap();
    assert!(
        access.contains(&format!("\"request_id\":\"{id}\"")),
        "{id} not in {access}"
    );
    assert!(
        !access.contains("bob") && !access.contains("canary-7f3a"),
        "{access}"
    );

    // The review sees the tunnel like an internal route: used by bob, unused grants, idle users.
    let file = rig.setup.pki.dir.path().join("tunnels.toml");
    let toml = tunnels_toml(&rig.setup, &rig.employees, rig.echo.addr, "\"group:ops\"");
    std::fs::write(&file, toml).unwrap();
    let file = file.to_str().unwrap();
    let json = support::portcullis_ok(&["access-report", "-c", file, "--since", "1d", "--json"]);
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["users"]["bob"]["routes"],
        serde_json::json!([DB1]),
        "{report:#}"
    );
    assert_eq!(report["users"]["bob"]["requests"], 1, "{report:#}");
    let unused = report["unused_grants"].as_array().unwrap();
    assert!(
        unused.contains(&"gw.corp.test CONNECT vault:2222: alice".into()),
        "{report:#}"
    );
    assert!(
        !unused.contains(&format!("{DB1}: group:ops").into()),
        "{report:#}"
    );
    assert!(
        report["idle_users"]
            .as_array()
            .unwrap()
            .contains(&"dave".into())
    );
    // `check` shows where each tunnel lands and who may open it.
    let check = support::portcullis_ok(&["check", "-c", file]);
    let landing = format!(
        "  tunnel {DB1} -> db1-ssh: client certificate; allowed: group:ops; idle timeout 1h\n       {}  environment \"test\", network 127.0.0.0/8",
        rig.echo.addr
    );
    assert!(check.contains(&landing), "{check}");
}

/// A certificate minted to expire in seconds: once past its `notAfter`, its open tunnel is cut
/// and audited as expired, and its keep-alive connection to an internal route admits nothing
/// more; new handshakes fail as before. No reload is involved.
#[tokio::test]
async fn a_certificate_that_expires_cuts_its_tunnel_and_its_requests() {
    let rig = Rig::start("").await;
    const VALID_FOR: i64 = 3;
    let minted = std::time::Instant::now();
    let (chain, key) = rig.employees.expiring_in("bob", 2, VALID_FOR);
    let bob = || Some((chain.clone(), key.clone_key()));
    let (status, head, tunnel) = rig.connect(GATEWAY, bob(), "db1:22", &[]).await;
    assert_eq!(status, 200, "{head}");
    let mut tunnel = tunnel.unwrap();
    assert_eq!(echo_through(&mut tunnel, b"before").await, b"before");
    let addr = rig.proxy.https_addr;
    let mut tools = support::h1_with(addr, "tools.corp.test", client(&rig.setup, bob()))
        .await
        .unwrap();
    let answer = support::get(&mut tools, "tools.corp.test", "/echo", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(seen(&answer.text(), "x-portcullis-user"), ["bob"]);

    // The certificate is valid up to and including its last second; the cut follows it.
    let expiry = std::time::Duration::from_secs(VALID_FOR as u64 + 1);
    tokio::time::sleep(expiry.saturating_sub(minted.elapsed())).await;
    let cut = tokio::time::timeout(WAIT, support::closed_by_peer(&mut tunnel)).await;
    assert!(
        cut.is_ok_and(|closed| closed),
        "the tunnel outlived its certificate"
    );
    let after = support::get(&mut tools, "tools.corp.test", "/echo", &[]).await;
    assert!(
        after.as_ref().is_none_or(|a| a.status == 403),
        "admitted after expiry: {:?}",
        after.map(|a| a.text())
    );
    let fresh = support::status_with(addr, "tools.corp.test", "/echo", client(&rig.setup, bob()));
    assert_eq!(fresh.await, None, "a new handshake with it fails");

    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    assert_eq!(only_close(&audit)["closed_by"], "expired", "{audit:?}");
}

/// One HTTP/2 connection carries as many `CONNECT` streams as `h2_max_concurrent_streams`: each
/// tunnel now takes a connection permit and a place in the gauge of its own, and one employee
/// holds at most `max_tunnels_per_user`, whatever connections they use.
#[tokio::test]
async fn tunnels_count_against_max_connections_and_a_per_user_cap() {
    let rig = Rig::start_with(|config| {
        config
            .set("limits.max_connections", 6)
            // The tunnels still open at the end are cut at once.
            .set("limits.shutdown_grace", "100ms")
            .set("gateway.max_tunnels_per_user", 3)
    })
    .await;
    // Opens a tunnel on `h2`; returns its status and, when open, its stream's two halves.
    async fn open(
        h2: &mut h2::client::SendRequest<Bytes>,
    ) -> (u16, Option<(h2::SendStream<Bytes>, h2::RecvStream)>) {
        let mut h2 = h2.clone().ready().await.unwrap();
        let (response, send) = h2.send_request(connect_to("db1:22"), false).unwrap();
        let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
        let status = response.status().as_u16();
        (
            status,
            (status == 200).then(|| (send, response.into_body())),
        )
    }
    // bob's connection and three tunnels hold 4 of the 6 permits; his fourth is over his cap.
    let mut bob = rig.h2_as("bob", 2).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (status, tunnel) = open(&mut bob).await;
        assert_eq!(status, 200);
        held.push(tunnel.unwrap());
    }
    assert_eq!(open(&mut bob).await.0, 429, "bob's fourth tunnel");
    // dave's connection and first tunnel take the last two permits; his second finds none.
    let mut dave = rig.h2_as("dave", 5).await;
    let (status, tunnel) = open(&mut dave).await;
    assert_eq!(status, 200);
    let (mut send, mut receive) = tunnel.unwrap();
    assert_eq!(h2_echo(&mut send, &mut receive, b"still").await, b"still");
    assert_eq!(open(&mut dave).await.0, 503, "no permit left");
    let gauge = metrics(rig.proxy.admin_addr.unwrap()).await;
    // Two connections, four tunnels, and this admin request.
    assert!(gauge.contains("portcullis_connections_active 7"), "{gauge}");
    // A tunnel that ends gives both back: bob may open one again.
    let (mut first_send, _) = held.remove(0);
    first_send.send_reset(h2::Reason::CANCEL);
    let reopened = async {
        loop {
            match open(&mut bob).await.0 {
                200 => return,
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(WAIT, reopened)
        .await
        .expect("bob opens a tunnel again once one ended");

    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    let over: Vec<&Value> = events(&audit, "tunnel_closed")
        .into_iter()
        .filter(|c| c["closed_by"] == "over_limit")
        .collect();
    assert!(over.len() >= 2, "{audit:?}");
}

#[tokio::test]
async fn h2_connect_opens_a_tunnel_on_one_stream() {
    let rig = Rig::start("").await;
    let mut h2 = rig.h2_as("dave", 5).await;
    let (response, mut send) = h2.send_request(connect_to("db1:22"), false).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let mut receive = response.into_body();

    let message = Bytes::from_static(b"over one h2 stream");
    assert_eq!(h2_echo(&mut send, &mut receive, &message).await, message);
    // END_STREAM is the client's half-close: the target closes, and so does the stream.
    send.send_data(Bytes::new(), true).unwrap();
    let rest = async {
        let mut rest = Vec::new();
        while let Some(Ok(chunk)) = receive.data().await {
            rest.extend_from_slice(&chunk);
        }
        rest
    };
    let rest = tokio::time::timeout(WAIT, rest)
        .await
        .expect("the stream ends");
    assert!(rest.is_empty(), "{rest:?}");
    // Every stream is judged on its own.
    let (refused, _send) = h2.send_request(connect_to("db1:2222"), true).unwrap();
    assert_eq!(refused.await.unwrap().status(), 403, "another port");

    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    let close = only_close(&audit);
    assert_eq!(close["user"], "dave");
    assert_eq!(close["bytes_from_client"], message.len() as u64);
    assert_eq!(close["bytes_to_client"], message.len() as u64);
    assert_eq!(rig.echo.accepted(), 1);
}

#[tokio::test]
async fn refused_connects_never_reach_the_target() {
    let rig = Rig::start("").await;
    let employees = &rig.employees;
    let bob = || Some(employees.valid("bob", 2));
    let target = rig.echo.addr.to_string();
    let cases: Vec<(&str, &str, Option<Identity>, &str, u16)> = vec![
        // The gateway host requires a certificate: no handshake without one.
        ("no certificate", GATEWAY, None, "db1:22", 0),
        (
            "not granted",
            GATEWAY,
            Some(employees.valid("carol", 3)),
            "db1:22",
            403,
        ),
        (
            "not a configured user",
            GATEWAY,
            Some(employees.valid("mallory", 4)),
            "db1:22",
            403,
        ),
        ("another port", GATEWAY, bob(), "db1:2222", 403),
        ("no port", GATEWAY, bob(), "db1", 403),
        ("another name", GATEWAY, bob(), "db2:22", 403),
        ("the target's address", GATEWAY, bob(), &target, 403),
        ("a private address", GATEWAY, bob(), "10.0.1.5:22", 403),
        ("IPv6 loopback", GATEWAY, bob(), "[::1]:22", 403),
        ("a public host", "app.test", None, "db1:22", 405),
        (
            "an internal web host",
            "tools.corp.test",
            bob(),
            "db1:22",
            405,
        ),
    ];
    for (what, sni, identity, target, expected) in cases {
        let (status, head, _) = rig.connect(sni, identity, target, &[]).await;
        assert_eq!(status, expected, "{what}: {head}");
    }
    // A public host's Host header naming the gateway changes nothing: SNI decides.
    let spoofed = [("Host", GATEWAY)];
    let (status, head, _) = rig
        .connect("www.corp.test", bob(), "db1:22", &spoofed)
        .await;
    assert!(status == 405 || status == 400, "{head}");
    // An absolute-form target is not a CONNECT target (RFC 9110 9.3.6).
    let (status, head, _) = rig.connect(GATEWAY, bob(), "http://db1:22/", &[]).await;
    assert_eq!(status, 400, "{head}");
    // Nor is one with userinfo: `x@db1:22` is not `db1:22`.
    let (status, head, _) = rig.connect(GATEWAY, bob(), "x@db1:22", &[]).await;
    assert_eq!(status, 400, "{head}");
    assert_eq!(rig.echo.accepted(), 0, "nothing reached the target");

    let open = metrics(rig.proxy.admin_addr.unwrap()).await;
    let refused = "portcullis_tunnels_refused_total{status=\"403\"} 8";
    assert!(open.contains(refused), "{open}");
    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    for (user, reason) in [
        ("carol", "not granted on this route"),
        ("mallory", "not a configured user"),
    ] {
        assert!(
            audit.iter().any(|r| r["event"] == "denied"
                && r["user"] == user
                && r["route"] == DB1
                && r["reason"] == reason),
            "{user}: {audit:?}"
        );
    }
    assert!(events(&audit, "tunnel_opened").is_empty(), "{audit:?}");
}

#[tokio::test]
async fn second_factor_in_a_header_with_replay_refused_and_a_session() {
    // Open tunnels are drained at shutdown: one is still open when this grace ends.
    let rig = Rig::start("[limits]\nshutdown_grace = \"1s\"\n").await;
    let vault = "vault:2222";
    let alice = rig.employees.valid("alice", 1);
    let same_alice = || Some((alice.0.clone(), alice.1.clone_key()));
    let rig = &rig;
    let open = |identity, code: Option<String>| async move {
        let header = code.map(|code| ("Portcullis-OTP", code));
        let headers: Vec<(&str, &str)> = header.iter().map(|(n, v)| (*n, v.as_str())).collect();
        rig.connect(GATEWAY, identity, vault, &headers).await
    };

    let (status, head, _) = open(same_alice(), None).await;
    assert_eq!(status, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("portcullis-otp: required"),
        "{head}"
    );
    let expired = rig.employees.code(-10);
    let (status, head, _) = open(same_alice(), Some(expired)).await;
    assert_eq!(status, 403, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("portcullis-otp: rejected"),
        "{head}"
    );

    let code = rig.employees.code(0);
    let (status, head, tunnel) = open(same_alice(), Some(code.clone())).await;
    assert_eq!(status, 200, "{head}");
    let mut tunnel = tunnel.unwrap();
    assert_eq!(echo_through(&mut tunnel, b"unlocked").await, b"unlocked");

    // Another certificate of alice's, with the code just used: a replay.
    let other_alice = || Some(rig.employees.valid("alice", 11));
    let (status, head, _) = open(other_alice(), Some(code.clone())).await;
    assert_eq!(status, 403, "replayed code: {head}");
    let (status, head, _) = open(other_alice(), None).await;
    assert_eq!(status, 401, "that certificate has no session: {head}");
    // The certificate that passed has a session: no code needed for a while.
    let (status, head, _) = open(same_alice(), None).await;
    assert_eq!(status, 200, "{head}");

    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    let decisions: Vec<&str> = audit
        .iter()
        .filter(|r| r["event"] == "access" && r["method"] == "CONNECT")
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        ["mfa_failed", "mfa_passed", "mfa_failed"],
        "{audit:?}"
    );
    let field = |event, name| -> Vec<String> {
        let mut values: Vec<String> = events(&audit, event)
            .iter()
            .map(|r| r[name].as_str().unwrap().to_owned())
            .collect();
        values.sort_unstable();
        values
    };
    assert_eq!(
        field("tunnel_opened", "reason"),
        [
            "certificate and second factor",
            "certificate and second-factor session"
        ]
    );
    assert_eq!(field("tunnel_closed", "closed_by"), ["client", "shutdown"]);
}

#[tokio::test]
async fn reloads_close_tunnels_whose_certificate_or_grant_they_withdraw() {
    let rig = Rig::start("").await;
    let mut bob = rig.bob_opens_db1().await;
    let dave = Some(rig.employees.valid("dave", 5));
    let (status, head, dave) = rig.connect(GATEWAY, dave, "db1:22", &[]).await;
    assert_eq!(status, 200, "{head}");
    let mut dave = dave.unwrap();
    assert_eq!(echo_through(&mut bob, b"before").await, b"before");
    // Writing the config writes a revocation list revoking serial 666; `revoked` replaces it.
    let reload = |db1_allow, revoked: Option<u64>| {
        let toml = tunnels_toml(&rig.setup, &rig.employees, rig.echo.addr, db1_allow);
        if let Some(serial) = revoked {
            rig.employees.crl_revoking(serial);
        }
        let config = support::config_from(&toml).unwrap();
        rig.proxy.reload(config).unwrap();
    };

    // A reload that keeps the grant keeps the tunnels.
    reload("\"group:ops\"", None);
    assert_eq!(echo_through(&mut bob, b"after").await, b"after");
    // A new revocation list revoking dave's certificate (serial 5) closes his tunnel only.
    reload("\"group:ops\"", Some(5));
    assert!(
        support::closed_by_peer(&mut dave).await,
        "dave's tunnel closed"
    );
    assert_eq!(echo_through(&mut bob, b"still").await, b"still");
    // Removing the grant closes bob's.
    reload("\"alice\"", None);
    assert!(
        support::closed_by_peer(&mut bob).await,
        "bob's tunnel closed"
    );

    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    let mut closes: Vec<(&str, &str, u64)> = events(&audit, "tunnel_closed")
        .iter()
        .map(|r| {
            (
                r["user"].as_str().unwrap(),
                r["closed_by"].as_str().unwrap(),
                r["bytes_from_client"].as_u64().unwrap(),
            )
        })
        .collect();
    closes.sort_unstable();
    assert_eq!(
        closes,
        [("bob", "grant_removed", 16), ("dave", "revoked", 0)]
    );
}

/// A reload judges open tunnels by what they were opened under, not only by trust and grants:
/// pointing the tunnel's upstream elsewhere closes tunnels still relaying to the old one, and
/// asking for a second factor closes a tunnel that never passed one.
#[tokio::test]
async fn reloads_close_tunnels_sent_elsewhere_or_asked_for_a_second_factor() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let (first, elsewhere) = (Echo::start().await, Echo::start().await);
    // db1 for alice alone: she has a TOTP secret, so a reload may ask her for a second factor.
    let toml = |target: SocketAddr, mfa: bool| {
        let toml = tunnels_toml(&setup, &employees, target, "\"alice\"");
        let db1 = "target = \"db1\"\n";
        let mfa = if mfa { "mfa = true\n" } else { "" };
        toml.replacen(db1, &format!("{db1}{mfa}"), 1)
    };
    let proxy = start_toml(&toml(first.addr, false)).await;
    let reload = |target, mfa| proxy.reload(support::config_from(&toml(target, mfa)).unwrap());
    let open = || async {
        let alice = Some(employees.valid("alice", 1));
        let (status, head, tunnel) =
            connect(&setup, proxy.https_addr, GATEWAY, alice, "db1:22", &[]).await;
        assert_eq!(status, 200, "{head}");
        tunnel.unwrap()
    };
    let mut alice = open().await;
    assert_eq!(echo_through(&mut alice, b"before").await, b"before");
    // The same config again changes nothing.
    reload(first.addr, false).unwrap();
    assert_eq!(echo_through(&mut alice, b"same").await, b"same");
    // db1 now lands on another server: the tunnel to the old one is closed.
    reload(elsewhere.addr, false).unwrap();
    assert!(support::closed_by_peer(&mut alice).await, "sent elsewhere");
    let mut alice = open().await;
    assert_eq!(echo_through(&mut alice, b"new").await, b"new");
    assert_eq!(elsewhere.accepted(), 1);
    // db1 now asks for a second factor this tunnel never passed.
    reload(elsewhere.addr, true).unwrap();
    assert!(support::closed_by_peer(&mut alice).await, "second factor");

    proxy.shutdown().await;
    let audit = setup.audit();
    let closes: Vec<&str> = events(&audit, "tunnel_closed")
        .iter()
        .map(|r| r["closed_by"].as_str().unwrap())
        .collect();
    assert_eq!(closes, ["reconfigured", "reconfigured"], "{audit:?}");
}

#[tokio::test]
async fn a_tunnel_keeps_its_h2_connection_busy_and_ends_when_idle() {
    let rig = Rig::start_with(|config| {
        config
            .set("limits.idle_timeout", "1s")
            .set("tunnels[0].idle_timeout", "3s")
    })
    .await;
    let mut h2 = rig.h2_as("dave", 5).await;
    let (response, mut send) = h2.send_request(connect_to("db1:22"), false).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let mut receive = response.into_body();
    assert_eq!(h2_echo(&mut send, &mut receive, b"first").await, b"first");
    // The connection's idle timeout passes, and the second it gets to finish: a connection
    // with a tunnel open is not idle.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(h2_echo(&mut send, &mut receive, b"second").await, b"second");
    // Then nothing moves for the tunnel's own idle timeout: it ends.
    let ended = async { while let Some(Ok(_)) = receive.data().await {} };
    tokio::time::timeout(WAIT, ended)
        .await
        .expect("the idle tunnel ends");

    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    assert_eq!(only_close(&audit)["closed_by"], "idle_timeout");
}

/// Bytes a client sends right behind its `CONNECT`, before any answer: they belong to the
/// tunnel when it opens, and never reach the target when it does not.
#[tokio::test]
async fn bytes_sent_behind_a_connect_follow_its_fate() {
    let rig = Rig::start("").await;
    let identity = |serial| Some(rig.employees.valid("bob", serial));
    let early = "CONNECT db1:22 HTTP/1.1\r\nHost: db1:22\r\n\r\nSSH-2.0-early\r\n";
    let mut tls = tls_connect(
        rig.proxy.https_addr,
        GATEWAY,
        client(&rig.setup, identity(2)),
    )
    .await
    .unwrap();
    tls.write_all(early.as_bytes()).await.unwrap();
    let expected = "HTTP/1.1 200 OK";
    let mut head = vec![0u8; expected.len()];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(head, expected.as_bytes());
    let mut rest = Vec::new();
    let echoed = async {
        let mut byte = [0u8; 1];
        while !rest.ends_with(b"SSH-2.0-early\r\n") {
            tls.read_exact(&mut byte).await.unwrap();
            rest.push(byte[0]);
        }
    };
    tokio::time::timeout(WAIT, echoed)
        .await
        .expect("the early bytes went through the tunnel");

    // Refused (bob has no grant on vault): what follows is read as HTTP, never forwarded.
    let refused = "CONNECT vault:2222 HTTP/1.1\r\nHost: vault:2222\r\n\r\n\
                   SSH-2.0-smuggled\r\n\
                   CONNECT vault:2222 HTTP/1.1\r\nHost: vault:2222\r\n\r\n";
    let mut tls = tls_connect(
        rig.proxy.https_addr,
        GATEWAY,
        client(&rig.setup, identity(3)),
    )
    .await
    .unwrap();
    let raw = support::exchange(&mut tls, refused.as_bytes()).await;
    assert_eq!(support::status_of(&raw), Some(403), "{raw}");
    assert!(!raw.contains(" 200 "), "{raw}");
    assert_eq!(rig.echo.accepted(), 1, "only the granted tunnel");
    drop(tls);
}

/// A target that refuses the connection: `502`, and the audit trail says the tunnel never
/// carried a byte.
#[tokio::test]
async fn an_unreachable_target_is_a_502_closed_as_upstream_failed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rig = Rig::start_with(|config| {
        config.set("upstreams.db1-ssh.addrs", strings(&[&closed.to_string()]))
    })
    .await;
    let bob = Some(rig.employees.valid("bob", 2));
    let (status, head, _) = rig.connect(GATEWAY, bob, "db1:22", &[]).await;
    assert_eq!(status, 502, "{head}");
    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    let close = only_close(&audit);
    assert_eq!(close["closed_by"], "upstream_failed");
    assert_eq!(close["bytes_to_client"], 0);
}

/// The environment is checked again at every connect, for tunnels as for requests: a literal
/// address or a name that has left the upstream's networks since the config was checked (DNS
/// rebinding) is never connected to.
#[tokio::test]
async fn a_target_outside_its_environment_at_connect_time_is_refused() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let echo = Echo::start().await;
    let port = echo.addr.port();
    for addr in [echo.addr.to_string(), format!("localhost:{port}")] {
        let toml = ConfigToml::parse(&tunnels_toml(&setup, &employees, echo.addr, "\"bob\""))
            .set("upstreams.db1-ssh.addrs", strings(&[&addr]))
            .text();
        let mut config = support::config_from(&toml).unwrap();
        let upstream = config
            .upstreams
            .iter_mut()
            .find(|u| &*u.name == "db1-ssh")
            .unwrap();
        // Checked while private; now pretend the network moved.
        upstream.networks = vec!["10.9.0.0/16".parse().unwrap()];
        let proxy = support::start_config(config).await;
        let bob = Some(employees.valid("bob", 2));
        let (status, head, _) =
            connect(&setup, proxy.https_addr, GATEWAY, bob, "db1:22", &[]).await;
        assert_eq!(status, 502, "{addr}: {head}");
        proxy.shutdown().await;
    }
    assert_eq!(echo.accepted(), 0, "a refused address was connected to");
}

/// Guessing codes through `CONNECT` meets the web form's lockout: the same per-user count.
#[tokio::test]
async fn guessing_codes_on_connect_locks_the_user_out() {
    let rig = Rig::start_with(|config| config.set("gateway.mfa_max_failures", 3)).await;
    let alice = rig.employees.valid("alice", 1);
    let mut statuses = Vec::new();
    for step in 1..=4 {
        let identity = Some((alice.0.clone(), alice.1.clone_key()));
        let code = rig.employees.code(-10 * step);
        let headers = [("Portcullis-OTP", code.as_str())];
        let (status, head, _) = rig.connect(GATEWAY, identity, "vault:2222", &headers).await;
        statuses.push(status);
        if status == 429 {
            assert!(
                head.to_ascii_lowercase().contains("retry-after: "),
                "{head}"
            );
        }
    }
    assert_eq!(statuses, [403, 403, 403, 429]);
    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    assert!(
        audit
            .iter()
            .any(|r| r["decision"] == "mfa_locked" && r["method"] == "CONNECT"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|r| r["event"] == "denied" && r["reason"] == "locked out after wrong TOTP codes"),
        "{audit:?}"
    );
}

/// `portcullis connect` asks for a code on the terminal; with none, it says what to do instead
/// of reading the code from stdin (ssh's bytes). Its flags also come from the environment.
#[tokio::test]
async fn connect_without_a_terminal_asks_for_otp_flag() {
    if !support::require_tool("setsid") {
        return;
    }
    let rig = Rig::start_with(vault_on_localhost).await;
    let (cert, key) = rig.employees.person_files("alice", 31);
    // `setsid` leaves the client without a controlling terminal, as under a script or CI.
    let run = tokio::process::Command::new("setsid")
        .arg(env!("CARGO_BIN_EXE_portcullis"))
        .args(["connect", "vault:2222"])
        .env(
            "PORTCULLIS_GATEWAY",
            format!("localhost:{}", rig.proxy.https_addr.port()),
        )
        .env("PORTCULLIS_CERT", &cert)
        .env("PORTCULLIS_KEY", &key)
        .env("PORTCULLIS_CA", &rig.setup.pki.ca_pem)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "the gateway wants a TOTP code and there is no terminal to ask for one: set PORTCULLIS_OTP"
        ),
        "{stderr}"
    );
    assert_eq!(rig.echo.accepted(), 0);
}

/// `--otp CODE` is in `/proc/PID/cmdline`, which every local account can read, for as long as
/// the tunnel lasts: `portcullis connect` moves the code into its environment (its own to read)
/// at once, and the tunnel still opens with it. A key file others can read is refused.
#[tokio::test]
async fn connect_keeps_the_code_out_of_the_process_list_and_refuses_an_exposed_key() {
    let rig = Rig::start_with(vault_on_localhost).await;
    let (cert, key) = rig.employees.person_files("alice", 33);
    let code = rig.employees.code(0);
    let connect = |key: &std::path::Path| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["connect", "--gateway"])
            .arg(format!("localhost:{}", rig.proxy.https_addr.port()))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(key)
            .arg("--ca")
            .arg(&rig.setup.pki.ca_pem)
            .args(["--otp", &code, "vault:2222"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command
    };
    let mut run = connect(&key).spawn().unwrap();
    let (mut stdin, mut stdout) = (run.stdin.take().unwrap(), run.stdout.take().unwrap());
    stdin.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(WAIT, stdout.read_exact(&mut echoed))
        .await
        .expect("the tunnel opened with the code")
        .unwrap();
    assert_eq!(&echoed, b"ping");
    let pid = run.id().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        !cmdline.contains(&code) && !cmdline.contains("--otp"),
        "{cmdline}"
    );
    assert!(
        cmdline.contains("vault:2222"),
        "the same process: {cmdline}"
    );
    drop(stdin);
    let _ = tokio::time::timeout(WAIT, run.wait()).await;

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tokio::time::timeout(WAIT, connect(&key).output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{} has mode 644", key.display())),
        "{stderr}"
    );
    assert_eq!(rig.echo.accepted(), 1, "only the first");
}

/// On a terminal, `portcullis connect` asks for the code there when the gateway wants one, and
/// opens the tunnel with it.
#[tokio::test]
async fn connect_asks_for_the_code_on_the_terminal() {
    if !support::require_tool("script") {
        return;
    }
    let rig = Rig::start_with(vault_on_localhost).await;
    let (cert, key) = rig.employees.person_files("alice", 32);
    let command = format!(
        "{bin} connect --gateway localhost:{port} --cert {cert} --key {key} --ca {ca} vault:2222",
        bin = env!("CARGO_BIN_EXE_portcullis"),
        port = rig.proxy.https_addr.port(),
        cert = cert.display(),
        key = key.display(),
        ca = rig.setup.pki.ca_pem.display(),
    );
    // `script` runs the client on a new pseudo-terminal and types what it reads from its stdin.
    let mut run = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = run.stdin.take().unwrap();
    let mut stdout = run.stdout.take().unwrap();
    let mut seen = Vec::new();
    let prompt = async {
        let mut chunk = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("TOTP code for vault:2222: ") {
            let n = stdout.read(&mut chunk).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, prompt)
        .await
        .expect("the prompt");
    let code = rig.employees.code(0);
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .await
        .unwrap();
    let opened = async {
        while rig.echo.accepted() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, opened)
        .await
        .expect("the tunnel opened with the typed code");
    drop(run);

    rig.proxy.shutdown().await;
    let audit = rig.setup.audit();
    let opened = events(&audit, "tunnel_opened");
    assert_eq!(opened.len(), 1, "{audit:?}");
    assert_eq!(opened[0]["reason"], "certificate and second factor");
}

/// `Portcullis-OTP` is the gateway's: a client's copy never reaches an upstream.
#[tokio::test]
async fn the_code_header_is_never_forwarded() {
    let rig = Rig::start("").await;
    let mut client = support::h1(rig.proxy.https_addr, "www.corp.test", &rig.setup.pki).await;
    let request = support::request("GET", "www.corp.test", "/")
        .header("portcullis-otp", "123456")
        .body(http_body_util::Full::default())
        .unwrap();
    let answer = support::collect(client.send_request(request).await.unwrap()).await;
    assert_eq!(answer.status, 200);
    assert!(
        seen(&answer.text(), "portcullis-otp").is_empty(),
        "{}",
        answer.text()
    );
    assert!(seen(&answer.text(), "host").contains(&"www.corp.test".to_owned()));
}

/// The vault tunnel also on `localhost`, a gateway name that resolves here, for the client.
fn vault_on_localhost(config: ConfigToml) -> ConfigToml {
    config.push(
        "tunnels",
        &[
            ("host", "localhost".into()),
            ("target", "vault".into()),
            ("port", 2222.into()),
            ("upstream", "db1-ssh".into()),
            ("allow", strings(&["alice"])),
            ("mfa", true.into()),
        ],
    )
}

fn only_close(audit: &[Value]) -> &Value {
    let closes = events(audit, "tunnel_closed");
    let [close] = closes.as_slice() else {
        panic!("one close line: {audit:?}");
    };
    close
}

/// Real OpenSSH through the gateway: `ssh` runs `portcullis connect` as its ProxyCommand (with
/// `--otp`, as a script would), which opens `db1:22` on the gateway, which lands on a real
/// `sshd` started here on a loopback port with throwaway keys; a remote `echo` comes back.
#[tokio::test]
async fn openssh_reaches_sshd_through_portcullis_connect() {
    if !["ssh", "ssh-keygen", "sshd"]
        .into_iter()
        .all(support::require_tool)
    {
        return;
    }
    let setup = Setup::new().await;
    let employees = Employees::new();
    let keys = tempfile::tempdir().unwrap();
    let key = |name: &str| keys.path().join(name);
    for name in ["host_key", "user_key"] {
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(key(name))
            .status()
            .unwrap();
        assert!(made.success());
    }
    std::fs::copy(key("user_key.pub"), key("authorized_keys")).unwrap();
    let sshd_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        key("sshd_config"),
        format!(
            "Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
             PidFile {pid}\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             StrictModes no\nPermitRootLogin prohibit-password\n",
            host = key("host_key").display(),
            auth = key("authorized_keys").display(),
            pid = key("sshd.pid").display(),
        ),
    )
    .unwrap();
    // Privilege separation wants its empty directory when sshd starts as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let sshd_path = String::from_utf8(
        std::process::Command::new("which")
            .arg("sshd")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let _sshd = support::Spawned(
        std::process::Command::new(sshd_path.trim())
            .args(["-D", "-e", "-f"])
            .arg(key("sshd_config"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let listening = async {
        while TcpStream::connect(("127.0.0.1", sshd_port)).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, listening)
        .await
        .expect("sshd listening");

    // `ssh` resolves nothing but the gateway: it asks for db1:22, which only the gateway knows.
    let toml = setup.toml(&format!(
        "{gateway}[upstreams.db1-ssh]\nenvironment = \"test\"\naddrs = [\"127.0.0.1:{sshd_port}\"]\n\
         [[tunnels]]\nhost = \"localhost\"\ntarget = \"db1\"\nupstream = \"db1-ssh\"\nallow = [\"alice\"]\nmfa = true\n",
        gateway = gateway_toml(&setup, &employees, 666),
    ));
    let proxy = start_toml(&toml).await;
    let (cert, cert_key) = employees.person_files("alice", 21);
    let proxy_command = format!(
        "{bin} connect --gateway localhost:{port} --cert {cert} --key {cert_key} --ca {ca} --otp {code} %h:%p",
        bin = env!("CARGO_BIN_EXE_portcullis"),
        port = proxy.https_addr.port(),
        cert = cert.display(),
        cert_key = cert_key.display(),
        ca = setup.pki.ca_pem.display(),
        code = employees.code(0),
    );
    let user = String::from_utf8(
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let ssh = tokio::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(key("user_key"))
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-o",
        ])
        .arg(format!("ProxyCommand={proxy_command}"))
        .arg(format!("{}@db1", user.trim()))
        .args(["echo", "through-the-gateway"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(3 * WAIT, ssh)
        .await
        .expect("ssh finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("through-the-gateway"),
        "ssh: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    proxy.shutdown().await;
    let audit = setup.audit();
    let opened = events(&audit, "tunnel_opened");
    let [opened] = opened.as_slice() else {
        panic!("one open line: {audit:?}");
    };
    assert_eq!(opened["user"], "alice");
    assert_eq!(opened["tunnel"], "localhost CONNECT db1:22");
    assert_eq!(opened["reason"], "certificate and second factor");
    let close = only_close(&audit);
    assert!(
        close["bytes_from_client"].as_u64().unwrap() > 1000,
        "{close}"
    );
    assert!(close["bytes_to_client"].as_u64().unwrap() > 1000, "{close}");
}

#[tokio::test]
async fn bad_tunnel_configs_are_refused_by_key() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let good = ConfigToml::parse(&tunnels_toml(
        &setup,
        &employees,
        "127.0.0.1:2222".parse().unwrap(),
        "\"group:ops\"",
    ));
    assert!(support::config_from(&good.text()).is_ok());
    let cases = [
        (
            good.clone().set("tunnels[0].host", "*.corp.test"),
            "tunnels[0].host",
        ),
        (
            good.clone().set("tunnels[0].host", "10.0.0.1"),
            "tunnels[0].host",
        ),
        (
            good.clone().set("tunnels[0].host", "gw.elsewhere.test"),
            "tunnels[0].host",
        ),
        (
            good.clone().set("tunnels[0].target", "10.0.1.5"),
            "tunnels[0].target",
        ),
        (
            good.clone().set("tunnels[0].target", "db 1"),
            "tunnels[0].target",
        ),
        (good.clone().set("tunnels[0].port", 0), "tunnels[0].port"),
        (
            good.clone().set("tunnels[0].upstream", "nowhere"),
            "tunnels[0].upstream",
        ),
        (
            good.clone().set("tunnels[0].idle_timeout", "0s"),
            "tunnels[0].idle_timeout",
        ),
        (
            good.clone()
                .set("tunnels[0].allow", strings(&["group:nobody"])),
            "tunnels[0].allow[0]",
        ),
        // bob has no second factor.
        (
            good.clone().set("tunnels[1].allow", strings(&["bob"])),
            "tunnels[1].mfa",
        ),
        (
            good.clone()
                .set("tunnels[1].target", "db1")
                .set("tunnels[1].port", 22),
            "tunnels[1].target",
        ),
        (
            // A metadata endpoint is never a target, tunnel or not.
            good.clone()
                .set("upstreams.db1-ssh.addrs", strings(&["169.254.169.254:22"])),
            "upstreams.db1-ssh.addrs[0]",
        ),
    ];
    for (toml, key) in cases {
        support::assert_refused(&toml.text(), key);
    }
    let no_gateway = setup.toml(
        "[[tunnels]]\nhost = \"localhost\"\ntarget = \"db1\"\nupstream = \"app\"\nallow = [\"alice\"]\n",
    );
    support::assert_refused(&no_gateway, "tunnels[0].allow");
}
