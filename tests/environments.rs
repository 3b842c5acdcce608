//! Segregated environments and one-way peerings, tried from loopback aliases (all of
//! 127.0.0.0/8 is this machine). It proves that:
//! - an upstream in an environment we peer to is reached; one in an environment we do not peer
//!   to, or that peers to us, is refused by config validation with its key;
//! - clients from a peered-to network and from `deny_clients` are closed at accept on both
//!   listeners, before any TLS or HTTP byte, whatever forwarding headers they send;
//! - IPv4-mapped peers are matched as IPv4 (unit-tested with `networks::ClientFilter`);
//! - `check` prints the exposure: sockets, peerings, refused ranges.

mod support;

use std::net::IpAddr;

use support::upstream::Upstream;
use support::{
    Client, ConfigToml, Setup, read_to_close, request, start_toml, status_of, strings, tcp_from,
    tls_connect_from,
};
use tokio::io::AsyncWriteExt;

/// `test` owns 127.0.0.1 only; the database provider owns 127.50.0.0/16; 127.66.0.0/16 is denied.
fn segregated(setup: &Setup) -> ConfigToml {
    setup
        .config()
        .set("networks.test", strings(&["127.0.0.1/32", "::1/128"]))
        .set("networks.db", strings(&["127.50.0.0/16"]))
        .set("networks.staging", strings(&["127.60.0.0/16"]))
        .push("peerings", &[("from", "test".into()), ("to", "db".into())])
        .set("access.deny_clients", strings(&["127.66.0.0/16"]))
}

#[tokio::test]
async fn peered_environment_is_reachable_one_way() {
    let setup = Setup::new().await;
    let db = Upstream::start_on("127.50.0.1:0").await;
    let extra = format!(
        "[upstreams.db]\nenvironment = \"db\"\naddrs = [\"{}\"]\n[[routes]]\nhost = \"app.test\"\npath_prefix = \"/db\"\nupstream = \"db\"\n",
        db.addr
    );
    let proxy = start_toml(&segregated(&setup).merge(&extra).text()).await;
    let mut client = Client::connect(true, proxy.https_addr, "app.test", &setup.pki).await;
    assert_eq!(client.get("app.test", "/db").await.status, 200);
    assert_eq!(db.hits(), 1);

    let from_db: IpAddr = "127.50.0.9".parse().unwrap();
    let refused = tls_connect_from(
        Some(from_db),
        proxy.https_addr,
        "app.test",
        setup.pki.client(&[b"h2"]),
    )
    .await;
    assert!(
        refused.is_err(),
        "a client in the peered-to network reached us"
    );
}

#[tokio::test]
async fn unpeered_and_reverse_peerings_are_refused() {
    let setup = Setup::new().await;
    let staging = "[upstreams.st]\nenvironment = \"staging\"\naddrs = [\"127.60.0.1:80\"]\n";
    let found = support::problem_lines(&segregated(&setup).merge(staging).text());
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("upstreams.st.environment: ")),
        "{found:#?}"
    );
    let reverse = segregated(&setup)
        .set("peerings[0].from", "db")
        .set("peerings[0].to", "test")
        .text();
    let found = support::problem_lines(&reverse);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("peerings[0].from: ") && p.contains("would let it reach us")),
        "{found:#?}"
    );
    let unknown = segregated(&setup).set("peerings[0].to", "nowhere").text();
    assert!(
        support::problem_lines(&unknown)
            .iter()
            .any(|p| p.starts_with("peerings[0].to: "))
    );
    let bad_range = segregated(&setup)
        .set("access.deny_clients[0]", "not-a-net")
        .text();
    assert!(
        support::problem_lines(&bad_range)
            .iter()
            .any(|p| p.starts_with("access.deny_clients[0]: "))
    );
}

#[tokio::test]
async fn denied_clients_are_closed_at_accept_on_both_listeners() {
    let setup = Setup::new().await;
    let proxy = start_toml(&segregated(&setup).text()).await;
    let denied: IpAddr = "127.66.1.2".parse().unwrap();
    let allowed: IpAddr = "127.0.0.1".parse().unwrap();
    for addr in [proxy.https_addr, proxy.http_addr.unwrap()] {
        let mut tcp = tcp_from(Some(denied), addr).await.unwrap();
        let _ = tcp
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n")
            .await;
        let answer = read_to_close(&mut tcp).await;
        assert!(
            answer.is_empty(),
            "{addr}: a denied client got bytes back: {answer:?}"
        );
    }
    let mut client = Client::connect_from(
        Some(allowed),
        false,
        proxy.https_addr,
        "localhost",
        &setup.pki,
    )
    .await;
    let spoofed = request("GET", "localhost", "/")
        .header("x-forwarded-for", "127.66.1.2")
        .header("forwarded", "for=127.66.1.2")
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(
        client.send(spoofed).await.status,
        200,
        "forwarding headers must not matter"
    );
    let mut plain = tcp_from(Some(allowed), proxy.http_addr.unwrap())
        .await
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&read_to_close(&mut plain).await), Some(301));
}

/// Whether a client at `from` gets an answer from `addr` (TLS listener) at all.
async fn served_from(setup: &Setup, from: &str, addr: std::net::SocketAddr) -> bool {
    let local: IpAddr = from.parse().unwrap();
    tls_connect_from(
        Some(local),
        addr,
        "localhost",
        setup.pki.client(&[b"http/1.1"]),
    )
    .await
    .is_ok()
}

#[tokio::test]
async fn other_environments_and_mapped_notations_are_refused_at_accept() {
    let setup = Setup::new().await;
    // Written in IPv4-mapped form: must still match IPv4 peers. Staging is neither ours nor
    // peered: it never reaches us.
    let toml = segregated(&setup)
        .set("access.deny_clients[0]", "::ffff:127.66.0.0/112")
        .set("networks.staging[0]", "::ffff:127.60.0.0/112")
        .text();
    let proxy = start_toml(&toml).await;
    for from in ["127.66.0.7", "127.60.0.9", "127.50.0.9"] {
        assert!(
            !served_from(&setup, from, proxy.https_addr).await,
            "{from} was served"
        );
    }
    assert!(served_from(&setup, "127.0.0.1", proxy.https_addr).await);
    assert!(proxy.shutdown().await);

    let overlapping = segregated(&setup)
        .set("networks.staging[0]", "::ffff:127.50.0.0/112")
        .text();
    assert!(
        support::problem_lines(&overlapping)
            .iter()
            .any(|p| p.starts_with("networks.") && p.contains("127.50.0.0/16")),
        "{:#?}",
        support::problem_lines(&overlapping)
    );
}

#[test]
fn check_prints_the_exposure() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let setup = runtime.block_on(Setup::new());
    let file = setup.pki.dir.path().join("exposure.toml");
    std::fs::write(&file, segregated(&setup).text()).unwrap();
    let stdout = support::portcullis_ok(&["check", "-c", file.to_str().unwrap()]);
    assert!(stdout.contains("exposure:"), "{stdout}");
    assert!(stdout.contains("socket https  127.0.0.1:0"), "{stdout}");
    assert!(stdout.contains("loopback: this machine only"), "{stdout}");
    assert!(
        stdout.contains("peering test -> db (127.50.0.0/16): one-way"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "refused at accept: 127.66.0.0/16 (deny_clients), 127.50.0.0/16 (environment db), 127.60.0.0/16 (environment staging)"
        ),
        "{stdout}"
    );
}
