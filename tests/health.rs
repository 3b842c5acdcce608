//! The health listener for load balancers. It proves that:
//! - a real HAProxy health-checks two instances through `[health] listen` while sending their
//!   traffic with `send-proxy-v2`; when one shuts down with a drain delay, HAProxy marks it down
//!   before it stops accepting, and no client request through HAProxy fails;
//! - 1,000 probes (health listener and admin listener) add no audit line and no INFO line, and
//!   are counted in `portcullis_health_checks_total`; a reload in the same run is both;
//! - the listener answers only `GET`/`HEAD` of `/livez` and `/readyz`, only to `[health] allow`
//!   (closed at accept for anyone else), and is refused on a public address or with a public
//!   range.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{
    Client, Setup, Spawned, WAIT, assert_refused_with, closed_by_peer, exchange, free_port,
    raw_tcp, status_of, strings, tcp_from,
};
use tokio::io::AsyncWriteExt;

/// How long the drained instance keeps serving with `/readyz` failing.
const DRAIN_DELAY: Duration = Duration::from_secs(3);

/// The base config behind a balancer on 127.0.0.1 with a health listener; its own log `dir`.
fn behind_haproxy(setup: &Setup, logs: &Path) -> String {
    setup
        .config()
        .set("listen.proxy_protocol_from", strings(&["127.0.0.1/32"]))
        .set("health.listen", "127.0.0.1:0")
        .set("log.dir", logs.to_str().unwrap())
        .set("limits.drain_delay", "3s")
        .set("limits.shutdown_grace", "5s")
        .text()
}

/// HAProxy in TCP mode in front of `servers` (name, traffic address, health address):
/// PROXY v2 on traffic, HTTP checks of `/readyz` on the health port every 200 ms.
fn start_haproxy(dir: &Path, frontend: u16, servers: &[(&str, SocketAddr, SocketAddr)]) -> Spawned {
    let mut config = format!(
        "global\n  stats socket {sock} mode 600 level admin\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend edge\n  bind 127.0.0.1:{frontend}\n  default_backend proxies\n\
         backend proxies\n  balance roundrobin\n  option httpchk\n\
         \x20 http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host health\n\
         \x20 http-check expect status 200\n  default-server inter 200ms fall 1 rise 1\n",
        sock = dir.join("haproxy.sock").display(),
    );
    for (name, traffic, health) in servers {
        config.push_str(&format!(
            "  server {name} {traffic} send-proxy-v2 check addr {} port {}\n",
            health.ip(),
            health.port()
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = std::process::Command::new("haproxy")
        .args(["-c", "-f", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy refused the config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    Spawned(
        std::process::Command::new("haproxy")
            .args(["-db", "-f", path.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Each server's status (`UP`, `DOWN`, ...) as HAProxy's stats socket says now.
async fn server_states(dir: &Path) -> Vec<(String, String)> {
    use tokio::io::AsyncReadExt;
    let Ok(mut socket) = tokio::net::UnixStream::connect(dir.join("haproxy.sock")).await else {
        return Vec::new();
    };
    let _ = socket.write_all(b"show stat\n").await;
    let mut text = String::new();
    let _ = tokio::time::timeout(WAIT, socket.read_to_string(&mut text)).await;
    let mut lines = text.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
        return Vec::new();
    };
    let column = |name: &str| header.split(',').position(|c| c == name);
    let (Some(sv), Some(status)) = (column("svname"), column("status")) else {
        return Vec::new();
    };
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|fields| fields.len() > status && !["FRONTEND", "BACKEND"].contains(&fields[sv]))
        .map(|fields| (fields[sv].to_owned(), fields[status].to_owned()))
        .collect()
}

/// Polls the stats socket until `want` holds, for at most `within`.
async fn wait_for_states(
    dir: &Path,
    within: Duration,
    want: impl Fn(&[(String, String)]) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if want(&server_states(dir).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn is(states: &[(String, String)], server: &str, status: &str) -> bool {
    states
        .iter()
        .any(|(s, st)| s == server && st.starts_with(status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_checks_the_health_listener_and_a_drain_loses_no_request() {
    if !support::require_tool("haproxy") {
        return;
    }
    let setup = Arc::new(Setup::new().await);
    let dir = setup.pki.dir.path().to_owned();
    let a = support::start_toml(&behind_haproxy(&setup, &dir.join("logs-a"))).await;
    let b = Arc::new(support::start_toml(&behind_haproxy(&setup, &dir.join("logs-b"))).await);
    let frontend = free_port();
    let _haproxy = start_haproxy(
        &dir,
        frontend,
        &[
            ("a", a.https_addr, a.health_addr.unwrap()),
            ("b", b.https_addr, b.health_addr.unwrap()),
        ],
    );
    assert!(
        wait_for_states(&dir, WAIT, |s| is(s, "a", "UP") && is(s, "b", "UP")).await,
        "HAProxy never saw both instances up: {:?}",
        server_states(&dir).await
    );
    let edge = SocketAddr::from(([127, 0, 0, 1], frontend));
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    // A client that opens a new connection for every request, as browsers behind a balancer
    // spread over instances do; bounded in count.
    let client = {
        let (setup, stop, served, failures) = (
            setup.clone(),
            stop.clone(),
            served.clone(),
            failures.clone(),
        );
        tokio::spawn(async move {
            for _ in 0..5000 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let answer = tokio::time::timeout(WAIT, async {
                    let mut client = Client::connect(false, edge, "localhost", &setup.pki).await;
                    client.get("localhost", "/").await.status.as_u16()
                })
                .await;
                match answer {
                    Ok(200) => {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failures.lock().unwrap().push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leaving_at = Instant::now();
    let stopping = b.clone();
    let stopped = tokio::spawn(async move { stopping.shutdown().await });
    // `/readyz` fails at once; HAProxy checks every 200 ms and marks b down after one failure,
    // long before b stops accepting at the end of its drain delay.
    assert!(
        wait_for_states(&dir, DRAIN_DELAY, |s| is(s, "b", "DOWN")).await,
        "HAProxy did not mark the leaving instance down within its drain delay: {:?}",
        server_states(&dir).await
    );
    assert!(leaving_at.elapsed() < DRAIN_DELAY);
    assert!(stopped.await.unwrap(), "b did not drain in its grace");
    let after_b = served.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests through HAProxy failed: {failures:?}"
    );
    assert!(
        served.load(Ordering::SeqCst) > after_b,
        "nothing was served after b left"
    );
    assert!(is(&server_states(&dir).await, "a", "UP"));
    a.shutdown().await;
}

/// Reads the proxy's stderr so far.
fn stderr_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_probes_leave_no_audit_line_and_no_info_line() {
    let setup = Setup::new().await;
    let dir = setup.pki.dir.path().to_owned();
    let config = dir.join("probes.toml");
    let admin_port = free_port();
    std::fs::write(
        &config,
        setup
            .config()
            .set("health.listen", "127.0.0.1:0")
            .set("admin.listen", format!("127.0.0.1:{admin_port}"))
            .set("server.allow_root", true)
            .text(),
    )
    .unwrap();
    let stderr_path = dir.join("stderr.txt");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(["run", "-c", config.to_str().unwrap()])
        .env("PORTCULLIS_LOG", "info")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut proxy = Spawned(command.spawn().unwrap());
    let deadline = Instant::now() + WAIT;
    let listening = loop {
        let text = stderr_of(&stderr_path);
        if let Some(line) = text.lines().find(|l| l.contains("listening")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "proxy did not start: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let health = addr_after(&listening, "health=Some(");
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let before = stderr_of(&stderr_path).lines().count();
    let paths = [
        (health, "/livez"),
        (health, "/readyz"),
        (admin, "/healthz"),
        (admin, "/livez"),
        (admin, "/readyz"),
        (admin, "/metrics"),
    ];
    // Half on keep-alive connections, half on a connection each, as balancers do both.
    let mut keep_alive = Vec::new();
    for &(addr, _) in &paths {
        keep_alive.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for i in 0..1000 {
        let which = i % paths.len();
        let (addr, path) = paths[which];
        if i % 2 == 0 {
            let head = format!("GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n");
            keep_alive[which].write_all(head.as_bytes()).await.unwrap();
            let answer = support::read_response(&mut keep_alive[which]).await;
            assert_eq!(status_of(&answer), Some(200), "{path}: {answer}");
        } else {
            let head = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
            let answer = raw_tcp(addr, head.as_bytes()).await;
            assert_eq!(status_of(&answer), Some(200), "{path}: {answer}");
        }
    }
    let metrics = raw_tcp(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n",
    )
    .await;
    // Every probe but the scrapes of /metrics is a health check.
    let health_checks = (0..1000)
        .filter(|i| paths[i % paths.len()].1 != "/metrics")
        .count() as u64;
    let counted: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("portcullis_health_checks_total{") && l.contains("result=\"pass\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, health_checks, "{metrics}");
    // The control: a reload is an admin action, audited and logged; its lines come after any
    // the probes would have written.
    let reload = raw_tcp(
        admin,
        b"POST /reload HTTP/1.1\r\nHost: probe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reload), Some(200), "{reload}");
    let deadline = Instant::now() + WAIT;
    while !stderr_of(&stderr_path).contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "the reload was never logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr = stderr_of(&stderr_path);
    let info: Vec<&str> = stderr
        .lines()
        .skip(before)
        .filter(|l| l.contains(" INFO "))
        .collect();
    assert!(
        info.iter().any(|l| l.contains("/reload")),
        "the control's INFO line is missing: {stderr}"
    );
    let probes: Vec<&&str> = info
        .iter()
        .filter(|l| !l.contains("/reload") && !l.contains("configuration reloaded"))
        .collect();
    assert!(probes.is_empty(), "probes were logged at INFO: {probes:?}");
    // Admin lines are counted per minute and written at its end or at shutdown.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + WAIT;
    while proxy.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the proxy did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let audit = setup.audit();
    assert!(
        audit.iter().any(|r| r["path"] == "/reload"),
        "the reload was never audited: {audit:?}"
    );
    for record in audit {
        let reload = record["path"] == "/reload" || record["event"] == "config";
        assert!(reload, "a probe reached the audit trail: {record}");
    }
}

/// The address printed after `key` in the "listening" line.
fn addr_after(line: &str, key: &str) -> SocketAddr {
    let start = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
    let end = line[start..].find(')').unwrap() + start;
    line[start..end].parse().unwrap()
}

#[tokio::test]
async fn the_listener_answers_probes_only_and_only_to_its_networks() {
    let setup = Setup::new().await;
    let proxy = support::start_toml(
        &setup
            .config()
            .set("health.listen", "127.0.0.1:0")
            .set("health.allow", strings(&["127.0.0.1/32"]))
            .text(),
    )
    .await;
    let health = proxy.health_addr.unwrap();
    for (request, status) in [
        ("GET /livez HTTP/1.1\r\nHost: h\r\n\r\n", 200),
        ("HEAD /readyz HTTP/1.1\r\nHost: h\r\n\r\n", 200),
        (
            "POST /readyz HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            405,
        ),
        ("GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n", 404),
        ("GET /reload HTTP/1.1\r\nHost: h\r\n\r\n", 404),
        ("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
        ("GET /readyz/../metrics HTTP/1.1\r\nHost: h\r\n\r\n", 404),
    ] {
        let closing = request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        let answer = raw_tcp(health, closing.as_bytes()).await;
        assert_eq!(status_of(&answer), Some(status), "{request:?}: {answer}");
    }
    // From 127.0.0.2, outside `allow`: closed before a byte is answered.
    let mut outside = tcp_from(Some([127, 0, 0, 2].into()), health).await.unwrap();
    let answer = exchange(&mut outside, b"GET /readyz HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(answer.is_empty(), "answered outside allow: {answer:?}");
    let mut outside = tcp_from(Some([127, 0, 0, 2].into()), health).await.unwrap();
    assert!(closed_by_peer(&mut outside).await);
}

#[tokio::test]
async fn a_drained_instance_fails_readyz_on_the_health_listener_while_serving() {
    let setup = Setup::new().await;
    let proxy = Arc::new(
        support::start_toml(
            &setup
                .config()
                .set("health.listen", "127.0.0.1:0")
                .set("limits.drain_delay", "2s")
                .text(),
        )
        .await,
    );
    let health = proxy.health_addr.unwrap();
    let stopping = proxy.clone();
    let stopped = tokio::spawn(async move { stopping.shutdown().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let readyz = raw_tcp(
        health,
        b"GET /readyz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&readyz), Some(503), "{readyz}");
    assert!(readyz.contains("shutting down"), "{readyz}");
    let livez = raw_tcp(
        health,
        b"GET /livez HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&livez), Some(200), "{livez}");
    let mut client = Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
    assert_eq!(client.get("localhost", "/").await.status, 200);
    assert!(stopped.await.unwrap());
}

#[tokio::test]
async fn a_health_listener_reachable_from_outside_is_refused() {
    let setup = Setup::new().await;
    let base = setup.config();
    assert_refused_with(
        &base.clone().set("health.listen", "0.0.0.0:8081").text(),
        "health.listen",
        "is public",
    );
    assert_refused_with(
        &base.clone().set("health.listen", "203.0.113.7:8081").text(),
        "health.listen",
        "is public",
    );
    assert_refused_with(
        &base
            .set("health.listen", "10.0.0.5:8081")
            .set("health.allow", strings(&["10.0.0.0/8", "0.0.0.0/0"]))
            .text(),
        "health.allow[1]",
        "0.0.0.0/0",
    );
}
