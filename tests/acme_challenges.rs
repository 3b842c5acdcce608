//! Certificates for every name an operator has (issue 36), against real peers:
//! - HTTP-01 through the shared store: Pebble validates only at the plain listener of the
//!   instance that does not hold the lease (TLS-ALPN-01 leads nowhere), which answers with the
//!   key authorization the holder published; any other path under
//!   `/.well-known/acme-challenge/` is still redirected (or 404 for a host we do not serve), and
//!   an object planted in the store that is not a key authorization for its token is never
//!   served; and HTTP-01 by a single instance from its own board;
//! - ACME Renewal Information (RFC 9773) with an injected clock against a server of the test's
//!   own: renewal inside the window, `Retry-After` respected, a window moved into the past
//!   meaning now; end to end, a restart whose cached certificate's window has passed renews at
//!   once from Pebble;
//! - `profile`: the newOrder request a recording server receives names it.
//!
//! DNS-01 is in `tests/acme_dns.rs`.
//!
//! Skipped with a message where a tool is not installed outside CI; `.ci/run` installs them.

mod support;

use std::time::{Duration, Instant, SystemTime};

use support::acme::{Instance, Moto};
use support::fake_acme::FakeAcme;
use support::pebble::{Pebble, Ports, served_certificate, trusting};
use support::{ConfigToml, Setup, free_port, raw_tcp, require_tools};

const DAY: Duration = Duration::from_secs(86_400);

fn http_01(port: u16) -> impl FnOnce(ConfigToml) -> ConfigToml {
    move |toml| {
        toml.set("tls.acme.challenge", "http-01")
            .set("listen.http", format!("127.0.0.1:{port}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_is_answered_on_the_plain_listener_of_the_instance_without_the_lease() {
    if !require_tools(&["pebble", "pebble-challtestsrv", "moto_server"]) {
        return;
    }
    let setup = Setup::new().await;
    let (a_https, b_https, a_http, b_http) = (free_port(), free_port(), free_port(), free_port());
    // Validation reaches B's plain listener only; TLS-ALPN-01 would go to a closed port.
    let ports = Ports {
        tls_alpn: free_port(),
        http: b_http,
        dns: None,
    };
    let pebble = tokio::task::block_in_place(|| Pebble::with(&setup.pki, ports, 157_766_400, 0));
    let client = trusting(pebble.root(&setup.pki).await);
    let moto = tokio::task::block_in_place(Moto::start);
    let directory = &pebble.directory;
    let a = Instance::start_with(&setup, "a", a_https, directory, &moto, http_01(a_http));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.said("lease taken") {
        assert!(Instant::now() < deadline, "A never took the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Instance::start_with(&setup, "b", b_https, directory, &moto, http_01(b_http));
    let leaf = served_certificate(
        b.https,
        "acme.test",
        client.clone(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        served_certificate(a.https, "acme.test", client, Duration::from_secs(10)).await,
        leaf
    );
    assert_eq!(
        (a.orders().await, b.orders().await),
        (1, 0),
        "one order, by the holder"
    );
    let objects = moto.objects().await;
    assert!(
        !objects.iter().any(|o| o.contains("challenges/")),
        "an answer outlived its validation: {objects:?}"
    );
    // An object planted in the store is served only when it is a key authorization for its
    // token: a page or a script is not, whoever could write the bucket.
    let thumbprint = "A".repeat(43);
    for (token, content) in [
        ("planted-page", "<script>alert(1)</script>".to_owned()),
        ("planted-other", format!("another-token.{thumbprint}")),
        ("planted-ok", format!("planted-ok.{thumbprint}")),
    ] {
        let path = object_store::path::Path::from(format!("prod/challenges/http-01/{token}"));
        object_store::ObjectStoreExt::put(&moto.client(), &path, content.into())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b_http = std::net::SocketAddr::from(([127, 0, 0, 1], b_http));
    let ask = |token: &str| {
        format!(
            "GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n"
        )
    };
    let served = raw_tcp(b_http, ask("planted-ok").as_bytes()).await;
    assert!(
        served.starts_with("HTTP/1.1 200") && served.ends_with(&thumbprint),
        "{served}"
    );
    for token in ["planted-page", "planted-other"] {
        let answer = raw_tcp(b_http, ask(token).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 301"), "{token}: {answer}");
    }
    // Nothing else under the challenge directory is answered: a stale or made-up token, a
    // path that climbs, a host we do not serve.
    for (target, host, status) in [
        (
            "/.well-known/acme-challenge/made-up-token",
            "acme.test",
            "301",
        ),
        (
            "/.well-known/acme-challenge/../../etc/passwd",
            "acme.test",
            "301",
        ),
        ("/.well-known/acme-challenge/", "acme.test", "301"),
        (
            "/.well-known/acme-challenge/made-up-token",
            "elsewhere.test",
            "404",
        ),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = raw_tcp(b_http, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{target} for {host}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_is_answered_by_a_single_instance_from_its_own_board() {
    if !require_tools(&["pebble", "pebble-challtestsrv"]) {
        return;
    }
    let setup = Setup::new().await;
    let http = free_port();
    let ports = Ports {
        tls_alpn: free_port(),
        http,
        dns: None,
    };
    let pebble = tokio::task::block_in_place(|| Pebble::with(&setup.pki, ports, 157_766_400, 0));
    let client = trusting(pebble.root(&setup.pki).await);
    let cache = setup.pki.dir.path().join("cache");
    let toml = support::acme::acme_config(&setup, free_port(), &pebble.directory, &cache);
    let proxy = support::start_toml(&http_01(http)(toml).text()).await;
    let leaf = served_certificate(
        proxy.https_addr,
        "acme.test",
        client,
        Duration::from_secs(60),
    )
    .await;
    assert!(!leaf.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_follows_the_cas_window_and_its_retry_after_with_an_injected_clock() {
    let setup = Setup::new().await;
    let fake = FakeAcme::start(&setup.pki).await;
    let client = setup.pki.client(&[b"http/1.1"]);
    let ca = portcullis::AcmeDirectory::discover(&client, &fake.directory())
        .await
        .unwrap();
    let now = SystemTime::UNIX_EPOCH + DAY * 20_000; // 2024-10-04
    let issued = portcullis::Issued {
        not_before: now - DAY,
        not_after: now + DAY * 89,
        cert_id: Some("aki.serial".into()),
    };
    // A window 60 to 62 days on; ask again in an hour.
    fake.set_window("2024-12-03T00:00:00Z", "2024-12-05T00:00:00Z", 3600);
    let mut renewal = portcullis::Renewal::default();
    let at = renewal
        .when(&client, Some(&ca), &issued, DAY * 30, now)
        .await;
    let (start, end) = (now + DAY * 60, now + DAY * 62);
    assert!(start <= at && at <= end, "{at:?} is outside the window");
    assert_eq!(fake.asks(), ["/ari/aki.serial"]);
    // Within Retry-After the CA is not asked again, and the point stays.
    fake.set_window("2024-10-01T00:00:00Z", "2024-10-02T00:00:00Z", 3600);
    let later = now + Duration::from_secs(1800);
    assert_eq!(
        renewal
            .when(&client, Some(&ca), &issued, DAY * 30, later)
            .await,
        at
    );
    assert_eq!(fake.asks().len(), 1);
    // After it, the CA is asked, and a window it moved into the past means now.
    let after = now + Duration::from_secs(3601);
    assert_eq!(
        renewal
            .when(&client, Some(&ca), &issued, DAY * 30, after)
            .await,
        after
    );
    assert_eq!(fake.asks().len(), 2);
    // A CA without renewal information: renew_before.
    let mut plain = portcullis::Renewal::default();
    let fallback = plain.when(&client, None, &issued, DAY * 30, now).await;
    assert_eq!(fallback, issued.not_after - DAY * 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_is_named_in_the_new_order() {
    let setup = Setup::new().await;
    let fake = FakeAcme::start(&setup.pki).await;
    let toml = support::acme::acme_config(
        &setup,
        free_port(),
        &fake.directory(),
        &setup.pki.dir.path().join("cache"),
    )
    .set("tls.acme.profile", "shortlived")
    .text();
    let _proxy = support::start_toml(&toml).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.orders().is_empty() {
        assert!(Instant::now() < deadline, "no newOrder reached the CA");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let order = &fake.orders()[0];
    assert_eq!(order["profile"], "shortlived", "{order}");
    assert_eq!(order["identifiers"][0]["value"], "acme.test", "{order}");
    assert!(
        order.get("replaces").is_none(),
        "nothing to replace yet: {order}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_moved_into_the_past_renews_at_once() {
    if !require_tools(&["pebble", "pebble-challtestsrv"]) {
        return;
    }
    let setup = Setup::new().await;
    let https = free_port();
    let pebble = tokio::task::block_in_place(|| Pebble::start(&setup.pki, https));
    let client = trusting(pebble.root(&setup.pki).await);
    // Pebble issues; the fake serves Pebble's directory with renewalInfo added.
    let fake = FakeAcme::start(&setup.pki).await;
    let pebble_directory = pebble.directory_json(&setup.pki).await;
    fake.state.lock().unwrap().directory = Some(pebble_directory);
    // A window a year on, inside the five years Pebble's certificates last.
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let start = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    let end = start + time::Duration::days(1);
    fake.set_window(&rfc3339(start), &rfc3339(end), 21_600);
    let cache = setup.pki.dir.path().join("cache");
    let admin = free_port();
    let toml = support::acme::acme_config(&setup, https, &fake.directory(), &cache)
        .merge(&format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n"))
        .text();
    let proxy = support::start_toml(&toml).await;
    let first = served_certificate(
        proxy.https_addr,
        "acme.test",
        client.clone(),
        Duration::from_secs(60),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.asks().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the CA was never asked about the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let metrics = support::metrics(admin).await;
    let renewal = metrics
        .lines()
        .find(|l| l.starts_with("portcullis_certificate_renewal_timestamp_seconds{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no renewal time in the metrics:\n{metrics}"));
    let window = start.unix_timestamp() as f64..=end.unix_timestamp() as f64;
    assert!(window.contains(&renewal), "{renewal} is outside {window:?}");
    // The admin listener's status says the same, beside the file certificates.
    let status = support::raw_tcp(
        admin,
        b"GET /certificates HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (_, body) = status.split_once("\r\n\r\n").unwrap();
    let status: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    let list = status["certificates"].as_array().unwrap();
    let acme = list.iter().find(|c| c["source"] == "acme").unwrap();
    assert_eq!(acme["names"][0], "acme.test", "{status}");
    assert_eq!(acme["challenge"], "tls-alpn-01", "{status}");
    assert!(
        acme["next_renewal"]
            .as_str()
            .unwrap()
            .starts_with(&start.year().to_string()),
        "{status}"
    );
    assert!(acme["not_after"].as_str().is_some(), "{status}");
    assert!(
        list.iter()
            .any(|c| c["source"] == "file" && c["challenge"].is_null()),
        "{status}"
    );
    proxy.shutdown().await;
    // check shows the cached certificate, its expiry and when it is renewed without a window.
    let described = portcullis::config::describe(&support::config_from(&toml).unwrap());
    assert!(
        described.contains("    cached certificate: expires "),
        "{described}"
    );
    assert!(described.contains("; renewed at "), "{described}");

    // The CA moves the window into the past: the restarted instance renews at once.
    fake.set_window("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z", 21_600);
    let again = support::start_toml(&toml).await;
    // Long enough for one failed order and its retry a minute later, under a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let served = served_certificate(
            again.https_addr,
            "acme.test",
            client.clone(),
            Duration::from_secs(10),
        )
        .await;
        if served != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the certificate was not renewed: {}",
            support::audit_text_in(&setup.log_dir())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(fake.asks().len() >= 2);
}
