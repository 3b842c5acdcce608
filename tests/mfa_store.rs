//! The shared MFA store (`[shared] redis`) attacked as a lying dependency. It proves that:
//! - whatever answers on the store's address (a fake Redis speaking RESP that says "passed" to
//!   every attempt and holds a session for every key) can neither pass a code the proxy's own
//!   check failed nor open a tunnel without a code;
//! - `rediss://` speaks TLS to a real `redis-server` and checks its certificate against
//!   `redis_ca_file` and `redis_server_name`: another CA, another name, or a plain client on the
//!   TLS port get no judgement (503);
//! - bad Redis settings are refused, each under its key.

mod support;

use std::sync::Arc;

use support::employees::{Employees, client};
use support::redis::{
    FakeRedis, Redis, open_vault, post_code, private_file, redis_shared, toml, vault_tunnel,
};
use support::{Pki, Setup};

fn alice(setup: &Setup, employees: &Employees) -> Arc<rustls::ClientConfig> {
    client(setup, Some(employees.valid("alice", 1)))
}

#[tokio::test]
async fn a_store_that_says_passed_cannot_pass_a_wrong_code() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let alice = alice(&setup, &employees);
    let liar = FakeRedis::start("1").await;
    let shared = redis_shared(&employees, liar.port, "mfa-store", "any");
    let proxy = support::start_toml(&toml(&setup, &employees, &shared)).await;

    let wrong = post_code(&proxy, &alice, "000000").await;
    assert!(liar.seen("EVALSHA"), "the store was not asked");
    assert_ne!(wrong.status, 303, "a wrong code passed on the store's word");
    assert_eq!(wrong.status, 503, "{}", wrong.text());
    // A right code is ours to judge, and the store only remembers it: it passes.
    let right = post_code(&proxy, &alice, &employees.code(0)).await;
    assert_eq!(right.status, 303, "{}", right.text());
}

#[tokio::test]
async fn a_store_cannot_open_a_tunnel_session() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let alice = alice(&setup, &employees);
    // Any key holds a value: a bare one, and one shaped like a session far in the future.
    for planted in ["1", "99999999999.00112233445566778899aabbccddeeff"] {
        let liar = FakeRedis::start(planted).await;
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = format!(
            "{}{}",
            vault_tunnel(target.local_addr().unwrap()),
            redis_shared(&employees, liar.port, "mfa-store", "any")
        );
        let proxy = support::start_toml(&toml(&setup, &employees, &shared)).await;
        assert_eq!(
            open_vault(&proxy, &alice, None).await,
            401,
            "a tunnel opened without a code on a planted session {planted:?}"
        );
        assert!(liar.seen("GET") || liar.seen("EXISTS"), "store not asked");
    }
}

/// A Redis that speaks TLS with a certificate for `redis.test` from `pki`.
fn tls_redis(pki: &Pki) -> Option<Redis> {
    let (cert, key) = pki.leaf("redis", &["redis.test"]);
    Redis::start_tls(&cert, &key)
}

fn rediss(employees: &Employees, redis: &Redis, ca: &Pki, name: &str) -> String {
    redis_shared(employees, redis.port, "rediss://mfa-store", &redis.password)
        + &format!(
            "redis_ca_file = \"{}\"\nredis_server_name = \"{name}\"\n",
            ca.ca_pem.display()
        )
}

#[tokio::test]
async fn rediss_checks_the_store_certificate() {
    let pki = Pki::new(&["unused.test"]);
    let Some(redis) = tls_redis(&pki) else { return };
    let setup = Setup::new().await;
    let employees = Employees::new();
    let alice = alice(&setup, &employees);
    let shared = toml(
        &setup,
        &employees,
        &rediss(&employees, &redis, &pki, "redis.test"),
    );
    let described = portcullis::config::describe(&support::config_from(&shared).unwrap());
    assert!(
        described.contains("shared in Redis mfa-store (TLS, certificate for redis.test)"),
        "{described}"
    );
    let a = support::start_toml(&shared).await;
    let b = support::start_toml(&shared).await;
    let code = employees.code(0);
    let passed = post_code(&a, &alice, &code).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    assert_eq!(
        post_code(&b, &alice, &code).await.status,
        403,
        "the replay was not remembered over TLS"
    );

    let other_ca = Pki::new(&["unused.test"]);
    let plain = redis_shared(&employees, redis.port, "mfa-store", &redis.password);
    for (what, shared) in [
        (
            "a certificate from another CA",
            rediss(&employees, &redis, &other_ca, "redis.test"),
        ),
        (
            "a certificate for another name",
            rediss(&employees, &redis, &pki, "other.test"),
        ),
        ("plain TCP to the TLS port", plain),
    ] {
        let proxy = support::start_toml(&toml(&setup, &employees, &shared)).await;
        let answer = post_code(&proxy, &alice, &employees.code(1)).await;
        assert_eq!(answer.status, 503, "{what}: {}", answer.text());
    }
}

#[tokio::test]
async fn bad_redis_settings_are_refused_by_key() {
    let employees = Employees::new();
    let pki = Pki::new(&["unused.test"]);
    let store = "[upstreams.mfa-store]\nenvironment = \"test\"\naddrs = [\"127.0.0.1:6379\"]\n";
    let ca = format!("redis_ca_file = \"{}\"\n", pki.ca_pem.display());
    let not_a_ca = format!("redis_ca_file = \"{}\"\n", pki.key.display());
    let cases = [
        (
            "redis = \"http://mfa-store\"\n",
            "shared.redis",
            "rediss://NAME",
        ),
        (
            "redis = \"rediss://mfa-store/0\"\n",
            "shared.redis",
            "rediss://NAME",
        ),
        (
            "redis = \"rediss://mfa-store\"\n",
            "shared.redis_ca_file",
            "needs the CA file",
        ),
        (
            &format!("redis = \"mfa-store\"\n{ca}"),
            "shared.redis_ca_file",
            "applies to rediss:// only",
        ),
        (
            "redis = \"mfa-store\"\nredis_server_name = \"redis.test\"\n",
            "shared.redis_server_name",
            "applies to rediss:// only",
        ),
        (
            &format!("redis = \"rediss://mfa-store\"\n{ca}redis_server_name = \"bad name\"\n"),
            "shared.redis_server_name",
            "not a DNS name",
        ),
        (
            &format!("redis = \"rediss://mfa-store\"\n{not_a_ca}"),
            "shared.redis_ca_file",
            "holds no certificate",
        ),
        (
            &format!("redis = \"rediss://nowhere\"\n{ca}"),
            "shared.redis",
            "nowhere",
        ),
    ];
    let setup = Setup::new().await;
    for (shared, key, reason) in cases {
        let text = toml(&setup, &employees, &format!("{store}[shared]\n{shared}"));
        support::assert_refused_with(&text, key, reason);
    }
}

/// Sessions in a shared store but signed by each instance's own key do not roam: legal (one
/// instance with Redis), but worth a warning from `check`.
#[tokio::test]
async fn a_store_without_a_shared_session_key_is_warned_about() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let store = redis_shared(&employees, 6379, "mfa-store", "any");
    let warned = |shared: &str| {
        let config = support::config_from(&toml(&setup, &employees, shared)).unwrap();
        config.warnings.iter().any(|w| {
            w.to_string()
                .starts_with("shared.session_key_file: not set while shared.redis is")
        })
    };
    assert!(warned(&store));
    let key = private_file(&employees, "session.key", &"k".repeat(40));
    assert!(!warned(&format!(
        "{store}session_key_file = \"{}\"\n",
        key.display()
    )));
}
