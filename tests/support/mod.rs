//! Shared test rig: a test CA (rcgen), real upstream servers, the real proxy on ephemeral
//! loopback ports, and real clients (hyper h1/h2 over rustls, raw TLS, raw TCP).
// Each test binary uses its own subset of the rig.
#![allow(dead_code, unused_imports)]

pub mod acme;
pub mod bind;
mod clients;
mod config;
pub mod employees;
pub mod enrolment;
pub mod fake_acme;
pub mod fake_ovh;
pub mod pebble;
mod pki;
pub mod postgres;
mod raw;
pub mod redis;
pub mod tls_server;
pub mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use portcullis::{Config, Running};

pub use clients::*;
pub use config::{ConfigToml, strings};
pub use pki::{CERT_NAMES, Pki};
pub use raw::*;
pub use upstream::Upstream;

/// True when an external tool is installed. Outside CI a missing tool skips its test with a
/// message; in CI (CI=true), where `.ci/run` installs every tool, it fails the test.
pub fn require_tool(name: &str) -> bool {
    let found = std::process::Command::new("which")
        .arg(name)
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{name} is missing in CI");
        eprintln!("SKIPPED: {name} is not installed");
    }
    found
}

/// [`require_tool`] for each of `names`: true when all are installed.
pub fn require_tools(names: &[&str]) -> bool {
    names.iter().all(|name| require_tool(name))
}

/// Sets `command`'s wall clock with libfaketime (Debian's `faketime`), as `FAKETIME` reads
/// `spec` (`+60d`, `@2029-03-01 00:00:00`); the monotonic clock stays real, so timers work.
/// The library is preloaded directly rather than through the `faketime` wrapper, which forks:
/// the proxy is then the test's own child, and killing it kills the proxy. False (the test
/// skips, or fails in CI) when the library is not installed.
pub fn fake_clock(command: &mut std::process::Command, spec: &str) -> bool {
    let library = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1"))
        .find(|path| path.exists());
    let Some(library) = library else {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfaketime is missing in CI"
        );
        eprintln!("SKIPPED: libfaketime is not installed");
        return false;
    };
    command
        .env("LD_PRELOAD", library)
        .env("FAKETIME", spec)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    true
}

/// True when the tests run as root. Outside CI a test that needs root skips, saying `why`;
/// in CI, which runs as root, it fails instead.
pub fn as_root(why: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the tests as root"
        );
        eprintln!("SKIPPED: {why}");
    }
    root
}

/// Writes a secret (a private key, a TOTP secret) readable by its owner only, as the proxy
/// requires.
pub fn write_private(path: &std::path::Path, contents: impl AsRef<[u8]>) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(contents.as_ref()).unwrap();
}

/// Runs the `portcullis` binary to completion.
pub fn portcullis(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the `portcullis` binary, asserts that it succeeded, and returns its stdout.
pub fn portcullis_ok(args: &[&str]) -> String {
    let out = portcullis(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "portcullis {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A child process killed when dropped, so that a failed assertion leaves nothing running.
pub struct Spawned(pub std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a configured `portcullis` command and waits, bounded, until it says it is
/// listening; panics with what it said when it never does.
pub fn spawn_until_listening(command: std::process::Command) -> Spawned {
    spawn_until_listening_keeping(command, Default::default())
}

/// [`spawn_until_listening`], keeping every stderr line in `lines`, those to come included.
pub fn spawn_until_listening_keeping(
    mut command: std::process::Command,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> Spawned {
    use std::io::{BufRead, BufReader};
    let mut child = Spawned(
        command
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (said, listening) = std::sync::mpsc::channel();
    let kept = lines.clone();
    // Reads to the end, so that the proxy never meets a closed pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let listening = line.contains("listening");
            // Kept before it is announced: a caller may look for the line at once.
            kept.lock().unwrap().push(line);
            if listening {
                let _ = said.send(true);
            }
        }
        let _ = said.send(false);
    });
    match listening.recv_timeout(WAIT) {
        Ok(true) => child,
        // Stderr closed (it exited) or the wait ran out: what it said is all there is.
        _ => panic!(
            "the proxy never said it was listening:\n{}",
            lines.lock().unwrap().join("\n")
        ),
    }
}

/// Upper bound for any single network wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `condition` until it holds, for at most `WAIT`.
pub async fn until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A proxy with its certificate and one echo upstream.
pub struct Setup {
    pub pki: Pki,
    pub app: Upstream,
}

impl Setup {
    pub async fn new() -> Self {
        Self {
            pki: Pki::new(CERT_NAMES),
            app: Upstream::start().await,
        }
    }

    /// The base config (routes for localhost, app.test, *.wild.test to `app`) plus `extra`
    /// TOML appended, e.g. a `[limits]` table.
    pub fn toml(&self, extra: &str) -> String {
        format!(
            r#"
environment = "test"
[listen]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
[[tls.certificates]]
cert = "{cert}"
key = "{key}"
[networks]
test = ["127.0.0.0/8", "::1/128"]
[upstreams.app]
environment = "test"
addrs = ["{app}"]
[[routes]]
host = "localhost"
upstream = "app"
[[routes]]
host = "app.test"
upstream = "app"
[[routes]]
host = "*.wild.test"
upstream = "app"
[[routes]]
host = "127.0.0.1"
upstream = "app"
[log]
dir = "{logs}"
{extra}
"#,
            logs = self.log_dir().display(),
            cert = self.pki.cert.display(),
            key = self.pki.key.display(),
            app = self.app.addr,
        )
    }

    /// The base config as a table to change by key.
    pub fn config(&self) -> ConfigToml {
        ConfigToml::parse(&self.toml(""))
    }

    /// Where this setup's access logs go.
    pub fn log_dir(&self) -> PathBuf {
        self.pki.dir.path().join("logs")
    }

    /// Every line of every access-log file written so far.
    pub fn access_lines(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.log_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("access-"))
            .flat_map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The text of every audit file written so far (complete after `shutdown`, which flushes
    /// the audit writer).
    pub fn audit_text(&self) -> String {
        audit_text_in(&self.log_dir())
    }

    /// Every audit record written so far, parsed.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        self.audit_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Starts the real proxy on ephemeral ports.
    pub async fn start(&self, extra: &str) -> Running {
        start_toml(&self.toml(extra)).await
    }
}

/// The text of every audit file in a log directory.
pub fn audit_text_in(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("audit-"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Validates a TOML config and starts the proxy on it.
pub async fn start_toml(toml_text: &str) -> Running {
    let config = config_from(toml_text).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    start_config(config).await
}

pub fn config_from(toml_text: &str) -> Result<Config, portcullis::config::ConfigError> {
    Config::from_parsed(portcullis::config::parse(toml_text)?)
}

/// A config through all three phases, as `check` takes it: values, files, then accounts and
/// names.
pub fn checked(toml_text: &str) -> Result<Config, portcullis::config::ConfigError> {
    let config = config_from(toml_text)?;
    config.resolve()?;
    Ok(config)
}

/// The problems of a config that validation must refuse.
pub fn problems(toml_text: &str) -> Vec<portcullis::config::Problem> {
    match checked(toml_text) {
        Err(portcullis::config::ConfigError::Invalid(problems)) => problems,
        Err(other) => panic!("expected validation problems, got: {other}"),
        Ok(_) => panic!("config was accepted:\n{toml_text}"),
    }
}

/// Every problem of a refused config as `key: reason` lines.
pub fn problem_lines(toml_text: &str) -> Vec<String> {
    problems(toml_text)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Asserts that validation refuses `toml_text` with a problem at `key` whose reason contains
/// `reason`.
pub fn assert_refused_with(toml_text: &str, key: &str, reason: &str) {
    let lines = problem_lines(toml_text);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(key) && l.contains(reason)),
        "no problem at {key} saying {reason:?}: {lines:#?}"
    );
}

/// A loopback port free a moment ago, below the kernel's ephemeral range (32768 and up on
/// Linux): the kernel hands ephemeral ports to every outgoing connection of every test running
/// meanwhile, so one taken from there can be gone before the process it is meant for binds it.
/// Never the same port twice in one test binary: two tests starting servers side by side would
/// otherwise both see a port free before either binds it, and one would talk to the other's.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = fastrand::u16(10_000..32_000);
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free loopback port in 10000..32000")
}

/// Asserts that validation refuses `toml_text` with a problem at `key`.
pub fn assert_refused(toml_text: &str, key: &str) {
    let problems = problems(toml_text);
    assert!(
        problems.iter().any(|p| p.key == key),
        "no problem at {key}: {problems:#?}"
    );
}

/// Starts the proxy on the config in `file`, which SIGHUP and `POST /reload` re-read.
pub async fn start_file(file: &std::path::Path) -> Running {
    let (config, _) = Config::load(file).unwrap();
    let listeners = portcullis::Listeners::bind(&config).unwrap();
    portcullis::start_from_file(config, listeners, file.to_owned())
        .await
        .unwrap()
}

pub async fn start_config(config: Config) -> Running {
    portcullis::start(config).await.unwrap()
}
