//! Several instances acting as one gateway (`[shared]`). It proves that:
//! - with one `session_key_file`, a second-factor cookie issued by one instance is honoured by
//!   another and by the same instance after a restart; an instance with its own key refuses it;
//! - with one Redis (a real `redis-server` with a password, reached as an upstream), a TOTP code
//!   used on one instance is refused on another, while an instance without the store accepts
//!   it; wrong codes sent to different instances add up to one lockout;
//! - while the store is down codes are refused with 503 and audited, and once it is back they
//!   are judged again; a wrong password is the same refusal;
//! - bad `[shared]` values are refused by key, and a reload cannot change them.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use portcullis::Running;
use support::employees::{Employees, client};
use support::redis::{
    HOST, Redis, open_vault, post_code, private_file, redis_shared, toml, vault_tunnel,
};
use support::{Setup, get};

/// Alice's client, one certificate for the whole test (a session is bound to it).
fn alice(setup: &Setup, employees: &Employees) -> Arc<rustls::ClientConfig> {
    client(setup, Some(employees.valid("alice", 1)))
}

/// The status of alice's `GET /tool` on `proxy` with `cookie`.
async fn with_cookie(proxy: &Running, alice: &Arc<rustls::ClientConfig>, cookie: &str) -> u16 {
    let mut alice = support::h1_with(proxy.https_addr, HOST, alice.clone())
        .await
        .unwrap();
    get(&mut alice, HOST, "/tool", &[("cookie", cookie)])
        .await
        .unwrap()
        .status
        .as_u16()
}

#[tokio::test]
async fn a_session_from_one_instance_is_honoured_by_another_and_after_a_restart() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let alice = alice(&setup, &employees);
    let key = private_file(&employees, "session.key", &"k3y-material-".repeat(4));
    let shared = format!("[shared]\nsession_key_file = \"{}\"\n", key.display());
    let with_key = toml(&setup, &employees, &shared);
    let a = support::start_toml(&with_key).await;
    let b = support::start_toml(&with_key).await;
    let own_key = support::start_toml(&toml(&setup, &employees, "")).await;

    let passed = post_code(&a, &alice, &employees.code(0)).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    let cookie = passed.header("set-cookie").unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(with_cookie(&b, &alice, &session).await, 200);
    assert_eq!(
        with_cookie(&own_key, &alice, &session).await,
        401,
        "an instance with its own key honoured another's cookie"
    );
    assert!(a.shutdown().await);
    let restarted = support::start_toml(&with_key).await;
    assert_eq!(
        with_cookie(&restarted, &alice, &session).await,
        200,
        "the session did not survive a restart"
    );
}

#[tokio::test]
async fn a_code_used_on_one_instance_is_refused_on_another() {
    let Some(redis) = Redis::start() else { return };
    let setup = Setup::new().await;
    let employees = Employees::new();
    let alice = alice(&setup, &employees);
    let shared = toml(
        &setup,
        &employees,
        &redis_shared(&employees, redis.port, "mfa-store", &redis.password),
    );
    let a = support::start_toml(&shared).await;
    let b = support::start_toml(&shared).await;
    let alone = support::start_toml(&toml(&setup, &employees, "")).await;
    let described = portcullis::config::describe(&support::config_from(&shared).unwrap());
    assert!(
        described.contains("codes, lockouts and tunnel sessions shared in Redis mfa-store"),
        "{described}"
    );

    let code = employees.code(0);
    assert_eq!(post_code(&a, &alice, &code).await.status, 303);
    assert_eq!(
        post_code(&b, &alice, &code).await.status,
        403,
        "a code used on A was accepted on B"
    );
    // Without the store, an instance counts on its own: the very same code passes there.
    assert_eq!(post_code(&alone, &alice, &code).await.status, 303);
    // The store keeps no names.
    let keys = redis.keys();
    assert!(
        keys.contains("portcullis:mfa:user:") && !keys.contains("alice"),
        "{keys}"
    );
}

#[tokio::test]
async fn wrong_codes_on_different_instances_add_up_to_one_lockout() {
    let Some(redis) = Redis::start() else { return };
    let setup = Setup::new().await;
    let employees = Employees::new();
    let alice = alice(&setup, &employees);
    let shared = toml(
        &setup,
        &employees,
        &redis_shared(&employees, redis.port, "mfa-store", &redis.password),
    )
    .replace("[gateway]\n", "[gateway]\nmfa_max_failures = 3\n");
    let a = support::start_toml(&shared).await;
    let b = support::start_toml(&shared).await;
    for proxy in [&a, &b] {
        assert_eq!(post_code(proxy, &alice, "000000").await.status, 403);
    }
    // The third wrong code in a row, on A, locks alice out everywhere.
    assert_eq!(post_code(&a, &alice, "000000").await.status, 403);
    let locked = post_code(&b, &alice, &employees.code(0)).await;
    assert_eq!(locked.status, 429, "B did not count A's wrong codes");
    let wait: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn codes_are_refused_while_the_store_is_down() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let setup = Setup::new().await;
    let employees = Employees::new();
    let alice = alice(&setup, &employees);
    let a = support::start_toml(&toml(
        &setup,
        &employees,
        &redis_shared(&employees, redis.port, "mfa-store", &redis.password),
    ))
    .await;
    let wrong_password = support::start_toml(&toml(
        &setup,
        &employees,
        &redis_shared(&employees, redis.port, "mfa-store", "not-the-password"),
    ))
    .await;
    let refused = post_code(&wrong_password, &alice, &employees.code(0)).await;
    assert_eq!(refused.status, 503, "judged without the store");

    redis.stop();
    let refused = post_code(&a, &alice, &employees.code(0)).await;
    assert_eq!(refused.status, 503, "judged without the store");
    // Back on the same port: the next code is judged again, on a new connection.
    let _redis = Redis::on(redis.port, redis.password.clone());
    let passed = post_code(&a, &alice, &employees.code(0)).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    assert!(a.shutdown().await);
    assert!(wrong_password.shutdown().await);
    let unavailable: u64 = setup
        .audit()
        .into_iter()
        .filter(|r| r["reason"] == "TOTP code not judged: the shared MFA store is unavailable")
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(unavailable, 2, "{}", setup.audit_text());
}

#[tokio::test]
async fn bad_shared_settings_are_refused_by_key_and_not_reloaded() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let short = private_file(&employees, "short.key", "only-sixteen-byt");
    let open = private_file(&employees, "open.key", &"x".repeat(40));
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let password = private_file(&employees, "pw", "secret");
    for (shared, key, reason) in [
        (
            format!("session_key_file = \"{}\"", short.display()),
            "shared.session_key_file",
            "fewer than 32 bytes",
        ),
        (
            format!("session_key_file = \"{}\"", open.display()),
            "shared.session_key_file",
            "mode 644",
        ),
        (
            "session_key_file = \"/nonexistent/key\"".to_owned(),
            "shared.session_key_file",
            "/nonexistent/key",
        ),
        ("redis = \"nowhere\"".to_owned(), "shared.redis", "nowhere"),
        (
            format!("redis_password_file = \"{}\"", password.display()),
            "shared.redis_password_file",
            "shared.redis",
        ),
    ] {
        let text = toml(&setup, &employees, &format!("[shared]\n{shared}\n"));
        support::assert_refused_with(&text, key, reason);
    }
    // A store in an environment we do not reach is refused as any such upstream is.
    let outside = toml(
        &setup,
        &employees,
        "[upstreams.mfa-store]\nenvironment = \"test\"\naddrs = [\"8.8.8.8:6379\"]\n[shared]\nredis = \"mfa-store\"\n",
    );
    support::assert_refused(&outside, "upstreams.mfa-store.addrs[0]");

    let first = private_file(&employees, "first.key", &"1".repeat(32));
    let second = private_file(&employees, "second.key", &"2".repeat(32));
    let file = employees.dir.path().join("portcullis.toml");
    let with = |key: &PathBuf| {
        toml(
            &setup,
            &employees,
            &format!("[shared]\nsession_key_file = \"{}\"\n", key.display()),
        )
    };
    std::fs::write(&file, with(&first)).unwrap();
    let proxy = support::start_file(&file).await;
    std::fs::write(&file, with(&second)).unwrap();
    let refused = proxy.reload_file(portcullis::audit::Trigger::Signal);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("[shared]")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_tunnel_session_opened_on_one_instance_holds_on_another() {
    let Some(redis) = Redis::start() else { return };
    let setup = Setup::new().await;
    let employees = Employees::new();
    let alice = alice(&setup, &employees);
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tunnel = vault_tunnel(target.local_addr().unwrap());
    let store = redis_shared(&employees, redis.port, "mfa-store", &redis.password);
    let key = private_file(&employees, "session.key", &"k3y-material-".repeat(4));
    let key = format!("session_key_file = \"{}\"\n", key.display());
    let shared = format!("{tunnel}{store}{key}");
    let a = support::start_toml(&toml(&setup, &employees, &shared)).await;
    let b = support::start_toml(&toml(&setup, &employees, &shared)).await;
    // The store is shared, the signing key is not: its sessions are worth nothing here.
    let own_key = support::start_toml(&toml(&setup, &employees, &format!("{tunnel}{store}"))).await;
    let alone = support::start_toml(&toml(&setup, &employees, &tunnel)).await;
    assert_eq!(open_vault(&a, &alice, Some(&employees.code(0))).await, 200);
    assert_eq!(
        open_vault(&b, &alice, None).await,
        200,
        "B did not see the session opened on A"
    );
    assert_eq!(open_vault(&own_key, &alice, None).await, 401);
    assert_eq!(open_vault(&alone, &alice, None).await, 401);
}
