//! Enrolment as an operator does it, with the real binary: a config directory, a CA key kept
//! apart, people's files, what the verbs print, and `portcullis connect` as an employee.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{Setup, Spawned, portcullis};

/// A config directory, a CA key directory apart from it, and where people's files go.
pub struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    pub fn new() -> Self {
        let place = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(place.path("etc")).unwrap();
        place
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> PathBuf {
        self.path("etc/portcullis.toml")
    }

    pub fn key(&self) -> PathBuf {
        self.path("ca/employees.key")
    }

    /// `portcullis employees VERB ARGS -c CONFIG --ca-key KEY`.
    pub fn employees(&self, verb: &str, args: &[&str]) -> std::process::Output {
        let config = self.config();
        let key = self.key();
        let mut all = vec!["employees", verb];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-c", config.to_str().unwrap()]);
        if matches!(verb, "init" | "add" | "renew" | "revoke" | "refresh-crl") {
            all.extend_from_slice(&["--ca-key", key.to_str().unwrap()]);
        }
        portcullis(&all)
    }

    pub fn employees_ok(&self, verb: &str, args: &[&str]) -> String {
        let out = self.employees(verb, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "employees {verb} {args:?} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Enrols `name` in `group`, valid for `validity` when given; what `add` printed.
    pub fn add(&self, name: &str, group: &str, validity: Option<&str>) -> Printed {
        let out = self.path("people");
        let mut args = vec![name, "--group", group, "--out", out.to_str().unwrap()];
        if let Some(validity) = validity {
            args.extend(["--validity", validity]);
        }
        Printed(self.employees_ok("add", &args))
    }

    pub fn person(&self, name: &str, extension: &str) -> PathBuf {
        self.path(&format!("people/{name}.{extension}"))
    }
}

/// What a verb printed, by label.
pub struct Printed(pub String);

impl Printed {
    pub fn field(&self, label: &str) -> String {
        let prefix = format!("{label}: ");
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{}", self.0))
            .to_owned()
    }

    /// The current code of the TOTP secret in the printed `otpauth://` URI.
    pub fn code(&self) -> String {
        totp_rs::Totp::from_url(self.field("otpauth"))
            .unwrap()
            .generate_current()
            .to_string()
    }
}

/// The proxy's config: the base one, a certificate for the corp hosts, an admin listener and
/// a `[gateway]` that `init` completes, with a short-lived revocation list.
pub fn base_config(setup: &Setup, place: &Place) -> String {
    let corp = setup.pki.extra_certificate("corp", &["*.corp.test"]);
    setup.toml(&format!(
        "{corp}[admin]\nlisten = \"127.0.0.1:0\"\n\n# ours\n[gateway]\nclient_ca = \"{ca}\"\ncrl_validity = \"2m\"\n",
        ca = place.path("etc/employees-ca.pem").display(),
    ))
}

/// `portcullis connect` as `name` to `target` through the gateway at `port`, its pipes ready.
pub fn connect(setup: &Setup, place: &Place, port: u16, name: &str, target: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(["connect", "--gateway", &format!("127.0.0.1:{port}")])
        .args(["--server-name", "gw.corp.test", "--cert"])
        .arg(place.person(name, "crt"))
        .arg("--key")
        .arg(place.person(name, "key"))
        .arg("--ca")
        .arg(&setup.pki.ca_pem)
        .arg(target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// `portcullis connect` as `name` to db1:22 through the gateway, with a line sent and echoed.
pub fn open_tunnel(setup: &Setup, place: &Place, port: u16, name: &str) -> Spawned {
    open_tunnel_to(setup, place, port, name, "db1:22")
}

/// The same to `target`.
pub fn open_tunnel_to(
    setup: &Setup,
    place: &Place,
    port: u16,
    name: &str,
    target: &str,
) -> Spawned {
    let mut child = Spawned(connect(setup, place, port, name, target).spawn().unwrap());
    let stdin = child.0.stdin.as_mut().unwrap();
    stdin.write_all(b"ping\n").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ping\n", "the tunnel did not echo");
    child
}

/// What `portcullis connect` as `name` to `target` said on stderr when it was refused.
pub fn refused_tunnel(setup: &Setup, place: &Place, port: u16, name: &str, target: &str) -> String {
    let mut command = connect(setup, place, port, name, target);
    command.stdin(Stdio::null());
    let out = command.output().unwrap();
    assert!(!out.status.success(), "{name} reached {target}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits, bounded, for `child` to end; whether it did.
pub fn ends_within(child: &mut Spawned, wait: Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if child.0.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn audit(setup: &Setup, event: &str) -> Vec<Value> {
    setup
        .audit()
        .into_iter()
        .filter(|line| line["event"] == event)
        .collect()
}
