//! The `portcullis` binary. It proves that:
//! - `check` accepts a valid config, prints its listeners, hosts and routes, and exits 0;
//! - `check` refuses a bad one with every error naming its key, and exits 1;
//! - `dev-certs` creates a CA and a localhost certificate with private keys 0600, idempotently;
//! - the shipped default config is valid;
//! - `run` (on a one-worker, current-thread runtime) serves and exits 0 on SIGTERM, even after
//!   whoever read its stderr went away.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::{Setup, portcullis, strings};

#[tokio::test]
async fn check_describes_a_valid_config() {
    let setup = Setup::new().await;
    let file = setup.pki.dir.path().join("ok.toml");
    std::fs::write(&file, setup.toml("")).unwrap();
    let out = portcullis(&["check", "-c", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("https  127.0.0.1:0"), "{stdout}");
    assert!(stdout.contains("app.test/ -> app"), "{stdout}");
    assert!(stdout.contains(&format!(
        "{}  environment \"test\", network 127.0.0.0/8",
        setup.app.addr
    )));
}

#[tokio::test]
async fn check_lists_every_error_by_key() {
    let setup = Setup::new().await;
    let app = setup.app.addr.to_string();
    let toml = setup
        .config()
        .set("upstreams.app.addrs", strings(&[&app, "8.8.8.8:80"]))
        .set("networks.test[1]", "1.1.1.0/24")
        .text();
    let file = setup.pki.dir.path().join("bad.toml");
    std::fs::write(&file, toml).unwrap();
    let out = portcullis(&["check", "-c", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("upstreams.app.addrs[1]: 8.8.8.8:80 is a public address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("networks.test[1]: 1.1.1.0/24 is not inside a private range"),
        "{stderr}"
    );
}

/// The problem lines `check` printed after its "not a valid config" line.
fn problems(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .skip_while(|line| !line.ends_with("is not a valid config:"))
        .skip(1)
        .collect()
}

#[tokio::test]
async fn check_reports_values_and_files_together_and_no_follow_on() {
    let setup = Setup::new().await;
    let missing = setup.pki.dir.path().join("missing");
    let toml = setup.toml(&format!(
        r#"[limits]
idle_timeout = "soon"
[[routes]]
host = "localhost"
path_prefix = "/ops"
upstream = "app"
internal = true
allow = ["carol"]
mfa = true
[gateway]
client_ca = "{missing}/ca.crt"
[gateway.users.carol]
totp_secret_file = "{missing}/carol.totp"
"#,
        missing = missing.display()
    ));
    let file = setup.pki.dir.path().join("bad.toml");
    std::fs::write(&file, toml).unwrap();
    let out = portcullis(&["check", "-c", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let keys: Vec<&str> = problems(&stderr)
        .iter()
        .filter_map(|line| line.split_once(": ").map(|(key, _)| key))
        .collect();
    // A value problem and the two file problems, each once; not "routes[4].internal: needs a
    // [gateway]" nor "routes[4].mfa: carol has no totp_secret_file", which would only be
    // echoes of the files that could not be read.
    assert_eq!(
        keys,
        [
            "limits.idle_timeout",
            "gateway.client_ca",
            "gateway.users.carol.totp_secret_file"
        ],
        "{stderr}"
    );
}

#[test]
fn every_unknown_key_is_refused_with_the_nearest_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(
        &file,
        "environment = \"dev\"\n[listen]\nhttps = \"127.0.0.1:0\"\nhtps = \"x\"\n\
         [server]\nalow_root = true\n",
    )
    .unwrap();
    let out = portcullis(&["check", "-c", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for line in [
        "listen.htps: unknown key \"htps\"; did you mean \"https\"?",
        "server.alow_root: unknown key \"alow_root\"; did you mean \"allow_root\"?",
    ] {
        assert_eq!(stderr.matches(line).count(), 1, "{stderr}");
    }
}

/// Three independent mistakes, three errors: an unknown key (whose table is not judged further,
/// so a route without its misspelt `upstrem` is not also "without an upstream"), a value out of
/// range, a file that cannot be read; and a public range in `[networks]` is one error, not
/// one more for every upstream of that environment.
#[tokio::test]
async fn three_independent_mistakes_are_three_errors_each_once() {
    let setup = Setup::new().await;
    let missing = setup.pki.dir.path().join("missing.key");
    let toml = setup
        .config()
        .set("limits.handshake_timeout", "0s")
        .set("tls.certificates[0].key", missing.to_str().unwrap())
        .remove("routes[1].upstream")
        .set("routes[1].upstrem", "app")
        .text();
    let file = setup.pki.dir.path().join("three.toml");
    std::fs::write(&file, &toml).unwrap();
    let out = portcullis(&["check", "-c", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let problems = problems(&stderr);
    let keys: Vec<&str> = problems
        .iter()
        .filter_map(|line| line.split_once(": ").map(|(key, _)| key))
        .collect();
    assert_eq!(
        keys,
        [
            "routes[1].upstrem",
            "limits.handshake_timeout",
            "tls.certificates[0]"
        ],
        "{toml}\n{stderr}"
    );
    assert!(
        problems[0].contains("did you mean \"upstream\""),
        "{stderr}"
    );
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
}

#[tokio::test]
async fn check_warns_about_legal_but_weak_hsts() {
    let setup = Setup::new().await;
    for (hsts, key) in [
        ("max_age = 0", "hsts.max_age"),
        ("preload = true\ninclude_subdomains = false", "hsts.preload"),
        ("preload = true\nmax_age = 86400", "hsts.preload"),
    ] {
        let file = setup.pki.dir.path().join("hsts.toml");
        std::fs::write(&file, setup.toml(&format!("[hsts]\n{hsts}\n"))).unwrap();
        let out = portcullis(&["check", "-c", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("warning: {key}: ")),
            "{hsts}: {stderr}"
        );
    }
    let file = setup.pki.dir.path().join("default-hsts.toml");
    std::fs::write(&file, setup.toml("")).unwrap();
    let out = portcullis(&["check", "-c", file.to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[tokio::test]
async fn upstream_names_are_resolved_by_check_not_by_validation() {
    let setup = Setup::new().await;
    let toml = setup
        .config()
        .set("upstreams.app.addrs[0]", "nowhere.invalid:80")
        .text();
    assert!(
        support::config_from(&toml).is_ok(),
        "validation went to the network"
    );
    let file = setup.pki.dir.path().join("unresolvable.toml");
    std::fs::write(&file, toml).unwrap();
    let out = portcullis(&["check", "-c", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("upstreams.app.addrs[0]: nowhere.invalid:80 does not resolve"),
        "{stderr}"
    );
}

#[test]
fn dev_certs_are_created_once_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("certs-dev");
    let first = portcullis(&["dev-certs", "--dir", target.to_str().unwrap()]);
    assert!(first.status.success());
    assert!(String::from_utf8_lossy(&first.stdout).contains("created"));
    let key = target.join("localhost.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let cert = std::fs::read(target.join("localhost.crt")).unwrap();
    let second = portcullis(&["dev-certs", "--dir", target.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&second.stdout).contains("already exist"));
    assert_eq!(
        std::fs::read(target.join("localhost.crt")).unwrap(),
        cert,
        "not idempotent"
    );
    let entry = portcullis::certs::load_certificate(&target.join("localhost.crt"), &key).unwrap();
    for host in ["localhost", "127.0.0.1", "::1"] {
        assert!(entry.covers(host), "{host}");
    }
}

#[test]
fn shipped_default_config_is_valid() {
    // The repository's layout: run from its root, the config in config/.
    let dir = tempfile::tempdir().unwrap();
    let default = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.toml");
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::copy(&default, dir.path().join("config/portcullis.toml")).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    // `check` writes nothing: it names what is missing and how to make it.
    let before = run(&["check", "-c", "config/portcullis.toml"]);
    let stderr = String::from_utf8_lossy(&before.stderr);
    assert_eq!(before.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("portcullis dev-certs --dir certs-dev"),
        "{stderr}"
    );
    assert!(!dir.path().join("certs-dev").exists(), "check wrote files");
    assert!(run(&["dev-certs", "--dir", "certs-dev"]).status.success());
    let out = run(&["check", "-c", "config/portcullis.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `portcullis` in `dir` and waits, bounded, until it says it is listening.
fn run_until_listening(dir: &std::path::Path, args: &[&str]) -> support::Spawned {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.current_dir(dir).args(args);
    support::spawn_until_listening(command)
}

#[test]
fn run_makes_the_dev_certificates_on_first_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let default = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.toml");
    // Beside this config rather than in the repository: paths are the config file's directory's.
    let shipped = std::fs::read_to_string(default)
        .unwrap()
        .replace("../certs-dev/", "certs-dev/");
    let config = support::ConfigToml::parse(&shipped)
        .set("listen.http", "127.0.0.1:0")
        .set("listen.https", "127.0.0.1:0")
        .set("admin.listen", "127.0.0.1:0")
        .set("log.dir", dir.path().join("logs").display().to_string());
    std::fs::write(dir.path().join("portcullis.toml"), config.text()).unwrap();
    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .current_dir(dir.path())
        .args(["run", "-c", "portcullis.toml"]);
    let child = support::spawn_until_listening_keeping(command, said.clone());
    drop(child);
    // The first-run message is whole: where to point curl and the browser.
    let said = said.lock().unwrap().join("\n");
    assert!(
        said.contains("trust the development CA to use https://localhost/ without warnings:")
            && said.contains("curl --cacert certs-dev/ca.crt https://localhost/"),
        "{said}"
    );
    let key = dir.path().join("certs-dev/localhost.key");
    assert!(dir.path().join("certs-dev/ca.crt").is_file());
    let mode = std::fs::metadata(key).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the dev key is readable by others: {mode:o}"
    );
}

/// Relative paths in a config are its own directory's, never the working directory's: `check`
/// from `/` and `run` from elsewhere read the same files, and `check` says against what.
#[tokio::test]
async fn relative_paths_are_the_config_files_directory() {
    let setup = Setup::new().await;
    let dir = setup.pki.dir.path();
    let relative = |path: &std::path::Path| path.strip_prefix(dir).unwrap().display().to_string();
    let text = setup
        .config()
        .set("server.allow_root", true)
        .set(
            "tls.certificates",
            toml::Value::Array(vec![toml::Value::Table(
                [
                    ("cert".to_owned(), relative(&setup.pki.cert).into()),
                    ("key".to_owned(), relative(&setup.pki.key).into()),
                ]
                .into_iter()
                .collect(),
            )]),
        )
        .set("log.dir", "logs")
        .text();
    let file = dir.join("portcullis.toml");
    std::fs::write(&file, text).unwrap();
    for cwd in ["/", env!("CARGO_MANIFEST_DIR")] {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .current_dir(cwd)
            .args(["check", "-c", file.to_str().unwrap()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "from {cwd}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = format!(
            "relative paths are resolved against {} (the config file's directory)",
            dir.display()
        );
        assert!(stdout.contains(&said), "{stdout}");
    }
    // The same file read from its own directory by another name: still valid, same files.
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir)
        .args(["check", "-c", "portcullis.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn run_serves_and_exits_zero_on_sigterm() {
    let setup = Setup::new().await;
    let file = setup.pki.dir.path().join("run.toml");
    std::fs::write(
        &file,
        setup.toml("[server]\nworkers = 1\nallow_root = true\n"),
    )
    .unwrap();
    let mut child =
        run_until_listening(setup.pki.dir.path(), &["run", "-c", file.to_str().unwrap()]);
    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM must end the proxy cleanly");
}

/// README's quick start puts the proxy in front of `python3 -m http.server`: run as written, that
/// app serves an empty directory, never the repository (whose `certs-dev/ca.key` is the key of
/// the CA README asks the reader to trust).
#[test]
fn the_quick_start_app_serves_no_file_of_the_repository() {
    if !support::require_tool("python3") {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## Put it in front of your app")
        .nth(1)
        .unwrap();
    let app = section
        .lines()
        .find(|line| line.contains("http.server"))
        .unwrap();
    let command = app.split(" &").next().unwrap();
    let port = support::free_port();
    let command = command.replace("3000", &port.to_string());
    let _app = support::Spawned(
        Command::new("sh")
            .args(["-c", &format!("exec {command}")])
            .current_dir(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let get = |path: &str| -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    };
    let deadline = std::time::Instant::now() + support::WAIT;
    let listing = loop {
        if let Some(answer) = get("/") {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the app never listened: {command}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!listing.contains("Cargo.toml"), "{listing}");
    for file in ["/README.md", "/Cargo.toml", "/certs-dev/ca.key"] {
        let answer = get(file).unwrap();
        assert!(answer.starts_with("HTTP/1.0 404"), "{file}: {answer}");
    }
}

/// An error whose message already says its cause is printed without the cause again
/// (`writing DIR: No such file or directory (os error 2): No such file or directory ...`).
#[test]
fn an_error_says_its_cause_once() {
    let out = portcullis(&["dev-certs", "--dir", "/proc/no-such-dir/certs"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("(os error").count(), 1, "{stderr}");
}
