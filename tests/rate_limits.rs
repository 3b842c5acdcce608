//! Clients that cannot overrun an upstream. From outside, over real TLS, it proves that:
//! - a client over its route's `limit` gets `429` with a `Retry-After` it can wait out, and the
//!   upstream never sees those requests, while a client from another address, and the same
//!   client on a route without a limit, are served;
//! - new connections over `[access] connection_rate` are closed before TLS, per address;
//! - two instances sharing a real Redis (and a session key) enforce one route limit between
//!   them, the store holding no client address; with the store down each counts alone rather
//!   than refusing; a store that lies "allowed" cannot lift a client past what one instance
//!   allows;
//! - breaches are metrics by limit, and `check` shows each limit in its exposure section.
//!
//! The gateway's own limits (`mfa_rate`, `connect_rate`) are tested beside the form and the
//! tunnels (`gateway_attacks.rs`, `tunnels.rs`).

mod support;

use std::net::IpAddr;

use support::employees::Employees;
use support::redis::{FakeRedis, Redis, redis_shared_keyed};
use support::{Client, Setup, metrics, start_toml, tls_connect_from};

const ELSEWHERE: &str = "127.0.0.2";

fn table(text: &str) -> toml::Value {
    toml::Value::Table(toml::from_str(text).unwrap())
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The value of `portcullis_rate_limited_total{limit="<limit>"}`, 0 when absent.
fn breaches(text: &str, limit: &str) -> u64 {
    let series = format!("portcullis_rate_limited_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_route_limit_gets_429_while_others_are_served() {
    let setup = Setup::new().await;
    let toml = setup
        .config()
        .merge("[admin]\nlisten = \"127.0.0.1:0\"\n")
        .set("routes[0].limit", table("rate = \"2/m\"\nburst = 3"));
    let proxy = start_toml(&toml.text()).await;
    let mut near = Client::connect_from(
        Some(ip("127.0.0.1")),
        false,
        proxy.https_addr,
        "localhost",
        &setup.pki,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(near.get("localhost", "/").await.status, 200);
    }
    let hits = setup.app.hits();
    let over = near.get("localhost", "/").await;
    assert_eq!(over.status, 429);
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    // One more every 30 seconds: the next one is due within that.
    assert!((1..=30).contains(&retry), "retry-after {retry}");
    assert_eq!(
        setup.app.hits(),
        hits,
        "a refused request reached the upstream"
    );
    // Another route of the same client has no limit.
    assert_eq!(near.get("app.test", "/").await.status, 200);
    // Over HTTP/2 on a new connection: the count is the address's, not the connection's.
    let mut again = Client::connect_from(
        Some(ip("127.0.0.1")),
        true,
        proxy.https_addr,
        "localhost",
        &setup.pki,
    )
    .await;
    assert_eq!(again.get("localhost", "/").await.status, 429);
    let mut far = Client::connect_from(
        Some(ip(ELSEWHERE)),
        false,
        proxy.https_addr,
        "localhost",
        &setup.pki,
    )
    .await;
    assert_eq!(far.get("localhost", "/").await.status, 200);
    let text = metrics(proxy.admin_addr.unwrap()).await;
    assert_eq!(breaches(&text, "localhost/"), 2, "{text}");
    proxy.shutdown().await;
    let errors: Vec<String> = setup
        .access_lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["error"].to_string())
        .collect();
    assert_eq!(
        errors.iter().filter(|e| e.contains("rate_limited")).count(),
        2,
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_enforce_one_limit() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let setup = Setup::new().await;
    let employees = Employees::new();
    let shared = redis_shared_keyed(&employees, redis.port, &redis.password);
    let toml = setup
        .config()
        .merge(&shared)
        .set("routes[0].limit", table("rate = \"2/m\"\nburst = 4"))
        .text();
    let described = portcullis::config::describe(&support::config_from(&toml).unwrap());
    assert!(
        described.contains("429 beyond it (counted across instances in Redis mfa-store)"),
        "{described}"
    );
    let (a, b) = (start_toml(&toml).await, start_toml(&toml).await);
    let client = |proxy: &portcullis::Running, from: &str| {
        let addr = proxy.https_addr;
        let from = ip(from);
        let pki = &setup.pki;
        async move { Client::connect_from(Some(from), false, addr, "localhost", pki).await }
    };
    let (mut to_a, mut to_b) = (client(&a, "127.0.0.1").await, client(&b, "127.0.0.1").await);
    let mut passed = 0;
    for _ in 0..4 {
        for sender in [&mut to_a, &mut to_b] {
            match sender.get("localhost", "/").await.status.as_u16() {
                200 => passed += 1,
                429 => {}
                other => panic!("status {other}"),
            }
        }
    }
    // One burst of 4 between them; each counting alone would have let all 8 through.
    assert_eq!(passed, 4);
    let keys = redis.keys();
    assert!(
        keys.contains("portcullis:rate:") && !keys.contains("127.0.0"),
        "{keys}"
    );
    // The store down: served, counted by each instance alone.
    redis.stop();
    let mut elsewhere = client(&a, "127.0.0.5").await;
    assert_eq!(elsewhere.get("localhost", "/").await.status, 200);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_answering_allowed_cannot_lift_the_limit() {
    let liar = FakeRedis::answering("*2\r\n:1\r\n:0\r\n", "").await;
    let setup = Setup::new().await;
    let employees = Employees::new();
    let shared = redis_shared_keyed(&employees, liar.port, "any");
    let toml = setup
        .config()
        .merge(&shared)
        .set("routes[0].limit", table("rate = \"2/m\"\nburst = 3"))
        .text();
    let proxy = start_toml(&toml).await;
    let mut client = Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(client.get("localhost", "/").await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert!(
        liar.seen("EVALSHA") || liar.seen("EVAL"),
        "the store was never asked"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_rate_are_closed_before_tls() {
    let setup = Setup::new().await;
    let toml = setup
        .config()
        .merge("[admin]\nlisten = \"127.0.0.1:0\"\n[access]\nconnection_rate = { rate = \"1/m\", burst = 2 }\n");
    let proxy = start_toml(&toml.text()).await;
    let client = setup.pki.client(&[b"http/1.1"]);
    let near = Some(ip("127.0.0.3"));
    for _ in 0..2 {
        let tls = tls_connect_from(near, proxy.https_addr, "localhost", client.clone()).await;
        assert!(tls.is_ok(), "{:?}", tls.err());
    }
    let refused = tls_connect_from(near, proxy.https_addr, "localhost", client.clone()).await;
    assert!(
        refused.is_err(),
        "a third connection within the minute got a handshake"
    );
    let far = tls_connect_from(Some(ip("127.0.0.4")), proxy.https_addr, "localhost", client).await;
    assert!(far.is_ok(), "another address was refused: {:?}", far.err());
    let text = metrics(proxy.admin_addr.unwrap()).await;
    assert_eq!(breaches(&text, "connections"), 1, "{text}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn check_shows_each_limit_and_bad_ones_are_refused_by_key() {
    let setup = Setup::new().await;
    let toml = setup
        .config()
        .merge("[access]\nconnection_rate = { rate = \"50/s\", burst = 100 }\n")
        .set("routes[0].limit", table("rate = \"20/s\"\nburst = 40"));
    let config = support::config_from(&toml.text()).unwrap();
    let described = portcullis::config::describe(&config);
    assert!(
        described.contains("new connections per client: 50/s, burst 100"),
        "{described}"
    );
    assert!(
        described.contains("localhost/ requests per client: 20/s, burst 40"),
        "{described}"
    );
    for (limit, key) in [
        ("rate = \"20/d\"", "routes[0].limit.rate"),
        ("rate = \"0/s\"", "routes[0].limit.rate"),
        ("rate = \"20/s\"\nburst = 0", "routes[0].limit.burst"),
    ] {
        let text = setup.config().set("routes[0].limit", table(limit)).text();
        support::assert_refused(&text, key);
    }
    let text = setup
        .config()
        .merge("[access]\nconnection_rate = { rate = \"fast\" }\n")
        .text();
    support::assert_refused(&text, "access.connection_rate.rate");
}
