//! ACME against a real ACME server: Pebble, with real TLS-ALPN-01 validation (no
//! `PEBBLE_VA_ALWAYS_VALID`), its DNS answered by pebble-challtestsrv with 127.0.0.1, and its
//! TLS-ALPN port pointed at the proxy's HTTPS port. It proves that:
//! - the proxy orders a certificate and serves it: a client trusting only Pebble's root (from
//!   its management interface) verifies the chain and the SAN, and a proxied request works;
//! - a second run with the same cache dir serves the cached certificate without ordering again
//!   (Pebble is stopped before it starts, so an order could not succeed);
//! - `[tls.acme]` is validated: unrouted domains, names also in a certificate file, bad contacts
//!   and directories are refused with their keys; so are `[tls.acme.store]`'s values;
//! - two instances (the real binary) sharing one store on a real S3-compatible server (moto):
//!   one order, by the lease holder, validated at the instance that does not hold the lease;
//!   both serve the certificate; the holder's renewal reaches the other; the bucket holds the
//!   lease, the account key and the certificate, and no challenge once validated; when the
//!   holder is killed, the other takes the lease over once it expires and renews; a holder
//!   stopped by SIGTERM hands the lease over at once, and says so;
//! - a CA that refuses nonces (`PEBBLE_WFE_NONCEREJECT`) costs no failed order: each refused
//!   request is sent again at once with the fresh nonce (the vendored rustls-acme patch);
//!   `/metrics` then lists the ACME certificate's expiry with its names and source, one issued
//!   order and the time of the last success;
//! - a challenge that fails says what the CA said (its problem document) in the operational
//!   log and in the order's audit line, for a single instance and through the store.
//!
//! Skipped with a message where Pebble is not installed outside CI; `.ci/run` installs it.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use support::acme::{Instance, Moto, acme_config};
use support::pebble::{Pebble, trusting};
use support::{Setup, config_from, free_port, metrics, require_tools, start_toml, strings};

fn acme_toml(setup: &Setup, port: u16, directory: &str, cache: &Path) -> String {
    acme_config(setup, port, directory, cache).text()
}

/// Waits until a client trusting only `client`'s roots completes a handshake for acme.test.
async fn wait_for_certificate(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    within: Duration,
) -> CertificateDer<'static> {
    support::pebble::served_certificate(addr, "acme.test", client, within).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_with_tls_alpn_01_then_serves_from_cache() {
    if !require_tools(&["pebble", "pebble-challtestsrv"]) {
        return;
    }
    let setup = Setup::new().await;
    let port = free_port();
    let cache = setup.pki.dir.path().join("acme-cache");
    let pebble = tokio::task::block_in_place(|| Pebble::start(&setup.pki, port));
    let root = pebble.root(&setup.pki).await;
    let proxy = start_toml(&acme_toml(&setup, port, &pebble.directory, &cache)).await;
    let client = trusting(root);
    let leaf =
        wait_for_certificate(proxy.https_addr, client.clone(), Duration::from_secs(60)).await;
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", san.value).contains("acme.test"), "{san:?}");

    let mut sender = support::h1_with(proxy.https_addr, "acme.test", client.clone())
        .await
        .unwrap();
    let request = support::request("GET", "acme.test", "/through-acme")
        .body(Default::default())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    assert!(setup.app.targets().contains(&"/through-acme".to_owned()));
    assert!(proxy.shutdown().await);
    // The same directory URL (rustls-acme keys its cache by it), but nobody answers there now.
    let directory = pebble.directory.clone();
    drop(pebble);

    let again = start_toml(&acme_toml(&setup, port, &directory, &cache)).await;
    let cached = wait_for_certificate(again.https_addr, client, Duration::from_secs(10)).await;
    assert_eq!(
        cached, leaf,
        "the second run did not serve the cached certificate"
    );
    // rustls-acme writes with the umask; what it wrote must pass our own check at restart.
    for entry in std::fs::read_dir(&cache).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_a_working_instance_with_its_account_and_audit_trail() {
    if !require_tools(&["pebble", "pebble-challtestsrv", "tar"]) {
        return;
    }
    let setup = Setup::new().await;
    let port = free_port();
    let dir = setup.pki.dir.path().to_owned();
    let (cache, logs) = (dir.join("acme-cache"), setup.log_dir());
    let pebble = tokio::task::block_in_place(|| Pebble::start(&setup.pki, port));
    let root = pebble.root(&setup.pki).await;
    let file = dir.join("portcullis.toml");
    let toml = acme_config(&setup, port, &pebble.directory, &cache)
        .set("snapshots.dir", dir.join("snapshots").display().to_string())
        // Tests run as root in CI; the binary refuses that unless told.
        .set("server.allow_root", true)
        .text();
    std::fs::write(&file, toml).unwrap();
    let proxy = support::start_file(&file).await;
    let client = trusting(root);
    let leaf =
        wait_for_certificate(proxy.https_addr, client.clone(), Duration::from_secs(60)).await;
    assert!(proxy.shutdown().await);
    let directory_of = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let account_and_certs = directory_of(&cache);
    assert!(
        account_and_certs
            .iter()
            .any(|(name, _)| name.starts_with("cached_account_"))
    );
    let audit: Vec<_> = directory_of(&logs)
        .into_iter()
        .filter(|(name, _)| name.starts_with("audit-"))
        .collect();
    assert!(!audit.is_empty(), "the first run left no audit trail");

    let out = support::portcullis(&["snapshot", "-c", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = stdout.split_whitespace().next().unwrap().to_owned();
    // The instance is lost; the archive is all there is.
    for gone in [&cache, &logs] {
        std::fs::remove_dir_all(gone).unwrap();
    }
    std::fs::remove_file(&file).unwrap();
    let restore = Command::new("tar")
        .args(["-xzpf", &archive, "-C", "/"])
        .status()
        .unwrap();
    assert!(restore.success());
    assert_eq!(
        directory_of(&cache),
        account_and_certs,
        "the same ACME account and certificate"
    );
    let restored_audit: Vec<_> = directory_of(&logs)
        .into_iter()
        .filter(|(name, _)| name.starts_with("audit-"))
        .collect();
    assert_eq!(restored_audit, audit, "the same audit trail");

    // No ACME server answers now: what it serves can only come from the restored cache.
    let directory = pebble.directory.clone();
    drop(pebble);
    assert!(std::fs::read_to_string(&file).unwrap().contains(&directory));
    let again = support::start_file(&file).await;
    let served = wait_for_certificate(again.https_addr, client, Duration::from_secs(10)).await;
    assert_eq!(
        served, leaf,
        "the restored instance serves the certificate it had"
    );
}

#[tokio::test]
async fn acme_section_is_validated() {
    let setup = Setup::new().await;
    let cache = setup.pki.dir.path().join("cache");
    let file = setup.pki.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let base = acme_config(&setup, 0, "https://127.0.0.1:1/dir", &cache);
    assert!(
        config_from(&base.text()).is_ok(),
        "the base ACME config must be valid"
    );
    assert!(!cache.exists(), "validation created the cache directory");
    for (key, value) in [
        ("tls.acme.domains[0]", "nowhere.test".into()),
        ("tls.acme.domains[0]", "app.test".into()),
        ("tls.acme.domains", strings(&[])),
        ("tls.acme.contact[0]", "ops@acme.test".into()),
        ("tls.acme.directory", "http://insecure/dir".into()),
        ("tls.acme.renew_before", "0s".into()),
        ("tls.acme.profile", "short lived".into()),
        ("tls.acme.challenge", "dns-02".into()),
        (
            "tls.acme.cache_dir",
            format!("{}/cache", file.display()).into(),
        ),
    ] {
        let toml = base.clone().set(key, value).text();
        support::assert_refused(&toml, key);
    }
    let with_store = base.merge("[tls.acme.store]\nbucket = \"certs\"\nprefix = \"prod/\"\n");
    let described = portcullis::config::describe(&config_from(&with_store.text()).unwrap());
    assert!(
        described.contains("ACME acme.test: shared by every instance in s3://certs/prod/"),
        "{described}"
    );
    for (key, value) in [
        ("tls.acme.store.bucket", ""),
        // The account key travels to the store: plain HTTP only to this machine.
        ("tls.acme.store.endpoint", "http://s3.internal.example:9000"),
        ("tls.acme.store.endpoint", "ftp://127.0.0.1"),
        ("tls.acme.store.lease", "soon"),
        // Moved to [tls.acme], where it counts with or without a store.
        ("tls.acme.store.renew_before", "30d"),
        ("tls.acme.store.poll", "2m"),
    ] {
        let toml = with_store.clone().set(key, value).text();
        support::assert_refused(&toml, key);
    }
    // The account lives in the store: a cache directory that could not be made is not used.
    let unused_cache = with_store
        .clone()
        .set("tls.acme.cache_dir", format!("{}/cache", file.display()))
        .text();
    assert!(config_from(&unused_cache).is_ok());
    for endpoint in [
        "https://s3.eu-west-1.amazonaws.com",
        "http://127.0.0.1:9000",
        "http://localhost:9000",
    ] {
        let toml = with_store
            .clone()
            .set("tls.acme.store.endpoint", endpoint)
            .text();
        assert!(config_from(&toml).is_ok(), "{endpoint}");
    }
}

#[tokio::test]
async fn a_cache_directory_others_can_read_is_refused_with_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new().await;
    let cache = setup.pki.dir.path().join("shared-cache");
    std::fs::create_dir(&cache).unwrap();
    let toml = acme_toml(&setup, 0, "https://127.0.0.1:1/dir", &cache);
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let problems = support::problem_lines(&toml);
    let expected = format!("tls.acme.cache_dir: {} has mode 755", cache.display());
    assert!(
        problems.iter().any(|p| p.starts_with(&expected)),
        "{problems:#?}"
    );

    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(config_from(&toml).is_ok());
    let account = cache.join("cached_account_x");
    std::fs::write(&account, "key").unwrap();
    std::fs::set_permissions(&account, std::fs::Permissions::from_mode(0o644)).unwrap();
    let problems = support::problem_lines(&toml);
    let expected = format!("tls.acme.cache_dir: {} has mode 644", account.display());
    assert!(
        problems.iter().any(|p| p.starts_with(&expected)),
        "{problems:#?}"
    );
}

#[tokio::test]
async fn an_unwritable_cache_directory_stops_start_with_its_key() {
    let setup = Setup::new().await;
    let toml = acme_toml(
        &setup,
        0,
        "https://127.0.0.1:1/dir",
        std::path::Path::new("/proc/forbidden"),
    );
    let config = config_from(&toml).expect("a directory under /proc is a valid path");
    let error = portcullis::start(config).await.unwrap_err().to_string();
    assert!(error.contains("tls.acme.cache_dir"), "{error}");
}

/// Waits until `instance` serves a certificate for acme.test other than `not`.
async fn wait_for_new_certificate(
    instance: &Instance,
    client: &Arc<rustls::ClientConfig>,
    not: Option<&CertificateDer<'static>>,
    within: Duration,
) -> CertificateDer<'static> {
    let deadline = Instant::now() + within;
    loop {
        let leaf = wait_for_certificate(instance.https, client.clone(), within).await;
        if Some(&leaf) != not {
            return leaf;
        }
        assert!(
            Instant::now() < deadline,
            "no new certificate in time:\n{}",
            instance.stderr.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_certificate_ordered_once_through_the_store() {
    if !require_tools(&["pebble", "pebble-challtestsrv", "moto_server"]) {
        return;
    }
    let setup = Setup::new().await;
    let (a_port, b_port) = (free_port(), free_port());
    // Validation goes to B's port only: B never holds the lease while A lives, so it can pass
    // only if B serves the challenge A published. Certificates last 40 s, renewed 25 s before.
    let pebble = tokio::task::block_in_place(|| Pebble::issuing_for(&setup.pki, b_port, 40));
    let root = pebble.root(&setup.pki).await;
    let client = trusting(root);
    let moto = tokio::task::block_in_place(Moto::start);

    let a = Instance::start(&setup, "a", a_port, &pebble.directory, &moto);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.said("lease taken") {
        assert!(Instant::now() < deadline, "A never took the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Instance::start(&setup, "b", b_port, &pebble.directory, &moto);
    let first = wait_for_new_certificate(&b, &client, None, Duration::from_secs(60)).await;
    assert_eq!(
        wait_for_certificate(a.https, client.clone(), Duration::from_secs(10)).await,
        first,
        "both instances serve the one certificate"
    );
    assert_eq!(
        (a.orders().await, b.orders().await),
        (1, 0),
        "one order, by the lease holder"
    );
    assert!(!b.said("lease taken"));
    // The bucket as README lays it out; the challenge is gone once validated.
    let objects = moto.objects().await;
    assert_eq!(objects.len(), 3, "{objects:?}");
    assert_eq!(objects[0], "prod/account.key");
    assert!(objects[1].starts_with("prod/certificates/") && objects[1].ends_with(".pem"));
    assert_eq!(objects[2], "prod/lease.json");

    // The holder renews; the other instance serves the renewed certificate.
    let second = wait_for_new_certificate(&b, &client, Some(&first), Duration::from_secs(40)).await;
    assert_eq!(b.orders().await, 0, "B ordered while A held the lease");
    assert!(a.orders().await >= 2);

    // The holder is gone: once its lease expires, B takes over and renews.
    a.stop();
    let third = wait_for_new_certificate(&b, &client, Some(&second), Duration::from_secs(40)).await;
    assert_ne!(third, first);
    assert!(b.said("lease taken"));
    assert!(b.orders().await >= 1);

    // Stopped gracefully, the holder hands the lease over instead of letting it run out.
    let mut b = b;
    tokio::task::block_in_place(|| b.terminate());
    let lease: serde_json::Value =
        serde_json::from_slice(&moto.read("prod/lease.json").await).unwrap();
    assert_eq!(lease["until_ms"], 0, "{lease}");
    assert!(b.said("lease handed over"), "the hand-over was not logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_refusing_nonces_costs_no_failed_order() {
    if !require_tools(&["pebble", "pebble-challtestsrv"]) {
        return;
    }
    let setup = Setup::new().await;
    let port = free_port();
    let cache = setup.pki.dir.path().join("acme-cache");
    // A quarter of the requests refused: an order of a dozen requests all but surely meets
    // several, and without retries fails and backs off.
    let pebble = tokio::task::block_in_place(|| Pebble::rejecting_nonces(&setup.pki, port, 25));
    let root = pebble.root(&setup.pki).await;
    let toml = acme_config(&setup, port, &pebble.directory, &cache)
        .merge("[admin]\nlisten = \"127.0.0.1:0\"\n")
        .text();
    let proxy = start_toml(&toml).await;
    wait_for_certificate(proxy.https_addr, trusting(root), Duration::from_secs(60)).await;
    let admin = proxy.admin_addr.unwrap();
    // The metrics follow the certificate's deployment by a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics(admin).await;
        if text.contains("portcullis_acme_orders_total{result=\"issued\"} 1") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no issued order counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !text.contains("result=\"failed\""),
        "an order failed:\n{text}"
    );
    assert!(
        text.contains("portcullis_certificate_not_after_timestamp_seconds{name=\"acme.test\",names=\"acme.test\",source=\"acme\"}"),
        "{text}"
    );
    assert!(text.contains("source=\"file\""), "{text}");
    let last = text
        .lines()
        .find(|l| l.starts_with("portcullis_acme_last_success_timestamp_seconds "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(last > 1.7e9, "{text}");
    assert!(proxy.shutdown().await);
    let issued: Vec<serde_json::Value> = setup
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "acme_order")
        .collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["outcome"], "issued");
    assert_eq!(issued[0]["mode"], "single");
}

/// The failed-order audit lines of an audit trail, waited for (bounded).
async fn failed_orders(audit: impl Fn() -> Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let failed: Vec<serde_json::Value> = audit()
            .into_iter()
            .filter(|r| r["event"] == "acme_order" && r["outcome"] == "failed")
            .collect();
        if !failed.is_empty() {
            return failed;
        }
        assert!(Instant::now() < deadline, "no failed order was audited");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The CA's problem in an audit line: Pebble's, naming the port it could not connect to.
fn assert_connection_problem(record: &serde_json::Value, port: u16) {
    let problem = &record["problem"];
    assert_eq!(
        problem["type"], "urn:ietf:params:acme:error:unauthorized",
        "{record}"
    );
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&port.to_string()), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_challenge_says_what_the_ca_said_in_log_and_audit() {
    if !require_tools(&["pebble", "pebble-challtestsrv", "moto_server"]) {
        return;
    }
    let setup = Setup::new().await;
    // Pebble validates at a port where nobody listens: every challenge fails, and Pebble says
    // why in a problem document.
    let nobody = free_port();
    let pebble = tokio::task::block_in_place(|| Pebble::start(&setup.pki, nobody));

    // A single instance, the real binary: its operational log and its audit trail.
    let dir = setup.pki.dir.path().join("single");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("portcullis.toml");
    std::fs::write(
        &file,
        acme_config(&setup, free_port(), &pebble.directory, &dir.join("cache"))
            .set("log.dir", dir.join("logs").display().to_string())
            .set("server.allow_root", true)
            .text(),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.args(["run", "-c"]).arg(&file);
    let said = Arc::new(std::sync::Mutex::new(Vec::new()));
    let single = support::spawn_until_listening_keeping(command, said.clone());
    let audit = || read_audit(&dir.join("logs"));
    let failed = failed_orders(audit).await;
    assert_eq!(failed[0]["mode"], "single");
    assert_connection_problem(&failed[0], nobody);
    let log = said.lock().unwrap().join("\n");
    assert!(
        log.contains("the CA said: urn:ietf:params:acme:error:unauthorized: Failed to connect"),
        "{log}"
    );
    drop(single);

    // Through the store: the lease holder's order fails the same way.
    let moto = tokio::task::block_in_place(Moto::start);
    let instance = Instance::start(&setup, "store", free_port(), &pebble.directory, &moto);
    let logs = setup.pki.dir.path().join("store").join("logs");
    let failed = failed_orders(|| read_audit(&logs)).await;
    assert_eq!(failed[0]["mode"], "store");
    assert_connection_problem(&failed[0], nobody);
    assert!(
        instance.said("the CA said: urn:ietf:params:acme:error:unauthorized: Failed to connect"),
        "{}",
        instance.stderr.lock().unwrap().join("\n")
    );
}

/// Every complete audit record under a log directory.
fn read_audit(dir: &Path) -> Vec<serde_json::Value> {
    support::audit_text_in(dir)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
