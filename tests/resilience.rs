//! Upstreams that fail without clients noticing. With real upstream servers on loopback, it
//! proves that:
//! - one of two addresses killed under a steady load of GETs from several clients costs no GET:
//!   requests it dropped go again to the other, the access log counts them, and the dead address
//!   is ejected;
//! - a POST whose upstream dropped the connection after reading it is never sent again (each
//!   reaches exactly one upstream once), while a PUT, idempotent, is;
//! - an address answering its health check 503 gets no traffic within `interval x unhealthy`
//!   and gets it back once it passes again; with every address down, requests get 503 at once;
//! - under p2c a slow address gets less traffic than a fast one; round-robin, the control,
//!   gives both the same;
//! - each bad setting is refused under its key.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use support::upstream::Upstream;
use support::{Client, Setup, WAIT, metrics, problem_lines, request, start_toml, strings};

/// A proxy sending `localhost` to the two upstreams, with an admin listener; `extra` is TOML
/// merged into `[upstreams.app]`'s table and the rest.
async fn two_addresses(
    setup: &Setup,
    a: &Upstream,
    b: &Upstream,
    extra: &str,
) -> portcullis::Running {
    let toml = setup
        .config()
        .set(
            "upstreams.app.addrs",
            strings(&[&a.addr.to_string(), &b.addr.to_string()]),
        )
        .set("admin.listen", "127.0.0.1:0")
        .merge(extra);
    start_toml(&toml.text()).await
}

/// The sample of `name` whose labels include `labels`, if any.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits until the address's state metric is `state`.
async fn wait_for_state(admin: SocketAddr, address: SocketAddr, state: &str) {
    let labels = format!("address=\"{address}\",state=\"{state}\"");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics(admin).await;
        if sample(&text, "portcullis_upstream_address_state", &labels) == Some(1.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{address} never {state}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn access_values(setup: &Setup, key: &str) -> Vec<serde_json::Value> {
    setup
        .access_lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[key].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_address_under_load_costs_no_get() {
    let setup = Setup::new().await;
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let proxy = two_addresses(&setup, &a, &b, "").await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let done = done.clone();
        let mut client = Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..150 {
                statuses.push(client.get("localhost", "/slow/2").await.status);
                done.fetch_add(1, Ordering::SeqCst);
            }
            statuses
        }));
    }
    let deadline = Instant::now() + WAIT;
    while done.load(Ordering::SeqCst) < 100 {
        assert!(Instant::now() < deadline, "load never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.kill();
    let mut statuses = Vec::new();
    for client in clients {
        statuses.extend(client.await.unwrap());
    }
    let failed: Vec<_> = statuses.iter().filter(|s| s.as_u16() != 200).collect();
    assert_eq!(statuses.len(), 600);
    assert!(
        failed.is_empty(),
        "{} of 600 failed: {failed:?}",
        failed.len()
    );
    assert!(
        b.hits() > 0 && a.hits() > 300,
        "a {} b {}",
        a.hits(),
        b.hits()
    );
    let admin = proxy.admin_addr.unwrap();
    wait_for_state(admin, b.addr, "ejected").await;
    let text = metrics(admin).await;
    let retries = sample(
        &text,
        "portcullis_upstream_retries_total",
        "upstream=\"app\"",
    );
    assert!(retries.is_some_and(|r| r >= 1.0), "{text}");
    proxy.shutdown().await;
    let logged: u64 = access_values(&setup, "retries")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(logged >= 1, "no retry in the access log");
    let lines = setup.access_lines().join("\n");
    assert!(
        !lines.contains(&b.addr.to_string()),
        "an address in the access log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_reached_an_upstream_is_never_sent_again() {
    let setup = Setup::new().await;
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let proxy = two_addresses(&setup, &a, &b, "[upstreams.app.outlier]\nconsecutive = 0\n").await;
    let mut client = Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
    let body = || Full::new(Bytes::from_static(b"pay 100 once"));
    for i in 1..=10 {
        let post = request("POST", "localhost", "/reset").body(body()).unwrap();
        assert_eq!(client.send(post).await.status, 502);
        // Each upstream read it whole before dropping the connection: exactly one did, once.
        assert_eq!(a.hits() + b.hits(), i, "a POST went twice");
    }
    // The control: a PUT is idempotent, so it goes again, to the other address.
    let (a_before, b_before) = (a.hits(), b.hits());
    let put = request("PUT", "localhost", "/reset").body(body()).unwrap();
    assert_eq!(client.send(put).await.status, 502);
    assert_eq!(a.hits() + b.hits(), 12, "a PUT was not tried again");
    assert_eq!(
        (a.hits() - a_before, b.hits() - b_before),
        (1, 1),
        "the PUT went twice to one address"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_failing_its_health_check_gets_no_traffic_until_it_passes() {
    let setup = Setup::new().await;
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let health = "[upstreams.app.health]\npath = \"/healthz\"\ninterval = \"200ms\"\n\
                  timeout = \"150ms\"\nunhealthy = 2\nhealthy = 2\n";
    let proxy = two_addresses(&setup, &a, &b, health).await;
    let admin = proxy.admin_addr.unwrap();
    let mut client = Client::connect(true, proxy.https_addr, "localhost", &setup.pki).await;
    let probes = b.health_probes();
    b.set_health(503);
    wait_for_state(admin, b.addr, "down").await;
    // Down after `unhealthy` failed checks, counted in checks rather than seconds (the scrape
    // that saw it may come a check later, and one check may straddle the change).
    let failed = b.health_probes() - probes;
    assert!(
        (2..=3).contains(&failed),
        "down after {failed} failed checks"
    );
    let before = b.hits();
    for _ in 0..40 {
        assert_eq!(client.get("localhost", "/").await.status, 200);
    }
    assert_eq!(b.hits(), before, "a down address got traffic");

    b.set_health(200);
    wait_for_state(admin, b.addr, "up").await;
    for _ in 0..40 {
        assert_eq!(client.get("localhost", "/").await.status, 200);
    }
    assert!(b.hits() > before, "a recovered address got no traffic");

    // Every address down: 503 at once, not a timeout each.
    a.set_health(503);
    b.set_health(503);
    wait_for_state(admin, a.addr, "down").await;
    wait_for_state(admin, b.addr, "down").await;
    let (a_hits, b_hits) = (a.hits(), b.hits());
    let answer = client.get("localhost", "/").await;
    assert_eq!(answer.status, 503);
    assert_eq!((a.hits(), b.hits()), (a_hits, b_hits));
    assert!(a.health_probes() > 4 && b.health_probes() > 4);
    proxy.shutdown().await;
    let errors = access_values(&setup, "error");
    assert_eq!(errors.last().unwrap(), "upstream_unavailable");
}

/// How many of `n` GETs from 8 concurrent clients the slow address `b` got.
async fn share_of_slow(balance: &str) -> (usize, usize) {
    let setup = Setup::new().await;
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    b.set_delay(Duration::from_millis(40));
    let extra = format!("[upstreams.app]\nbalance = \"{balance}\"\n");
    let proxy = two_addresses(&setup, &a, &b, &extra).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut client = Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
        clients.push(tokio::spawn(async move {
            for _ in 0..25 {
                assert_eq!(client.get("localhost", "/").await.status, 200);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    proxy.shutdown().await;
    (b.hits(), a.hits() + b.hits())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_address_gets_less_traffic_under_p2c() {
    let (slow, total) = share_of_slow("p2c").await;
    assert_eq!(total, 200);
    assert!(
        slow * 4 < total,
        "p2c sent the slow address {slow} of {total}"
    );
    // The control: in turn, each gets half.
    let (slow, total) = share_of_slow("round_robin").await;
    assert!(
        (80..=120).contains(&slow),
        "round-robin sent {slow} of {total}"
    );
}

#[test]
fn each_bad_setting_is_refused_under_its_key() {
    let base = r#"
environment = "test"
[listen]
https = "127.0.0.1:0"
[[tls.certificates]]
cert = "c.pem"
key = "k.pem"
[networks]
test = ["127.0.0.0/8"]
[[routes]]
host = "localhost"
upstream = "app"
[upstreams.app]
environment = "test"
addrs = ["127.0.0.1:8080"]
"#;
    let cases = [
        ("balance = \"fastest\"", "upstreams.app.balance"),
        ("retries = 9", "upstreams.app.retries: at most 5"),
        ("retry_budget = 1.5", "upstreams.app.retry_budget"),
        (
            "[upstreams.app.health]\npath = \"/h\"\ntcp = true",
            "upstreams.app.health: a health check needs exactly one",
        ),
        (
            "[upstreams.app.health]\ntcp = false",
            "upstreams.app.health: a health check",
        ),
        (
            "[upstreams.app.health]\npath = \"h\"",
            "upstreams.app.health.path",
        ),
        (
            "[upstreams.app.health]\npath = \"/h\"\nstatus = \"2xx\"",
            "upstreams.app.health.status",
        ),
        (
            "[upstreams.app.health]\ntcp = true\ninterval = \"1s\"\ntimeout = \"2s\"",
            "upstreams.app.health.timeout: must not exceed interval",
        ),
        (
            "[upstreams.app.health]\ntcp = true\nunhealthy = 0",
            "upstreams.app.health.unhealthy",
        ),
        (
            "[upstreams.app.health]\ntcp = true\ninterval = \"soon\"",
            "upstreams.app.health.interval",
        ),
        (
            "[upstreams.app.outlier]\nmax_ejected_percent = 0",
            "upstreams.app.outlier.max_ejected_percent",
        ),
        (
            "[upstreams.app.outlier]\nbase_ejection = \"1m\"\nmax_ejection = \"10s\"",
            "upstreams.app.outlier.max_ejection",
        ),
        (
            "[upstreams.app.outlier]\ncount_5xx = \"some\"",
            "upstreams.app.outlier.count_5xx",
        ),
    ];
    for (extra, expected) in cases {
        let text = format!("{base}{extra}\n");
        let lines = problem_lines(&text);
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "{extra}: expected {expected}, got {lines:#?}"
        );
    }
}
