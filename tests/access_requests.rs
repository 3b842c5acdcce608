//! Access on request, for a time, from outside: people enrolled by the real binary, requests
//! made, approved and denied by it, and `portcullis connect` as the third party. It proves that:
//! - without a grant, a configured person is told why (`no grant for db1:22`, `no such tunnel
//!   target`) and their probe of an unknown target is an audit line with their name;
//! - a pending request grants nothing; approved, it opens the tunnel, which is cut when the
//!   grant ends (`closed_by = "grant_expired"`), and nothing opens after;
//! - `deny` ends a running grant early and cuts what it opened;
//! - an approver cannot approve their own request, nor can someone who is not an approver;
//! - request, approval, use, denial and expiry are audit lines and appear in `access-report`.

mod support;

use std::time::{Duration, Instant};

use support::enrolment::{Place, audit, base_config, ends_within, refused_tunnel};
use support::upstream::Echo;
use support::{Setup, WAIT, portcullis_ok};

/// Tunnels for infra (db1) and for bob alone (db2), both to `echo`; group infra approves.
fn config(setup: &Setup, place: &Place, echo: &Echo) -> String {
    format!(
        "{}approvers = [\"group:infra\"]\n",
        base_config(setup, place)
    ) + &format!(
        "\n[upstreams.db1]\nenvironment = \"test\"\naddrs = [\"{}\"]\n\
         [[tunnels]]\nhost = \"gw.corp.test\"\ntarget = \"db1\"\nupstream = \"db1\"\nallow = [\"group:infra\"]\n\
         [[tunnels]]\nhost = \"gw.corp.test\"\ntarget = \"db2\"\nupstream = \"db1\"\nallow = [\"bob\"]\n",
        echo.addr
    )
}

/// The number `request` printed.
fn request_id(printed: &str) -> String {
    printed
        .split_whitespace()
        .nth(2)
        .and_then(|id| id.strip_suffix(':'))
        .unwrap_or_else(|| panic!("no request number in {printed}"))
        .to_owned()
}

/// `employees request WHO --tunnel TUNNEL --for LENGTH --reason REASON`: the request's number.
fn ask(place: &Place, who: &str, tunnel: &str, length: &str, reason: &str) -> String {
    let args = [who, "--tunnel", tunnel, "--for", length, "--reason", reason];
    request_id(&place.employees_ok("request", &args))
}

/// Carol's tunnel to db1:22, once the proxy has looked at the requests file again (it does
/// once a second): tried, bounded, until a line sent comes back.
fn tunnel_when_granted(setup: &Setup, place: &Place, port: u16) -> support::Spawned {
    use std::io::{BufRead, BufReader, Write};
    let deadline = Instant::now() + WAIT;
    loop {
        let mut command = support::enrolment::connect(setup, place, port, "carol", "db1:22");
        let mut child = support::Spawned(command.spawn().unwrap());
        let stdin = child.0.stdin.as_mut().unwrap();
        // A refused connect has exited: the write may fail, the read then sees the end.
        let _ = stdin.write_all(b"ping\n").and_then(|()| stdin.flush());
        let mut line = String::new();
        let _ = BufReader::new(child.0.stdout.as_mut().unwrap()).read_line(&mut line);
        if line == "ping\n" {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "the approved grant never opened the tunnel"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// Two workers: `connect`'s pipes and the waits block this thread while the proxy serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_reaches_its_target_for_the_approved_time_only() {
    let setup = Setup::new().await;
    let echo = Echo::start().await;
    let place = Place::new();
    std::fs::write(place.config(), config(&setup, &place, &echo)).unwrap();
    place.employees_ok("init", &[]);
    place.add("alice", "infra", None);
    place.add("bob", "infra", None);
    place.add("carol", "vendor", None);
    let config_path = place.config();
    let config_arg = config_path.to_str().unwrap();
    portcullis_ok(&["check", "-c", config_arg]);
    let proxy = support::start_file(&place.config()).await;
    let port = proxy.https_addr.port();

    // Told why, by name in the trail.
    let said = refused_tunnel(&setup, &place, port, "carol", "db1:22");
    assert!(
        said.contains("403") && said.contains("no grant for db1:22"),
        "{said}"
    );
    let said = refused_tunnel(&setup, &place, port, "carol", "nosuch:22");
    assert!(said.contains("no such tunnel target"), "{said}");
    // The same with no flag at all: everything from ~/.config/portcullis/connect.toml.
    let xdg = place.path("xdg");
    std::fs::create_dir_all(xdg.join("portcullis")).unwrap();
    std::fs::write(
        xdg.join("portcullis/connect.toml"),
        format!(
            "gateway = \"127.0.0.1:{port}\"\nserver_name = \"gw.corp.test\"\n\
             cert = \"../../people/carol.crt\"\nkey = \"../../people/carol.key\"\nca = \"{}\"\n",
            setup.pki.ca_pem.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["connect", "nosuch:22"])
        .env("XDG_CONFIG_HOME", &xdg)
        .env_remove("PORTCULLIS_GATEWAY")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no such tunnel target"), "{said}");

    // Asked for, but pending grants nothing.
    let id = ask(&place, "carol", "db1:22", "6s", "TICKET-7 migration");
    std::thread::sleep(Duration::from_millis(1500));
    let said = refused_tunnel(&setup, &place, port, "carol", "db1:22");
    assert!(
        said.contains("no grant for db1:22"),
        "pending let carol in: {said}"
    );

    // No self-approval, and only approvers approve.
    let own = ask(&place, "alice", "db2", "1h", "TICKET-8");
    let refused = place.employees("approve", &[&own, "--by", "alice"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("may not approve their own request"),
        "{refused:?}"
    );
    let refused = place.employees("approve", &[&id, "--by", "carol"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("approvers"),
        "{refused:?}"
    );
    let listed = place.employees_ok("requests", &["--json"]);
    let file: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(
        file["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "pending"),
        "a refused approval changed the file: {file}"
    );

    // Approved: carol is in, and cut when the grant ends.
    place.employees_ok("approve", &[&id, "--by", "bob"]);
    let approved_at = Instant::now();
    let mut tunnel = tunnel_when_granted(&setup, &place, port);
    assert!(
        ends_within(&mut tunnel, Duration::from_secs(6) + WAIT),
        "the tunnel outlived its grant"
    );
    assert!(approved_at.elapsed() >= Duration::from_secs(5), "cut early");
    let said = refused_tunnel(&setup, &place, port, "carol", "db1:22");
    assert!(
        said.contains("no grant for db1:22"),
        "after the grant: {said}"
    );

    // Denied while running: cut at once.
    let again = ask(&place, "carol", "db1", "1h", "TICKET-9");
    place.employees_ok("approve", &[&again, "--by", "alice"]);
    let mut tunnel = tunnel_when_granted(&setup, &place, port);
    place.employees_ok("deny", &[&again, "--by", "bob"]);
    assert!(
        ends_within(&mut tunnel, WAIT),
        "a denied grant kept its tunnel"
    );
    proxy.shutdown().await;

    let closed = audit(&setup, "tunnel_closed");
    let carol_closed: Vec<&str> = closed
        .iter()
        .filter(|l| l["user"] == "carol")
        .map(|l| l["closed_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        carol_closed,
        ["grant_expired", "grant_removed"],
        "{closed:?}"
    );
    let opened = audit(&setup, "tunnel_opened");
    assert!(
        opened
            .iter()
            .any(|l| l["user"] == "carol"
                && l["reason"] == format!("certificate; access request {id}")),
        "{opened:?}"
    );
    let denied = audit(&setup, "denied");
    assert!(
        denied.iter().any(|l| l["user"] == "carol"
            && l["route"] == "gw.corp.test CONNECT nosuch:22"
            && l["reason"] == "no such tunnel target"),
        "{denied:?}"
    );
    let requests = audit(&setup, "access_request");
    let lines: Vec<(String, &str)> = requests
        .iter()
        .map(|l| (l["id"].to_string(), l["action"].as_str().unwrap()))
        .collect();
    for wanted in [
        (id.clone(), "requested"),
        (id.clone(), "approved"),
        (id.clone(), "expired"),
        (again.clone(), "denied"),
    ] {
        assert!(
            lines.iter().any(|(i, a)| *i == wanted.0 && *a == wanted.1),
            "{wanted:?} missing from {lines:?}"
        );
    }

    let report = portcullis_ok(&["access-report", "-c", config_arg, "--since", "1h"]);
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("#{id} carol")))
        .unwrap_or_else(|| panic!("request {id} not in the report:\n{report}"));
    assert!(
        line.contains("expired")
            && line.contains("bob")
            && line.contains("used 1 times")
            && line.contains("TICKET-7"),
        "{line}"
    );
}
