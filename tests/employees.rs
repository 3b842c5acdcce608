//! `portcullis employees` from outside: the employee CA, people's certificates and TOTP
//! secrets, revocation and revocation lists made by the real binary only (no openssl, no
//! rcgen), and used by real clients: curl with the PKCS#12 bundle, `portcullis connect` with
//! the PEM files. It proves that:
//! - `init` makes a CA the proxy trusts and a revocation list it takes, `add` enrols a person
//!   whose bundle opens her internal route once the TOTP code from the printed URI passed;
//! - `revoke` and a reload cut her open tunnel and keep-alive connection and refuse new ones,
//!   while a colleague's connection lives on; `refresh-crl` re-signs the list with a later
//!   nextUpdate and a reload takes it with no connection cut;
//! - a certificate past its short validity is refused and `renew` issues a working one;
//! - every verb is an audit line, and `list` agrees with the trail;
//! - the CA key where the proxy could read it, a key of another CA or readable by others,
//!   names that are not plain words and a second enrolment are refused, and nothing is
//!   written by a refused verb.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::enrolment::{Place, Printed, audit, base_config, ends_within, open_tunnel};
use support::upstream::Echo;
use support::{Setup, WAIT, portcullis, portcullis_ok};

/// An internal route for group infra with a second factor, and a tunnel to `echo`.
fn routes(echo: &Echo) -> String {
    format!(
        "\n[[routes]]\nhost = \"tools.corp.test\"\nupstream = \"app\"\ninternal = true\nallow = [\"group:infra\"]\nmfa = true\n\
         [upstreams.db1]\nenvironment = \"test\"\naddrs = [\"{}\"]\n\
         [[tunnels]]\nhost = \"gw.corp.test\"\ntarget = \"db1\"\nupstream = \"db1\"\nallow = [\"group:infra\"]\n",
        echo.addr
    )
}

/// curl with `name`'s PKCS#12 bundle: the status it got (0 when the handshake failed) and the
/// body. `extra` adds flags (a cookie jar, a form).
async fn curl(
    setup: &Setup,
    port: u16,
    bundle: &Path,
    passphrase: &str,
    path: &str,
    extra: &[&str],
) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&setup.pki.ca_pem)
        .args(["--resolve", &format!("tools.corp.test:{port}:127.0.0.1")])
        .args(["--cert-type", "P12", "--cert"])
        .arg(format!("{}:{passphrase}", bundle.display()))
        .args(extra)
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://tools.corp.test:{port}{path}"));
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The CRL's number and nextUpdate, read with x509-parser as the proxy reads it.
fn crl_facts(path: &Path) -> (u64, i64) {
    let pem = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).unwrap();
    let number = crl
        .crl_number()
        .unwrap()
        .to_u64_digits()
        .first()
        .copied()
        .unwrap_or(0);
    (number, crl.next_update().unwrap().timestamp())
}

// Two workers: the clients below block (curl runs in the blocking pool, `connect`'s pipes and
// the waits on this thread), the proxy serves on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_revoked_and_renewed_by_the_binary_used_by_curl_and_connect() {
    if !support::require_tool("curl") {
        return;
    }
    let setup = Setup::new().await;
    let echo = Echo::start().await;
    let place = Place::new();
    std::fs::write(place.config(), base_config(&setup, &place)).unwrap();

    let init = place.employees_ok("init", &[]);
    assert!(init.contains("portcullis-crl.timer"), "{init}");
    let key_mode = std::fs::metadata(place.key()).unwrap().permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let config = std::fs::read_to_string(place.config()).unwrap();
    assert!(
        config.contains("# ours\n[gateway]\n"),
        "comments kept:\n{config}"
    );
    assert!(
        config.contains("crls = ["),
        "init names its list:\n{config}"
    );

    let alice = place.add("alice", "infra", None);
    place.add("bob", "infra", None);
    let totp_mode = std::fs::metadata(place.path("etc/alice.totp"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(totp_mode & 0o777, 0o600);
    // Short-lived by default: 30 days, not years.
    let until = humantime::parse_rfc3339(&alice.field("valid until")).unwrap();
    let left = until.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(29 * 86_400) && left <= Duration::from_secs(30 * 86_400));

    let mut config = std::fs::read_to_string(place.config()).unwrap();
    config.push_str(&routes(&echo));
    std::fs::write(place.config(), config).unwrap();
    portcullis_ok(&["check", "-c", place.config().to_str().unwrap()]);
    let proxy = support::start_file(&place.config()).await;
    let port = proxy.https_addr.port();

    // Alice, with curl and her bundle: the second-factor form, the code, then her tool.
    let p12 = place.person("alice", "p12");
    let pass = alice.field("pkcs12 passphrase");
    let (status, form) = curl(&setup, port, &p12, &pass, "/tool", &[]).await;
    assert_eq!(status, 401, "{form}");
    assert!(form.contains("name=code"), "{form}");
    let jar = place.path("alice.cookies");
    let jar = jar.to_str().unwrap();
    let body = format!(
        "code={}&route=tools.corp.test%2F&return=%2Ftool",
        alice.code()
    );
    let (status, _) = curl(
        &setup,
        port,
        &p12,
        &pass,
        "/.portcullis/mfa",
        &["-c", jar, "-d", &body],
    )
    .await;
    assert_eq!(status, 303);
    let (status, seen) = curl(&setup, port, &p12, &pass, "/tool", &["-b", jar]).await;
    assert_eq!(status, 200, "{seen}");
    assert!(seen.contains("GET /tool"), "{seen}");
    let (status, _) = curl(
        &setup,
        port,
        &p12,
        "wrong-passphrase",
        "/tool",
        &["-b", jar],
    )
    .await;
    assert_ne!(status, 200, "a wrong passphrase opened the bundle");

    let mut alice_tunnel = open_tunnel(&setup, &place, port, "alice");
    let mut bob_tunnel = open_tunnel(&setup, &place, port, "bob");

    // Revoked, and the reload cuts what she has open; bob's tunnel lives on.
    let revoked = place.employees_ok("revoke", &["alice"]);
    assert!(revoked.contains(&alice.field("serial")), "{revoked}");
    let (number_before, next_before) = crl_facts(&place.path("etc/employees.crl"));
    proxy
        .reload_file(portcullis::audit::Trigger::Admin)
        .unwrap();
    assert!(
        ends_within(&mut alice_tunnel, WAIT),
        "the revoked tunnel stayed open"
    );
    let (status, _) = curl(&setup, port, &p12, &pass, "/tool", &["-b", jar]).await;
    assert_ne!(status, 200, "a revoked certificate was let in");
    assert!(!ends_within(&mut bob_tunnel, Duration::from_millis(500)));

    // The timer's job: a list signed again, later, taken by a reload that cuts nobody.
    std::thread::sleep(Duration::from_millis(1100));
    place.employees_ok("refresh-crl", &[]);
    let (number_after, next_after) = crl_facts(&place.path("etc/employees.crl"));
    assert!(number_after > number_before && next_after > next_before);
    proxy
        .reload_file(portcullis::audit::Trigger::Admin)
        .unwrap();
    assert!(
        !ends_within(&mut bob_tunnel, Duration::from_millis(500)),
        "refresh-crl cut bob"
    );
    let stdin = bob_tunnel.0.stdin.as_mut().unwrap();
    stdin.write_all(b"still\n").unwrap();
    let mut line = String::new();
    BufReader::new(bob_tunnel.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "still\n");

    // Short-lived: past its validity, carol's certificate is refused; renewed, she is back.
    let carol = place.add("carol", "infra", Some("2s"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy
        .reload_file(portcullis::audit::Trigger::Admin)
        .unwrap();
    let carol_p12 = place.person("carol", "p12");
    let (status, _) = curl(
        &setup,
        port,
        &carol_p12,
        &carol.field("pkcs12 passphrase"),
        "/tool",
        &[],
    )
    .await;
    assert_eq!(status, 0, "an expired certificate got an answer");
    let renewed = Printed(place.employees_ok(
        "renew",
        &["carol", "--out", place.path("people").to_str().unwrap()],
    ));
    let (status, _) = curl(
        &setup,
        port,
        &carol_p12,
        &renewed.field("pkcs12 passphrase"),
        "/tool",
        &[],
    )
    .await;
    assert_eq!(
        status, 401,
        "the renewed certificate reaches the second-factor form"
    );

    drop(bob_tunnel);
    proxy.shutdown().await;

    // Every verb is an audit line, by whom and for whom.
    let enrolment = audit(&setup, "enrolment");
    let actions: Vec<(&str, &str)> = enrolment
        .iter()
        .map(|l| (l["action"].as_str().unwrap(), l["user"].as_str().unwrap()))
        .collect();
    for wanted in [
        ("init", "-"),
        ("add", "alice"),
        ("add", "bob"),
        ("revoke", "alice"),
        ("refresh_crl", "-"),
        ("add", "carol"),
        ("renew", "carol"),
    ] {
        assert!(
            actions.contains(&wanted),
            "{wanted:?} missing from {actions:?}"
        );
    }
    let revoke = enrolment.iter().find(|l| l["action"] == "revoke").unwrap();
    assert_eq!(revoke["serial"], alice.field("serial"));
    assert!(!revoke["operator"].as_str().unwrap().is_empty());
    let closed = audit(&setup, "tunnel_closed");
    assert!(
        closed
            .iter()
            .any(|l| l["user"] == "alice" && l["closed_by"] == "revoked"),
        "{closed:?}"
    );

    // `list` agrees with the trail: who, which certificates in which state, last use.
    let list = place.employees_ok("list", &["--json"]);
    let people: Vec<Value> = serde_json::from_str(&list).unwrap();
    let person = |name: &str| people.iter().find(|p| p["name"] == name).unwrap().clone();
    let alice_listed = person("alice");
    assert_eq!(alice_listed["groups"], serde_json::json!(["infra"]));
    assert_eq!(alice_listed["certificates"][0]["state"], "revoked");
    assert_eq!(
        alice_listed["certificates"][0]["serial"],
        alice.field("serial")
    );
    let last_seen = setup
        .audit()
        .into_iter()
        .filter(|l| {
            l["user"] == "alice"
                && (l["event"] == "tunnel_opened"
                    || (l["event"] == "access"
                        && (l["decision"] == "allowed" || l["decision"] == "mfa_passed")))
        })
        .map(|l| l["ts"].as_str().unwrap().to_owned())
        .max()
        .unwrap();
    assert_eq!(alice_listed["last_use"], last_seen);
    let carol_listed = person("carol");
    let states: Vec<&str> = carol_listed["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["valid", "expired"]);
    assert_eq!(person("bob")["certificates"][0]["state"], "valid");
}

#[test]
fn refused_verbs_say_why_and_write_nothing() {
    let place = Place::new();
    let pki = support::Pki::new(&["localhost"]);
    let config = format!(
        "environment = \"test\"\n[listen]\nhttps = \"127.0.0.1:0\"\n[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n[networks]\ntest = [\"127.0.0.0/8\"]\n[log]\ndir = \"{}\"\n",
        pki.cert.display(),
        pki.key.display(),
        place.path("logs").display()
    );
    std::fs::write(place.config(), &config).unwrap();
    let config_path = place.config();
    let config_arg = config_path.to_str().unwrap();
    let stderr = |out: std::process::Output| {
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // The CA key where the serving process could read it.
    let in_reach = place.path("etc/ca.key");
    let said = stderr(portcullis(&[
        "employees",
        "init",
        "-c",
        config_arg,
        "--ca-key",
        in_reach.to_str().unwrap(),
    ]));
    assert!(
        said.contains("outside every directory the proxy may read"),
        "{said}"
    );
    assert!(!in_reach.exists());
    assert_eq!(
        std::fs::read_to_string(&config_path).unwrap(),
        config,
        "a refused init edited the config"
    );
    // Nothing to enrol into yet.
    let said = stderr(place.employees("add", &["alice", "--out", "/nonexistent"]));
    assert!(said.contains("has no [gateway]"), "{said}");

    place.employees_ok("init", &[]);
    let said = stderr(place.employees("init", &[]));
    assert!(said.contains("exists: refusing to overwrite"), "{said}");

    let out = place.path("people");
    let out = out.to_str().unwrap();
    for bad in ["../alice", "a:b", ".hidden", "al ice"] {
        let said = stderr(place.employees("add", &[bad, "--out", out]));
        assert!(said.contains("is not a valid name"), "{bad}: {said}");
    }
    let said = stderr(place.employees("add", &["alice", "--group", "in fra", "--out", out]));
    assert!(said.contains("\"in fra\" is not a valid name"), "{said}");
    place.add("alice", "infra", None);
    let said = stderr(place.employees("add", &["alice", "--out", out]));
    assert!(said.contains("enrolled already"), "{said}");
    let said = stderr(place.employees("revoke", &["mallory"]));
    assert!(said.contains("\"mallory\" is in neither"), "{said}");
    let said = stderr(place.employees("revoke", &["--serial", "zz"]));
    assert!(said.contains("not a certificate serial"), "{said}");

    // A key others can read, and a key that is not the CA's, sign nothing.
    let before = std::fs::read_to_string(place.config()).unwrap();
    std::fs::set_permissions(place.key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = stderr(place.employees("add", &["bob", "--out", out]));
    assert!(said.contains("only its owner may have access"), "{said}");
    std::fs::set_permissions(place.key(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let other = Place::new();
    std::fs::write(other.config(), config.replace("logs", "logs2")).unwrap();
    other.employees_ok("init", &[]);
    std::fs::copy(other.key(), place.key()).unwrap();
    let said = stderr(place.employees("add", &["bob", "--out", out]));
    assert!(said.contains("it is not the key of"), "{said}");
    assert_eq!(std::fs::read_to_string(place.config()).unwrap(), before);
    assert!(!place.path("etc/bob.totp").exists() && !place.person("bob", "p12").exists());

    // Long-lived certificates and a list that outruns its timer are legal, and warned about:
    // the setting, and a list signed with it that expires within the timer's period.
    let warned = format!(
        "{config}[gateway]\nclient_ca = \"{}\"\ncrls = [\"{}\"]\ncertificate_validity = \"365d\"\ncrl_validity = \"30m\"\n",
        other.path("etc/employees-ca.pem").display(),
        other.path("etc/employees.crl").display()
    );
    std::fs::write(other.config(), warned).unwrap();
    other.employees_ok("refresh-crl", &[]);
    let out = portcullis(&["check", "-c", other.config().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("gateway.certificate_validity"), "{said}");
    assert!(said.contains("lost laptop"), "{said}");
    assert!(
        said.contains("gateway.crl_validity") && said.contains("portcullis-crl.timer"),
        "{said}"
    );
    let described = String::from_utf8_lossy(&out.stdout);
    assert!(
        described.contains("gateway.crls[0] expires within portcullis-crl.timer's period"),
        "{described}"
    );
}
