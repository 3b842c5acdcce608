//! Private upstreams only, enforced at config time and again at connect time. It proves that:
//! - public, link-local and malformed networks are refused, naming the key;
//! - an upstream address outside its environment's networks, a public one, or one in another
//!   environment than the instance's is refused, naming the key;
//! - every problem of a config is reported at once;
//! - a name whose resolution leaves the environment (DNS rebinding) gets 502 and is never
//!   connected to.

mod support;

use support::{Client, Setup, config_from, start_config, strings};

fn assert_refused(problems: &[String], key: &str, reason: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&format!("{key}: ")) && p.contains(reason)),
        "no problem `{key}: ...{reason}...` in {problems:#?}"
    );
}

#[tokio::test]
async fn non_private_networks_are_refused() {
    let setup = Setup::new().await;
    for (net, reason) in [
        ("8.8.8.0/24", "not inside a private range"),
        // Public, though it also holds link-local: the message says what it mostly is.
        ("0.0.0.0/0", "not inside a private range"),
        ("169.254.169.254/32", "link-local"),
        ("fe80::/10", "link-local"),
        ("2001:db8::/32", "not inside a private range"),
        ("10.0.0.0/300", "not a network in CIDR notation"),
    ] {
        let toml = setup.config().set("networks.test[1]", net).text();
        assert_refused(&support::problem_lines(&toml), "networks.test[1]", reason);
    }
}

#[tokio::test]
async fn upstreams_outside_their_environment_are_refused() {
    let setup = Setup::new().await;
    let app = setup.app.addr.to_string();
    let public = setup
        .config()
        .set("upstreams.app.addrs", strings(&[&app, "8.8.8.8:80"]))
        .text();
    assert_refused(
        &support::problem_lines(&public),
        "upstreams.app.addrs[1]",
        "8.8.8.8:80 is a public address",
    );
    // Cloud metadata endpoints, built in or listed, are never upstreams, even inside the
    // environment's own networks.
    let with_metadata_nets = setup
        .config()
        .set("access.metadata_endpoints", strings(&["10.9.9.9/32"]))
        .set(
            "networks.meta",
            strings(&["100.64.0.0/10", "fd00::/8", "10.9.0.0/16"]),
        )
        .set("upstreams.app.environment", "meta");
    for (addr, shown) in [
        ("169.254.169.254:80", "169.254.169.254:80"),
        ("[fd00:ec2::254]:80", "[fd00:ec2::254]:80"),
        ("100.100.100.200:80", "100.100.100.200:80"),
        ("10.9.9.9:80", "10.9.9.9:80"),
        ("[::ffff:169.254.169.254]:80", "[::ffff:169.254.169.254]:80"),
    ] {
        let metadata = with_metadata_nets
            .clone()
            .set("upstreams.app.addrs[0]", addr)
            .text();
        assert_refused(
            &support::problem_lines(&metadata),
            "upstreams.app.addrs[0]",
            &format!("{shown} is a cloud metadata endpoint"),
        );
    }
    let elsewhere = setup
        .config()
        .set("upstreams.app.addrs[0]", "10.1.2.3:80")
        .text();
    assert_refused(
        &support::problem_lines(&elsewhere),
        "upstreams.app.addrs[0]",
        "not in any network of environment \"test\"",
    );
    let cross = setup
        .config()
        .set("networks.staging", strings(&["10.1.0.0/16"]))
        .set("upstreams.app.environment", "staging")
        .set("upstreams.app.addrs", strings(&["10.1.2.3:80", &app]))
        .text();
    let found = support::problem_lines(&cross);
    assert_refused(
        &found,
        "upstreams.app.environment",
        "may only reach its own environment",
    );
    assert_refused(
        &found,
        "upstreams.app.addrs[1]",
        "not in any network of environment \"staging\"",
    );
    let unknown = setup
        .config()
        .set("upstreams.app.environment", "nowhere")
        .text();
    assert_refused(
        &support::problem_lines(&unknown),
        "upstreams.app.environment",
        "no entry in [networks]",
    );
    let overlap = setup
        .config()
        .set("networks.other", strings(&["127.1.0.0/16"]))
        .text();
    assert_refused(
        &support::problem_lines(&overlap),
        "networks.test[0]",
        "overlaps 127.1.0.0/16 of environment \"other\"",
    );
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    let setup = Setup::new().await;
    let toml = setup
        .config()
        .merge("[limits]\nidle_timeout = \"soon\"\nmax_header_bytes = 10\n[[routes]]\nhost = \"not a host\"\nupstream = \"missing\"\n")
        .set("listen.https", "nowhere")
        .text();
    let found = support::problem_lines(&toml);
    assert_refused(&found, "listen.https", "not an ip:port");
    assert_refused(&found, "limits.idle_timeout", "not a duration");
    assert_refused(&found, "limits.max_header_bytes", "at least 8192");
    assert_refused(&found, "routes[4].host", "not a host name");
    assert_refused(
        &found,
        "routes[4].upstream",
        "no upstream named \"missing\"",
    );
    assert!(found.len() >= 5, "{found:#?}");
}

#[tokio::test]
async fn rebinding_out_of_the_environment_is_refused_at_connect() {
    let setup = Setup::new().await;
    let port = setup.app.addr.port();
    let toml = setup
        .config()
        .set("upstreams.app.addrs[0]", format!("localhost:{port}"))
        .text();
    let mut config = config_from(&toml).unwrap();
    // The name was private when the config was checked; now pretend DNS moved it elsewhere.
    let upstream = config
        .upstreams
        .iter_mut()
        .find(|u| &*u.name == "app")
        .unwrap();
    upstream.networks = vec!["10.9.0.0/16".parse().unwrap()];
    let proxy = start_config(config).await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        assert_eq!(client.get("localhost", "/").await.status, 502, "h2={h2}");
    }
    assert_eq!(setup.app.hits(), 0, "a refused address was connected to");
}

#[tokio::test]
async fn ip_literal_out_of_the_environment_is_refused_at_connect() {
    let setup = Setup::new().await;
    let mut config = config_from(&setup.toml("")).unwrap();
    config
        .upstreams
        .iter_mut()
        .find(|u| &*u.name == "app")
        .unwrap()
        .networks = vec!["10.9.0.0/16".parse().unwrap()];
    let proxy = start_config(config).await;
    let mut client = Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
    assert_eq!(client.get("localhost", "/").await.status, 502);
    assert_eq!(setup.app.hits(), 0);
}
