//! DNS-01 against real peers: Pebble resolving through a real BIND9 (`named`) on loopback,
//! whose zone the proxy writes:
//! - RFC 2136 with TSIG: a wildcard and its apex, the TXT record there during the validation
//!   and gone after, and the certificate serving any name under the wildcard;
//! - OVH's API, through a fake of its endpoints that checks OVH's request signature and writes
//!   into the same zone: the record created, refreshed, validated, deleted;
//! - `[tls.acme.dns]` validated key by key, for each provider.
//!
//! Skipped with a message where a tool is not installed outside CI; `.ci/run` installs them.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::bind::Bind;
use support::fake_ovh::{self, FakeOvh};
use support::pebble::{Pebble, Ports, served_certificate, trusting};
use support::{Setup, free_port, require_tool, require_tools};

/// Pebble resolving through `bind`, and a client trusting what it issues.
async fn pebble_on(setup: &Setup, bind: &Bind) -> (Pebble, Arc<rustls::ClientConfig>) {
    let ports = Ports {
        tls_alpn: free_port(),
        http: free_port(),
        dns: Some(bind.addr.to_string()),
    };
    let pebble = tokio::task::block_in_place(|| Pebble::with(&setup.pki, ports, 157_766_400, 0));
    let client = trusting(pebble.root(&setup.pki).await);
    (pebble, client)
}

/// `[tls.acme]` for `*.dns.test` and `dns.test` over DNS-01, with `dns` as `[tls.acme.dns]`.
fn dns_config(setup: &Setup, directory: &str, dns: &str) -> String {
    setup
        .config()
        .merge(&format!(
            "[[routes]]\nhost = \"*.dns.test\"\nupstream = \"app\"\n[[routes]]\nhost = \"dns.test\"\nupstream = \"app\"\n\
             [tls.acme]\ndomains = [\"*.dns.test\", \"dns.test\"]\nchallenge = \"dns-01\"\ndirectory = \"{directory}\"\ncache_dir = \"{}\"\ndirectory_ca = \"{}\"\n\
             [tls.acme.dns]\nzone = \"dns.test\"\npropagation_timeout = \"20s\"\n{dns}",
            setup.pki.dir.path().join("cache").display(),
            setup.pki.ca_pem.display(),
        ))
        .text()
}

/// The certificate served for `name` once one is issued (90 s at most); on a timeout, what the
/// orders' audit lines and named said.
async fn issued(
    proxy: std::net::SocketAddr,
    name: &str,
    client: &Arc<rustls::ClientConfig>,
    setup: &Setup,
    bind: &Bind,
) -> rustls::pki_types::CertificateDer<'static> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(tls) = support::tls_connect(proxy, name, client.clone()).await {
            return tls.get_ref().1.peer_certificates().unwrap()[0]
                .clone()
                .into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no certificate for {name}:\n{}\n{}",
            support::audit_text_in(&setup.log_dir()),
            bind.named_log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn start_bind(setup: &Setup) -> Arc<Bind> {
    let dir = setup.pki.dir.path().join("named");
    std::fs::create_dir_all(&dir).unwrap();
    Arc::new(tokio::task::block_in_place(|| {
        Bind::start(&dir, "dns.test")
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_is_issued_over_dns_01_through_bind_with_tsig() {
    if !require_tool("pebble") || !support::bind::tool_available() {
        return;
    }
    let setup = Setup::new().await;
    let bind = start_bind(&setup);
    let (pebble, client) = pebble_on(&setup, &bind).await;
    let toml = dns_config(
        &setup,
        &pebble.directory,
        &format!(
            "server = \"{}\"\ntsig_key_file = \"{}\"\n",
            bind.addr,
            bind.key_file.display()
        ),
    );
    let described = portcullis::config::describe(&support::config_from(&toml).unwrap());
    assert!(
        described.contains("*.dns.test: dns-01 (a TXT record in dns.test through"),
        "{described}"
    );
    // Watches the zone while the order runs: the record must be there at some point.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (bind, done) = (bind.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                seen.extend(bind.txt("_acme-challenge.dns.test."));
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        })
    };
    let proxy = support::start_toml(&toml).await;
    let leaf = issued(proxy.https_addr, "any.dns.test", &client, &setup, &bind).await;
    let apex =
        served_certificate(proxy.https_addr, "dns.test", client, Duration::from_secs(5)).await;
    assert_eq!(leaf, apex, "one certificate for the wildcard and the apex");
    done.store(true, Ordering::SeqCst);
    let seen = watcher.await.unwrap();
    assert!(
        seen.iter().any(|v| v.len() == 43),
        "no DNS-01 value was ever in the zone: {seen:?}\n{}",
        bind.named_log()
    );
    // Both authorizations cleaned up after themselves.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bind.txt("_acme-challenge.dns.test.").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the TXT record stayed: {}",
            bind.named_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_01_through_ovhs_api_is_signed_refreshed_and_cleaned_up() {
    if !require_tool("pebble") || !support::bind::tool_available() || !require_tool("nsupdate") {
        return;
    }
    let setup = Setup::new().await;
    let bind = start_bind(&setup);
    let (pebble, client) = pebble_on(&setup, &bind).await;
    let ovh = FakeOvh::start(&setup.pki, bind.clone()).await;
    let secrets = setup.pki.dir.path();
    support::write_private(&secrets.join("ovh.secret"), fake_ovh::APPLICATION_SECRET);
    support::write_private(&secrets.join("ovh.consumer"), fake_ovh::CONSUMER_KEY);
    let toml = dns_config(
        &setup,
        &pebble.directory,
        &format!(
            "provider = \"ovh\"\nendpoint = \"{}\"\napplication_key = \"{}\"\napplication_secret_file = \"{}\"\nconsumer_key_file = \"{}\"\nca_file = \"{}\"\nnameservers = [\"{}\"]\n",
            ovh.endpoint,
            fake_ovh::APPLICATION_KEY,
            secrets.join("ovh.secret").display(),
            secrets.join("ovh.consumer").display(),
            setup.pki.ca_pem.display(),
            bind.addr,
        ),
    );
    let described = portcullis::config::describe(&support::config_from(&toml).unwrap());
    assert!(
        described.contains("through OVH's API at https://127.0.0.1:"),
        "{described}"
    );
    let proxy = support::start_toml(&toml).await;
    let leaf = issued(proxy.https_addr, "www.dns.test", &client, &setup, &bind).await;
    assert!(!leaf.is_empty());
    // Two names, one record each: created, the zone refreshed, deleted, refreshed; every call
    // signed (a refused one would be a 403 here).
    let calls = ovh.calls();
    let count = |call: &str| calls.iter().filter(|c| c.starts_with(call)).count();
    assert_eq!(
        count("POST /1.0/domain/zone/dns.test/record 200"),
        2,
        "{calls:?}"
    );
    assert_eq!(
        count("DELETE /1.0/domain/zone/dns.test/record/"),
        2,
        "{calls:?}"
    );
    assert_eq!(
        count("POST /1.0/domain/zone/dns.test/refresh 200"),
        4,
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.ends_with(" 403")), "{calls:?}");
    assert_eq!(ovh.live_records(), 0);
    assert!(bind.txt("_acme-challenge.dns.test.").is_empty());
}

#[tokio::test]
async fn each_providers_keys_are_required_and_the_others_refused() {
    let setup = Setup::new().await;
    let base = |dns: &str| dns_config(&setup, "https://127.0.0.1:1/dir", dns);
    let key = setup.pki.dir.path().join("tsig.key");
    support::write_private(
        &key,
        "key \"k\" {\n\talgorithm hmac-sha256;\n\tsecret \"3q2+7z3q2+7z3q2+7z3q2+7z3q2+7z3q2+7z3q2+7zo=\";\n};\n",
    );
    let rfc2136 = format!(
        "server = \"127.0.0.1:53\"\ntsig_key_file = \"{}\"\n",
        key.display()
    );
    assert!(support::checked(&base(&rfc2136)).is_ok());
    for (dns, at) in [
        (
            "server = \"127.0.0.1:53\"\n".to_owned(),
            "tls.acme.dns.tsig_key_file",
        ),
        (
            format!("{rfc2136}application_key = \"x\"\n"),
            "tls.acme.dns.application_key",
        ),
        (
            format!("{rfc2136}nameservers = [\"ns1\"]\n"),
            "tls.acme.dns.nameservers",
        ),
        (
            "provider = \"ovh\"\nnameservers = [\"127.0.0.1:53\"]\n".to_owned(),
            "tls.acme.dns.application_key",
        ),
        (
            "provider = \"ovh\"\napplication_key = \"x\"\n".to_owned(),
            "tls.acme.dns.nameservers",
        ),
        (
            "provider = \"ovh\"\nendpoint = \"http://api.ovh.example\"\n".to_owned(),
            "tls.acme.dns.endpoint",
        ),
        (
            "provider = \"route66\"\n".to_owned(),
            "tls.acme.dns.provider",
        ),
        (
            "provider = \"route53\"\n".to_owned(),
            "tls.acme.dns.hosted_zone_id",
        ),
        (
            format!("{rfc2136}region = \"eu-west-3\"\n"),
            "tls.acme.dns.region",
        ),
    ] {
        support::assert_refused(&base(&dns), at);
    }
    // A key file others can read is refused by check, as every secret is.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let error = support::checked(&base(&rfc2136)).unwrap_err().to_string();
    assert!(error.contains("tls.acme.dns.tsig_key_file"), "{error}");
    // A name outside the zone.
    let outside = base(&rfc2136).replace("zone = \"dns.test\"", "zone = \"other.test\"");
    support::assert_refused(&outside, "tls.acme.domains[0]");
    // The challenge and what it needs: a wildcard only with DNS-01, DNS-01 only with its table
    // and that table only with DNS-01, HTTP-01 only with a plain listener.
    let valid = support::ConfigToml::parse(&base(&rfc2136));
    let other = |challenge: &str| {
        valid
            .clone()
            .set("tls.acme.challenge", challenge.to_owned())
    };
    support::assert_refused(&other("tls-alpn-01").text(), "tls.acme.domains[0]");
    support::assert_refused(&other("tls-alpn-01").text(), "tls.acme.dns");
    let without_table = valid.clone().remove("tls.acme.dns").text();
    support::assert_refused(&without_table, "tls.acme.challenge");
    let http_only = other("http-01")
        .remove("tls.acme.dns")
        .set("tls.acme.domains", support::strings(&["dns.test"]))
        .remove("listen.http")
        .text();
    support::assert_refused(&http_only, "tls.acme.challenge");
}

/// Route53 on a real AWS-compatible service (moto): the record added to the zone while the
/// order runs, through the AWS SDK with credentials from the environment, and deleted after.
/// Pebble cannot resolve moto's zone, so the validation fails, which the audit line says: the
/// record must be gone all the same.
#[cfg(feature = "dns-route53")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_01_through_route53_adds_the_record_and_removes_it_whatever_the_outcome() {
    use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region};
    use support::acme::Moto;
    if !require_tools(&["pebble", "pebble-challtestsrv", "moto_server"]) {
        return;
    }
    let setup = Setup::new().await;
    let moto = tokio::task::block_in_place(Moto::start);
    let config = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .build();
    let route53 = aws_sdk_route53::Client::from_conf(config);
    let zone = route53
        .create_hosted_zone()
        .name("dns.test.")
        .caller_reference(format!("portcullis-{}", fastrand::u64(..)))
        .send()
        .await
        .unwrap();
    let zone_id = zone.hosted_zone().unwrap().id().to_owned();
    let pebble = tokio::task::block_in_place(|| Pebble::start(&setup.pki, free_port()));
    let toml = dns_config(
        &setup,
        &pebble.directory,
        &format!(
            "provider = \"route53\"\nhosted_zone_id = \"{zone_id}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n",
            moto.endpoint
        ),
    );
    let toml = support::ConfigToml::parse(&toml)
        .set("server.allow_root", true)
        .text();
    let file = setup.pki.dir.path().join("route53.toml");
    std::fs::write(&file, toml).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(["run", "-c"])
        .arg(&file)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    let stderr = Arc::new(std::sync::Mutex::new(Vec::new()));
    let _proxy = support::spawn_until_listening_keeping(command, stderr.clone());
    let txt = || async {
        route53
            .list_resource_record_sets()
            .hosted_zone_id(&zone_id)
            .send()
            .await
            .unwrap()
            .resource_record_sets()
            .iter()
            .filter(|set| {
                set.name() == "_acme-challenge.dns.test." && set.r#type().as_str() == "TXT"
            })
            .flat_map(|set| set.resource_records().iter().map(|r| r.value().to_owned()))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let failed = loop {
        seen.extend(txt().await);
        let audit = support::audit_text_in(&setup.log_dir());
        if audit.contains("\"outcome\":\"failed\"") {
            break audit;
        }
        assert!(
            Instant::now() < deadline,
            "no order ended: {}",
            stderr.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        seen.iter().any(|v| v.len() == 45 && v.starts_with('"')),
        "the record never reached the zone: {seen:?}"
    );
    assert!(failed.contains("urn:ietf:params:acme:error:"), "{failed}");
    assert!(txt().await.is_empty(), "the record outlived the order");
}
