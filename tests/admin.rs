//! The admin listener and configuration reload. It proves that:
//! - `/healthz`, `/readyz` and `/metrics` answer (metrics count requests by route and status,
//!   handshakes and open connections); unknown paths are 404 and wrong methods 405;
//! - an admin address that is public or a wildcard is refused by config validation;
//! - `POST /reload` installs a valid new config (a new route appears, new certificates are
//!   served) and refuses an invalid one (broken certificate file) while the old one keeps
//!   serving, under concurrent traffic with no failed request;
//! - session tickets survive a reload: a client resumes its TLS session afterwards.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use support::{Client, ConfigToml, Setup, WAIT, raw_tcp, status_of, tls_connect};

fn admin_toml(setup: &Setup, extra: &str) -> String {
    setup.toml(&format!("[admin]\nlisten = \"127.0.0.1:0\"\n{extra}"))
}

async fn admin(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let raw = raw_tcp(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status_of(&raw).unwrap_or(0), body)
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let setup = Setup::new().await;
    let file = setup.pki.dir.path().join("admin.toml");
    std::fs::write(&file, admin_toml(&setup, "")).unwrap();
    let proxy = support::start_file(&file).await;
    let addr = proxy.admin_addr.unwrap();
    let mut client = Client::connect(true, proxy.https_addr, "localhost", &setup.pki).await;
    assert_eq!(client.get("localhost", "/").await.status, 200);
    assert_eq!(client.get("unrouted.test", "/").await.status, 404);
    assert_eq!(
        admin(addr, "GET", "/healthz").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(admin(addr, "GET", "/readyz").await.0, 200);
    let (status, metrics) = admin(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        "portcullis_requests_total{route=\"localhost/\",status=\"200\"} 1",
        "portcullis_requests_total{route=\"-\",status=\"404\"} 1",
        "portcullis_tls_handshakes_total{kind=\"ok\"} 1",
        // The client's connection and this admin request's own: every accepted connection
        // counts, the admin listener's included.
        "portcullis_connections_active 2",
        "portcullis_request_duration_seconds_count 2",
        "portcullis_certificate_not_after_timestamp_seconds{name=\"localhost\",names=\"localhost,",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in:\n{metrics}"
        );
    }
    // A timestamp, not a countdown frozen at load: an alert on `value - time()` can fire.
    let not_after: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("portcullis_certificate_not_after_timestamp_seconds{name=\"localhost\",")
                && l.contains("source=\"file\"}")
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        not_after > now,
        "expiry {not_after} is not a future Unix time"
    );
    assert_eq!(admin(addr, "GET", "/nowhere").await.0, 404);
    assert_eq!(admin(addr, "DELETE", "/metrics").await.0, 405);
    assert_eq!(admin(addr, "GET", "/reload").await.0, 405);
}

/// Any local process can call the admin listener as fast as it likes: its requests become one
/// counted audit line per endpoint, status and minute, not a line each (2,000 lines in 0.3 s
/// once buried the trail). Probes are not audited at all (tests/health.rs).
#[tokio::test]
async fn a_flood_of_admin_requests_is_counted_not_written_line_by_line() {
    let setup = Setup::new().await;
    let proxy = support::start_toml(&admin_toml(&setup, "")).await;
    let addr = proxy.admin_addr.unwrap();
    const FLOOD: u64 = 300;
    for _ in 0..FLOOD {
        assert_eq!(admin(addr, "GET", "/nothing-here").await.0, 404);
    }
    assert_eq!(admin(addr, "DELETE", "/metrics").await.0, 405);
    assert!(proxy.shutdown().await);
    let audit = setup.audit();
    let lines: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|r| r["event"] == "admin" && r["status"] == 404)
        .collect();
    // A minute may turn during the flood: then it is two lines.
    assert!((1..=2).contains(&lines.len()), "{lines:#?}");
    let counted: u64 = lines.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, FLOOD);
    assert!(
        audit
            .iter()
            .any(|r| r["event"] == "admin" && r["status"] == 405 && r["count"] == 1),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn public_admin_addresses_are_refused() {
    let setup = Setup::new().await;
    for addr in ["8.8.8.8:9900", "0.0.0.0:9900", "[::]:9900"] {
        let toml = setup.toml(&format!("[admin]\nlisten = \"{addr}\"\n"));
        support::assert_refused(&toml, "admin.listen");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_installs_good_configs_and_refuses_bad_ones_under_traffic() {
    let setup = Setup::new().await;
    let file = setup.pki.dir.path().join("reload.toml");
    std::fs::write(&file, admin_toml(&setup, "")).unwrap();
    let proxy = support::start_file(&file).await;
    let addr = proxy.admin_addr.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut traffic = Vec::new();
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        traffic.push(tokio::spawn(async move {
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let status = client.get("localhost", "/").await.status;
                let counter = if status == 200 { &done } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let mut client = Client::connect(false, proxy.https_addr, "app.test", &setup.pki).await;
    assert_eq!(client.get("app.test", "/health").await.status, 200);
    let (cert, key) = setup.pki.leaf(
        "renewed",
        &[
            "localhost",
            "app.test",
            "fresh.test",
            "127.0.0.1",
            "unrouted.test",
            "*.wild.test",
        ],
    );
    let grown = ConfigToml::parse(&admin_toml(&setup, "[[routes]]\nhost = \"app.test\"\npath_prefix = \"/health\"\nrespond = { status = 200, body = \"reloaded\" }\n[[routes]]\nhost = \"fresh.test\"\nupstream = \"app\"\n"))
        .set("tls.certificates[0].cert", cert.display().to_string())
        .set("tls.certificates[0].key", key.display().to_string())
        .text();
    std::fs::write(&file, &grown).unwrap();
    assert_eq!(
        admin(addr, "POST", "/reload").await,
        (200, "reloaded\n".to_owned())
    );
    let mut fresh = Client::connect(false, proxy.https_addr, "fresh.test", &setup.pki).await;
    assert_eq!(
        fresh.get("fresh.test", "/").await.status,
        200,
        "new certificate and route not served"
    );
    let mut after = Client::connect(false, proxy.https_addr, "app.test", &setup.pki).await;
    assert_eq!(after.get("app.test", "/health").await.text(), "reloaded");

    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (status, body) = admin(addr, "POST", "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("tls.certificates[0]"),
        "the refusal must name the key: {body}"
    );
    let mut still = Client::connect(true, proxy.https_addr, "fresh.test", &setup.pki).await;
    assert_eq!(
        still.get("fresh.test", "/").await.status,
        200,
        "the last good config must stay"
    );

    std::fs::write(&file, "environment = ").unwrap();
    assert_eq!(admin(addr, "POST", "/reload").await.0, 422);

    stop.store(true, Ordering::Relaxed);
    for task in traffic {
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );

    // The audit writer flushes everything queued when the proxy stops.
    assert!(proxy.shutdown().await);
    let audit = setup.audit();
    let config_events: Vec<(&str, &str)> = audit
        .iter()
        .filter(|r| r["event"] == "config")
        .map(|r| {
            (
                r["trigger"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        config_events,
        [
            ("startup", "applied"),
            ("admin", "applied"),
            ("admin", "refused"),
            ("admin", "refused")
        ]
    );
    let applied = audit.iter().find(|r| r["trigger"] == "admin").unwrap();
    assert_ne!(applied["old_digest"], applied["new_digest"]);
    assert_eq!(applied["new_digest"].as_str().unwrap().len(), 64);
    assert!(
        audit
            .iter()
            .any(|r| r["event"] == "admin" && r["path"] == "/reload" && r["status"] == 422)
    );
}

#[tokio::test]
async fn session_tickets_survive_a_reload() {
    let setup = Setup::new().await;
    let file = setup.pki.dir.path().join("tickets.toml");
    std::fs::write(&file, setup.toml("")).unwrap();
    let proxy = support::start_file(&file).await;
    let client = setup.pki.client(&[b"http/1.1"]);
    let first = tls_connect(proxy.https_addr, "localhost", client.clone())
        .await
        .unwrap();
    // TLS 1.3 tickets arrive after the handshake; a read lets the client take them in.
    let mut first = first;
    tokio::io::AsyncWriteExt::write_all(&mut first, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    support::read_response(&mut first).await;
    drop(first);
    proxy
        .reload_file(portcullis::audit::Trigger::Signal)
        .unwrap();
    let second = tls_connect(proxy.https_addr, "localhost", client)
        .await
        .unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the session was not resumed after a reload"
    );
}

/// Attacks on the admin listener itself (issue #9, item 9).
mod attacks {
    use std::net::IpAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::admin_toml;
    use super::support::employees::{Employees, client, gateway_toml};
    use super::support::{
        self, ConfigToml, Setup, WAIT, exchange, status_of, strings, tcp_from, tls_connect,
    };

    const GET_METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";

    #[tokio::test]
    async fn admin_listener_keeps_the_accept_filters_and_a_connection_limit() {
        let setup = Setup::new().await;
        // 127.66/16 is denied; 127.50/16 belongs to an environment we peer to (it never
        // reaches us).
        let toml = ConfigToml::parse(&admin_toml(&setup, ""))
            .set("networks.test", strings(&["127.0.0.1/32", "::1/128"]))
            .set("networks.db", strings(&["127.50.0.0/16"]))
            .push("peerings", &[("from", "test".into()), ("to", "db".into())])
            .set("access.deny_clients", strings(&["127.66.0.0/16"]))
            .text();
        let proxy = support::start_toml(&toml).await;
        let addr = proxy.admin_addr.unwrap();
        for from in ["127.66.0.5", "127.50.0.9"] {
            let local: IpAddr = from.parse().unwrap();
            let answer = match tcp_from(Some(local), addr).await {
                Ok(mut tcp) => exchange(&mut tcp, GET_METRICS).await,
                Err(_) => String::new(),
            };
            assert!(
                answer.is_empty(),
                "{from} was answered on the admin listener: {answer}"
            );
        }
        let mut local = tcp_from(None, addr).await.unwrap();
        assert_eq!(
            status_of(&exchange(&mut local, GET_METRICS).await),
            Some(200)
        );

        // Sixteen idle connections fill the admin limit: the next one waits in the backlog.
        let mut idle = Vec::new();
        for _ in 0..16 {
            idle.push(tcp_from(None, addr).await.unwrap());
        }
        let mut waiting = tcp_from(None, addr).await.unwrap();
        waiting.write_all(GET_METRICS).await.unwrap();
        let mut buf = [0u8; 16];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            waiting.read(&mut buf),
        )
        .await;
        assert!(
            early.is_err(),
            "served past the admin connection limit: {early:?}"
        );
        drop(idle.pop());
        let mut answer = Vec::new();
        let read = tokio::time::timeout(WAIT, waiting.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "a freed slot was not used");
        assert_eq!(status_of(&String::from_utf8_lossy(&answer)), Some(200));
        drop(idle);
        assert!(proxy.shutdown().await);
    }

    #[tokio::test]
    async fn admin_off_loopback_needs_employee_certificates() {
        let setup = Setup::new().await;
        let employees = Employees::new();
        let gateway = gateway_toml(&setup, &employees, 666);
        for listen in ["10.1.2.3:9900", "192.168.1.1:9900"] {
            let toml = setup.toml(&format!("[admin]\nlisten = \"{listen}\"\n"));
            support::assert_refused(&toml, "admin.listen");
            let with_grant = setup.toml(&format!(
                "{gateway}[admin]\nlisten = \"{listen}\"\nallow = [\"group:ops\"]\n"
            ));
            assert!(
                support::config_from(&with_grant).is_ok(),
                "{listen} with a grant"
            );
        }
        support::assert_refused(
            &setup.toml("[admin]\nlisten = \"127.0.0.1:0\"\nallow = [\"bob\"]\n"),
            "admin.allow",
        );
        support::assert_refused(
            &setup.toml(&format!(
                "{gateway}[admin]\nlisten = \"127.0.0.1:0\"\nallow = [\"group:nobody\"]\n"
            )),
            "admin.allow[0]",
        );

        let toml = setup.toml(&format!(
            "{gateway}[admin]\nlisten = \"127.0.0.1:0\"\nallow = [\"group:ops\"]\n"
        ));
        let proxy = support::start_toml(&toml).await;
        let addr = proxy.admin_addr.unwrap();
        let ask = |identity| {
            let config = client(&setup, identity);
            async move {
                match tls_connect(addr, "localhost", config).await {
                    Ok(mut tls) => status_of(&exchange(&mut tls, GET_METRICS).await),
                    Err(_) => None,
                }
            }
        };
        assert_eq!(
            ask(Some(employees.valid("bob", 2))).await,
            Some(200),
            "granted"
        );
        assert_eq!(
            ask(Some(employees.valid("alice", 1))).await,
            Some(403),
            "not granted"
        );
        assert_eq!(ask(None).await, None, "no certificate, no admin");
        assert_eq!(
            ask(Some(employees.valid("bob", 666))).await,
            None,
            "revoked"
        );
        let mut plain = tcp_from(None, addr).await.unwrap();
        assert_eq!(
            status_of(&exchange(&mut plain, GET_METRICS).await),
            None,
            "plain HTTP"
        );
        assert!(proxy.shutdown().await);

        let audit = setup.audit_text();
        // A granted scrape is counted, not audited; a refused one is an access attempt.
        assert!(!audit.contains("\"user\":\"bob\""), "{audit}");
        assert!(
            audit.contains(
                "\"user\":\"alice\",\"method\":\"GET\",\"path\":\"/metrics\",\"status\":403"
            ),
            "{audit}"
        );
    }
}

/// A refused reload says why in the operational log, whichever way it came: `POST /reload`
/// (whose caller also gets the errors) and SIGHUP alike, each time with the key at fault.
#[test]
fn a_refused_reload_is_logged_with_its_errors_by_either_trigger() {
    let setup = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Setup::new());
    let dir = setup.pki.dir.path();
    let file = dir.join("reload.toml");
    let admin_port = support::free_port();
    let good = setup
        .config()
        .set("admin.listen", format!("127.0.0.1:{admin_port}"))
        .set("server.allow_root", true);
    std::fs::write(&file, good.text()).unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.args(["run", "-c", file.to_str().unwrap()]);
    let proxy = support::spawn_until_listening_keeping(command, lines.clone());
    std::fs::write(&file, good.set("limits.handshake_timeout", "0s").text()).unwrap();
    let refused = |what: &str| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let said = lines.lock().unwrap().join("\n");
            let count = said.matches("reload refused").count();
            if count >= 1 && said.contains("limits.handshake_timeout") {
                return count;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {said}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let answer = std::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            &format!("http://127.0.0.1:{admin_port}/reload"),
        ])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&answer.stdout);
    assert!(body.contains("limits.handshake_timeout"), "{body}");
    assert_eq!(refused("POST /reload"), 1);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &proxy.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + WAIT;
    while refused("SIGHUP") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP's refusal was not logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
