//! The shared certificate store (`[tls.acme.store]`) attacked through what it holds, on a real
//! S3-compatible server (moto) with the real binary. It proves that:
//! - a certificate planted in the store is served only when it is one a certificate file could
//!   be: an expired one, one not valid yet, one for another name, one whose key is not its own,
//!   or bytes that are no certificate at all are refused with their reason, and the good
//!   certificate in service is kept;
//! - a `lease.json` claiming an expiry in the year 3000 does not stop renewal for good: it is
//!   taken over once it has stood unchanged for `lease`;
//! - a holder frozen past its lease (SIGSTOP, as a paused VM or a stalled disk would) says, once
//!   it runs again, that it renewed late and another instance may have ordered meanwhile.
//!
//! Skipped with a message where moto is not installed outside CI; `.ci/run` installs it.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::{ObjectStoreExt, PutPayload};
use rustls::pki_types::CertificateDer;
use support::acme::{Instance, Moto};
use support::{Setup, free_port, require_tool, tls_connect};

/// An ACME directory nobody answers: the instance never gets a certificate of its own.
const NO_DIRECTORY: &str = "https://127.0.0.1:1/directory";

async fn plant(moto: &Moto, name: &str, bytes: impl Into<PutPayload>) {
    let path = object_store::path::Path::from(format!("prod/{name}"));
    moto.client().put(&path, bytes.into()).await.unwrap();
}

/// Waits (bounded) until `instance` has logged `what`.
async fn wait_until_said(instance: &Instance, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !instance.said(what) {
        assert!(
            Instant::now() < deadline,
            "never said {what:?}:\n{}",
            instance.stderr.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The certificate object's name, as the instance logs it at start.
async fn certificate_object(instance: &Instance) -> String {
    wait_until_said(instance, "certificates shared through the store").await;
    let lines = instance.stderr.lock().unwrap();
    let line = lines
        .iter()
        .find(|l| l.contains("certificates shared through the store"))
        .unwrap();
    let start = line.find("object=").unwrap() + "object=".len();
    line[start..].split_whitespace().next().unwrap().to_owned()
}

/// The leaf served for acme.test to a client trusting the test CA (`None`: no handshake).
async fn served(https: SocketAddr, client: &Arc<rustls::ClientConfig>) -> Option<Vec<u8>> {
    let tls = tls_connect(https, "acme.test", client.clone()).await.ok()?;
    let leaf: &CertificateDer = tls.get_ref().1.peer_certificates()?.first()?;
    Some(leaf.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_certificates_are_checked_before_they_are_served() {
    if !require_tool("moto_server") {
        return;
    }
    let setup = Setup::new().await;
    let moto = tokio::task::block_in_place(Moto::start);
    let instance = Instance::start(&setup, "a", free_port(), NO_DIRECTORY, &moto);
    let object = certificate_object(&instance).await;
    let client = setup.pki.client(&[]);

    let (good, good_key) = setup.pki.leaf_pem(&["acme.test"], None);
    plant(&moto, &object, format!("{good_key}{good}").into_bytes()).await;
    wait_until_said(&instance, "deployed the certificate from the store").await;
    let good_der = served(instance.https, &client)
        .await
        .expect("good one served");

    let (_, other_key) = setup.pki.leaf_pem(&["acme.test"], None);
    let pem = |(cert, key): (String, String)| format!("{key}{cert}").into_bytes();
    let planted = [
        (
            pem(setup.pki.leaf_pem(&["acme.test"], Some((2020, 2021)))),
            "certificate has expired",
        ),
        (
            pem(setup.pki.leaf_pem(&["acme.test"], Some((2090, 2091)))),
            "certificate is not valid before",
        ),
        (
            pem(setup.pki.leaf_pem(&["other.test"], None)),
            "certificate does not cover acme.test",
        ),
        (
            format!("{other_key}{good}").into_bytes(),
            "private key does not match the certificate",
        ),
        (
            b"<html>not a certificate</html>".to_vec(),
            "not a PEM private key and certificate chain",
        ),
    ];
    for (bytes, reason) in planted {
        plant(&moto, &object, bytes).await;
        wait_until_said(&instance, reason).await;
        assert_eq!(
            served(instance.https, &client).await.as_ref(),
            Some(&good_der),
            "after a planted certificate ({reason}) the good one is no longer served"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_claiming_the_far_future_is_taken_over() {
    if !require_tool("moto_server") {
        return;
    }
    let setup = Setup::new().await;
    let moto = tokio::task::block_in_place(Moto::start);
    let year_3000_ms = 32_503_680_000_000u64;
    let lease = format!("{{\"holder\":\"mallory\",\"until_ms\":{year_3000_ms}}}");
    plant(&moto, "lease.json", lease.into_bytes()).await;
    // `lease = "2s"`: taken over some 2 s after it is first seen unchanged.
    let instance = Instance::start(&setup, "a", free_port(), NO_DIRECTORY, &moto);
    wait_until_said(&instance, "lease taken").await;
    let lease: serde_json::Value =
        serde_json::from_slice(&moto.read("prod/lease.json").await).unwrap();
    assert_ne!(lease["holder"], "mallory", "{lease}");
    assert!(
        lease["until_ms"].as_u64().unwrap() < year_3000_ms,
        "{lease}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_frozen_past_its_lease_says_it_renewed_late() {
    if !require_tool("moto_server") {
        return;
    }
    let setup = Setup::new().await;
    let moto = tokio::task::block_in_place(Moto::start);
    let instance = Instance::start(&setup, "a", free_port(), NO_DIRECTORY, &moto);
    wait_until_said(&instance, "lease taken").await;
    let signal = |name: &str| {
        let pid = instance.process.0.id().to_string();
        let sent = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    // `lease = "2s"`: frozen for longer, and nobody else to take it meanwhile.
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal("-CONT");
    wait_until_said(&instance, "lease renewed late").await;
    assert!(!instance.said("lease lost"), "the lease was never lost");
}
