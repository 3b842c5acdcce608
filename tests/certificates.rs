//! Certificate files that cannot be served are refused with their key, at start and on reload;
//! SIGHUP reloads the real binary's config. It proves that:
//! - an expired certificate, one not valid yet, a key that does not match, and a missing file
//!   are refused, each naming `tls.certificates[N]`;
//! - a route host no certificate covers is refused by key (a wildcard covers one label, and a
//!   wildcard route needs the same wildcard), and so is a second route for the same host and
//!   prefix, however the host is spelled;
//! - `kill -HUP` makes the running binary serve a newly added route and certificate.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair, date_time_ymd};
use support::{Client, Setup, WAIT};

#[tokio::test]
async fn routes_need_a_covering_certificate_and_a_place_of_their_own() {
    let setup = Setup::new().await;
    // The base config has four routes; the one pushed here is routes[4].
    let with_route = |host: &str, prefix: &str| {
        setup
            .config()
            .push(
                "routes",
                &[
                    ("host", host.into()),
                    ("path_prefix", prefix.into()),
                    ("upstream", "app".into()),
                ],
            )
            .text()
    };
    let problems_at = |toml: &str, key: &str| -> Vec<String> {
        support::problem_lines(toml)
            .into_iter()
            .filter(|p| p.starts_with(&format!("{key}: ")))
            .collect()
    };
    for covered in ["a.wild.test", "A.Wild.Test.", "*.wild.test"] {
        let toml = with_route(covered, "/more");
        if let Err(e) = support::config_from(&toml) {
            panic!("{covered} is covered, yet: {e}");
        }
    }
    for uncovered in ["a.b.wild.test", "wild.test", "*.app.test", "other.test"] {
        let problems = problems_at(&with_route(uncovered, "/"), "routes[4].host");
        assert!(
            problems.iter().any(|p| p.contains("no certificate")),
            "{uncovered} is not covered: {problems:#?}"
        );
    }
    for (host, prefix) in [("APP.test", "/"), ("*.WILD.test", "/"), ("127.0.0.1", "/")] {
        let problems = problems_at(&with_route(host, prefix), "routes[4].path_prefix");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("another route already serves")),
            "{host} {prefix} is a duplicate: {problems:#?}"
        );
    }
    let distinct = with_route("app.test", "/api");
    if let Err(e) = support::config_from(&distinct) {
        panic!("another prefix of a host is not a duplicate, yet: {e}");
    }
}

#[tokio::test]
async fn unservable_certificate_files_are_refused_by_key() {
    let setup = Setup::new().await;
    let dir = setup.pki.dir.path();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2021, 1, 1);
    let expired = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("expired.crt"), expired.pem()).unwrap();
    support::write_private(&dir.join("expired.key"), key.serialize_pem());
    let (future, future_key) = setup.pki.leaf_pem(&["localhost"], Some((2090, 2091)));
    std::fs::write(dir.join("future.crt"), future).unwrap();
    support::write_private(&dir.join("future.key"), future_key);
    support::write_private(
        &dir.join("other.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    );
    // The served pair, but its key readable by the key's group: refused with path and mode.
    let exposed = dir.join("exposed.key");
    std::fs::copy(&setup.pki.key, &exposed).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o640)).unwrap();
    let exposed_reason = format!("{} has mode 640", exposed.display());
    let files = |cert: &str, key: &str| {
        setup
            .config()
            .set(
                "tls.certificates[0].cert",
                dir.join(cert).display().to_string(),
            )
            .set(
                "tls.certificates[0].key",
                dir.join(key).display().to_string(),
            )
            .text()
    };
    let cases = [
        (
            files("expired.crt", "expired.key"),
            "certificate has expired",
        ),
        (
            files("future.crt", "future.key"),
            "certificate is not valid before",
        ),
        (
            setup
                .config()
                .set(
                    "tls.certificates[0].key",
                    dir.join("other.key").display().to_string(),
                )
                .text(),
            "private key does not match",
        ),
        (
            setup
                .config()
                .set("tls.certificates[0].cert", "/nonexistent/cert.pem")
                .text(),
            "cannot read /nonexistent/cert.pem",
        ),
        (
            setup
                .config()
                .set("tls.certificates[0].key", exposed.display().to_string())
                .text(),
            exposed_reason.as_str(),
        ),
    ];
    for (toml, reason) in cases {
        let problems = support::problem_lines(&toml);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("tls.certificates[0]: ") && p.contains(reason)),
            "{reason}: {problems:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    let setup = Setup::new().await;
    let file = setup.pki.dir.path().join("hup.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = setup
        .config()
        .set("listen.https", format!("127.0.0.1:{port}"))
        // Tests run as root in CI; the binary refuses that unless told.
        .set("server.allow_root", true)
        .text();
    std::fs::write(&file, &toml).unwrap();
    let mut child = support::Spawned(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "-c", file.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "proxy did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut before = Client::connect(false, addr, "localhost", &setup.pki).await;
    assert_eq!(before.get("localhost", "/added").await.status, 200);
    let grown = toml.clone()
        + "[[routes]]\nhost = \"localhost\"\npath_prefix = \"/added\"\nrespond = { status = 200, body = \"after hup\" }\n";
    std::fs::write(&file, grown).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut client = Client::connect(false, addr, "localhost", &setup.pki).await;
        if client.get("localhost", "/added").await.text() == "after hup" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the config"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        before.get("localhost", "/").await.status,
        200,
        "an open connection was dropped"
    );
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(child.0.wait().unwrap().success());
}
