//! Least privilege for the proxy itself, checked from outside its process: started as root it
//! binds ports below 1024 and then serves as `server.user` with nothing left of root
//! (`/proc/PID/status`); started with `CAP_NET_BIND_SERVICE` only it gives that up once bound;
//! root without an account is refused; under Landlock a reload cannot make it read a file
//! outside the set it started with, and on a kernel without Landlock (emulated with a seccomp
//! filter) it says so once at start and in `check`.
//!
//! These need root (CI runs as root); elsewhere they say why they skip.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use support::Setup;

/// The account the proxy drops to: one only `/etc/passwd` knows (systemd's NSS module makes up
/// `nobody` without reading a file).
const ACCOUNT: &str = "daemon";

struct Account {
    uid: u32,
    gid: u32,
}

fn account() -> Account {
    let user = nix::unistd::User::from_name(ACCOUNT).unwrap().unwrap();
    Account {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }
}

fn as_root() -> bool {
    support::as_root("binding ports below 1024 and switching accounts needs root")
}

/// A loopback address of its own, so that tests in parallel can all use port 443.
fn privileged(port: u16) -> SocketAddr {
    let [a, b, c] = [
        fastrand::u8(1..255),
        fastrand::u8(1..255),
        fastrand::u8(1..255),
    ];
    SocketAddr::from(([127, a, b, c], port))
}

/// Hands `dir` and all in it to the account, as a deployment would.
fn hand_over(dir: &Path, to: &Account) {
    std::os::unix::fs::chown(dir, Some(to.uid), Some(to.gid)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hand_over(&path, to);
        } else {
            std::os::unix::fs::chown(&path, Some(to.uid), Some(to.gid)).unwrap();
        }
    }
}

/// `Name:` lines of `/proc/PID/status`, whitespace-normalised.
fn status(pid: u32, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

struct Served {
    setup: Setup,
    https: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
}

impl Served {
    async fn new() -> Self {
        Self {
            setup: Setup::new().await,
            https: privileged(443),
            http: privileged(80),
            admin: privileged(900),
        }
    }

    /// The config file, on privileged ports, with `extra` set.
    fn write_config(&self, extra: &[(&str, toml::Value)]) -> std::path::PathBuf {
        let mut config = self
            .setup
            .config()
            .set("listen.https", self.https.to_string())
            .set("listen.http", self.http.to_string())
            .set("admin.listen", self.admin.to_string());
        for (key, value) in extra {
            config = config.set(key, value.clone());
        }
        let file = self.setup.pki.dir.path().join("portcullis.toml");
        std::fs::write(&file, config.text()).unwrap();
        file
    }

    async fn serves(&self) {
        let client = self.setup.pki.client(&[b"http/1.1"]);
        let status = support::status_with(self.https, "localhost", "/served", client).await;
        assert_eq!(status, Some(200), "HTTPS on {}", self.https);
        let redirect = support::raw_tcp(
            self.http,
            b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(support::status_of(&redirect), Some(301), "{redirect}");
    }
}

fn run(file: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.args(["run", "-c", file.to_str().unwrap()]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_as_root_it_binds_then_serves_as_the_configured_account() {
    if !as_root() {
        return;
    }
    let served = Served::new().await;
    let to = account();
    let file = served.write_config(&[("server.user", ACCOUNT.into())]);
    hand_over(served.setup.pki.dir.path(), &to);
    let child = support::spawn_until_listening(run(&file));
    let pid = child.0.id();

    let (uid, gid) = (to.uid.to_string(), to.gid.to_string());
    assert_eq!(
        status(pid, "Uid"),
        [&*uid; 4].join(" "),
        "real, effective, saved, fs uid"
    );
    assert_eq!(
        status(pid, "Gid"),
        [&*gid; 4].join(" "),
        "real, effective, saved, fs gid"
    );
    assert_eq!(
        status(pid, "Groups"),
        "",
        "supplementary groups are cleared"
    );
    for set in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        assert_eq!(status(pid, set), "0000000000000000", "{set}");
    }
    assert_eq!(status(pid, "NoNewPrivs"), "1");
    served.serves().await;

    // What it writes once serving is its account's, and private.
    let logs = served.setup.log_dir();
    let written: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!written.is_empty(), "no log file in {}", logs.display());
    for path in written {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.uid(), to.uid, "{}", path.display());
        assert_eq!(meta.permissions().mode() & 0o077, 0, "{}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_with_only_the_bind_capability_it_gives_it_up_once_bound() {
    if !as_root() || !support::require_tool("setpriv") {
        return;
    }
    let served = Served::new().await;
    let to = account();
    let file = served.write_config(&[]);
    hand_over(served.setup.pki.dir.path(), &to);
    // What systemd's User= with AmbientCapabilities=CAP_NET_BIND_SERVICE does.
    let mut command = Command::new("setpriv");
    command.args([
        &format!("--reuid={}", to.uid),
        &format!("--regid={}", to.gid),
        "--clear-groups",
        "--inh-caps=+net_bind_service",
        "--ambient-caps=+net_bind_service",
        "--",
        env!("CARGO_BIN_EXE_portcullis"),
        "run",
        "-c",
        file.to_str().unwrap(),
    ]);
    let child = support::spawn_until_listening(command);
    let pid = child.0.id();
    assert_eq!(status(pid, "Uid"), [&*to.uid.to_string(); 4].join(" "));
    for set in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        assert_eq!(status(pid, set), "0000000000000000", "{set}");
    }
    served.serves().await;
}

#[tokio::test]
async fn root_without_an_account_is_refused() {
    if !as_root() {
        return;
    }
    let served = Served::new().await;
    let file = served.write_config(&[]);
    let out = run(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to serve as root"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_landlock_a_reload_cannot_read_outside_the_files_it_started_with() {
    if !as_root() {
        return;
    }
    if !portcullis::sandbox::available() {
        eprintln!("SKIPPED: this kernel has no Landlock");
        return;
    }
    let served = Served::new().await;
    let to = account();
    let file = served.write_config(&[("server.user", ACCOUNT.into())]);
    // A certificate beside the config (inside the set) and one in a directory the config never
    // named, both the account's own and readable by it.
    let (inside_cert, inside_key) = served.setup.pki.leaf("inside", &["inside.test"]);
    let outside = tempfile::tempdir().unwrap();
    let (cert, key) = served.setup.pki.leaf("outside", &["outside.test"]);
    let (outside_cert, outside_key) = (outside.path().join("o.crt"), outside.path().join("o.key"));
    std::fs::rename(cert, &outside_cert).unwrap();
    std::fs::rename(key, &outside_key).unwrap();
    hand_over(served.setup.pki.dir.path(), &to);
    hand_over(outside.path(), &to);
    let plain = Command::new("setpriv")
        .args([
            &format!("--reuid={}", to.uid),
            &format!("--regid={}", to.gid),
            "--clear-groups",
        ])
        .args(["cat", outside_key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        plain.status.success(),
        "the account itself can read the outside key"
    );

    let _child = support::spawn_until_listening(run(&file));
    let add = |cert: &Path, key: &Path| {
        let text = std::fs::read_to_string(&file).unwrap();
        let grown = format!(
            "{text}\n[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        );
        std::fs::write(&file, grown).unwrap();
    };
    add(&inside_cert, &inside_key);
    let (status, body) = reload(served.admin).await;
    assert_eq!(status, 200, "a file inside the set reloads: {body}");

    add(&outside_cert, &outside_key);
    let (status, body) = reload(served.admin).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(&outside_cert.display().to_string()), "{body}");
    assert!(body.contains("Permission denied"), "{body}");
    served.serves().await;
}

/// `POST /reload` on the admin listener: its status and body.
async fn reload(admin: SocketAddr) -> (u16, String) {
    let answer = support::raw_tcp(
        admin,
        b"POST /reload HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    (support::status_of(&answer).unwrap_or(0), answer)
}

#[tokio::test]
async fn accounts_are_checked_with_the_config() {
    let setup = Setup::new().await;
    let with = |key: &str, value: &str| setup.config().set(key, value).text();
    support::assert_refused(&with("server.user", "no-such-account-here"), "server.user");
    support::assert_refused(&with("server.user", "root"), "server.user");
    support::assert_refused(&with("server.group", "nogroup"), "server.group");
    let both = setup
        .config()
        .set("server.user", ACCOUNT)
        .set("server.group", "root")
        .text();
    support::assert_refused(&both, "server.group");
    assert!(support::checked(&with("server.user", ACCOUNT)).is_ok());

    let file = setup.pki.dir.path().join("root.toml");
    std::fs::write(&file, setup.config().set("server.allow_root", true).text()).unwrap();
    let out = support::portcullis(&["check", "-c", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: server.allow_root: the proxy keeps root"),
        "{stderr}"
    );
}

/// `check` run as root judges the files as `server.user`, as `run` will use them: a key only
/// root can read, and a log directory the account cannot write, are refused under their keys
/// before a start that would fail after binding.
#[tokio::test]
async fn check_as_root_judges_the_files_as_the_account_that_will_run() {
    if !as_root() {
        return;
    }
    let served = Served::new().await;
    let file = served.write_config(&[("server.user", ACCOUNT.into())]);
    let logs = served.setup.log_dir();
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = || support::portcullis(&["check", "-c", file.to_str().unwrap()]);
    // The keys are root's, 0600, in a directory only root can enter.
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let key = served.setup.pki.key.display().to_string();
    for (at, said) in [
        (
            "tls.certificates[0].key",
            format!("server.user \"{ACCOUNT}\" cannot read {key}"),
        ),
        (
            "log.dir",
            format!("server.user \"{ACCOUNT}\" cannot write {}", logs.display()),
        ),
        ("server.user", "cannot read the config file".to_owned()),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(at) && l.contains(&said)),
            "no {at}: {said}: {stderr}"
        );
    }
    // Handed over as a deployment would: the same check passes, as the account.
    hand_over(served.setup.pki.dir.path(), &account());
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("files judged as {ACCOUNT}")),
        "{stdout}"
    );
    // One file taken back: only it is named.
    std::os::unix::fs::chown(&served.setup.pki.key, Some(0), Some(0)).unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refused: Vec<&str> = stderr.lines().filter(|l| l.contains("cannot")).collect();
    assert_eq!(refused.len(), 1, "{stderr}");
    assert!(
        refused[0].starts_with("tls.certificates[0].key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_snapshot_run_as_root_writes_as_the_configured_account() {
    if !as_root() {
        return;
    }
    let served = Served::new().await;
    let to = account();
    let snapshots = served.setup.pki.dir.path().join("snapshots");
    let file = served.write_config(&[
        ("server.user", ACCOUNT.into()),
        ("snapshots.dir", snapshots.display().to_string().into()),
    ]);
    hand_over(served.setup.pki.dir.path(), &to);
    let out = support::portcullis(&["snapshot", "-c", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The archive, the directory made for it, and the audit file its line opened: the
    // service's own, private, so that the service can prune and append to them later.
    let mut written = vec![snapshots.clone()];
    for dir in [&snapshots, &served.setup.log_dir()] {
        written.extend(std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()));
    }
    assert!(written.len() >= 3, "{written:?}");
    for path in written {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (to.uid, to.gid),
            "{}",
            path.display()
        );
        assert_eq!(meta.permissions().mode() & 0o077, 0, "{}", path.display());
    }
}

/// Runs a command as a kernel without Landlock would: its three system calls answer ENOSYS
/// (a seccomp filter installed by Python's ctypes just before `exec`).
const WITHOUT_LANDLOCK: &str = r#"
import ctypes, os, sys
class Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]
ENOSYS, ALLOW, ERRNO = 38, 0x7FFF0000, 0x00050000
code = [
    Filter(0x20, 0, 0, 0),           # load the call's number
    Filter(0x35, 0, 2, 444),         # below landlock_create_ruleset: allow
    Filter(0x25, 1, 0, 446),         # above landlock_restrict_self: allow
    Filter(0x06, 0, 0, ERRNO | ENOSYS),
    Filter(0x06, 0, 0, ALLOW),
]
program = Program(len(code), (Filter * len(code))(*code))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0                                # no_new_privs
assert libc.prctl(22, 2, ctypes.byref(program), 0, 0) == 0, ctypes.get_errno()  # seccomp
os.execv(sys.argv[1], sys.argv[1:])
"#;

fn without_landlock(args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .args(["-c", WITHOUT_LANDLOCK, env!("CARGO_BIN_EXE_portcullis")])
        .args(args);
    command
}

#[tokio::test]
async fn without_landlock_it_says_so_at_start_and_in_check() {
    if !support::require_tool("python3") {
        return;
    }
    const SAID: &str = "Landlock is not available on this kernel";
    let served = Served::new().await;
    let file = served.write_config(&[("server.allow_root", true.into())]);
    let file = file.to_str().unwrap();
    if portcullis::sandbox::available() {
        let check = support::portcullis(&["check", "-c", file]);
        assert!(!String::from_utf8_lossy(&check.stderr).contains(SAID));
    }
    let check = without_landlock(&["check", "-c", file]).output().unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    assert_eq!(stderr.matches(SAID).count(), 1, "{stderr}");

    if !as_root() {
        return;
    }
    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let child = support::spawn_until_listening_keeping(
        without_landlock(&["run", "-c", file]),
        said.clone(),
    );
    served.serves().await;
    drop(child);
    let lines = said.lock().unwrap().join("\n");
    assert_eq!(lines.matches(SAID).count(), 1, "{lines}");
}
