//! A real PostgreSQL (Debian's `postgresql`) started for one test: its own cluster in a temp
//! directory, run as the `postgres` account (it refuses root) on a loopback port, TLS on with a
//! certificate from the test PKI for `pg1.db.test`, and only `hostssl` with SCRAM in
//! `pg_hba.conf`: a session that did not come over TLS with the password is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::employees::{Employees, gateway_toml};
use super::{Pki, Setup, Spawned, WAIT, free_port};

/// The cluster's superuser and its password.
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-password-1";
/// The name on the database's certificate.
pub const SERVER_NAME: &str = "pg1.db.test";
/// The gateway's name in [`Rig`].
pub const GATEWAY: &str = "gw.corp.test";

pub struct Postgres {
    pub port: u16,
    /// The CA that signed the database's certificate.
    pub pki: Pki,
    pub dir: tempfile::TempDir,
    _server: Spawned,
}

/// The directory of the newest installed PostgreSQL's programs.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("postgres").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn account() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Runs `program` of PostgreSQL's as the `postgres` account.
fn as_postgres(bin: &Path, program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(bin.join(program));
    command
}

impl Postgres {
    /// A running cluster; `None` (skipped, outside CI) without PostgreSQL or root.
    pub fn start() -> Option<Self> {
        let found = bin_dir().filter(|_| super::require_tool("psql"));
        let (Some(bin), Some((uid, gid))) = (found, account()) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "postgresql is missing in CI"
            );
            eprintln!("SKIPPED: no PostgreSQL server here");
            return None;
        };
        if !super::as_root("PostgreSQL runs as its own account") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let own = |path: &Path| std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let password = dir.path().join("password");
        std::fs::write(&password, PASSWORD).unwrap();
        own(&password);
        std::fs::create_dir(&data).unwrap();
        own(&data);
        let initdb = as_postgres(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"])
            .args(["--locale", "C", "--pwfile"])
            .arg(&password)
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "{}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let pki = Pki::new(&[SERVER_NAME]);
        for (from, to) in [(&pki.cert, "server.crt"), (&pki.key, "server.key")] {
            let to = data.join(to);
            std::fs::copy(from, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            own(&to);
        }
        let port = free_port();
        let conf = data.join("postgresql.conf");
        let mut settings = std::fs::read_to_string(&conf).unwrap();
        settings.push_str(&format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sock}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\n",
            sock = data.display(),
        ));
        std::fs::write(&conf, settings).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        let server = Spawned(
            as_postgres(&bin, "postgres")
                .arg("-D")
                .arg(&data)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "postgres never listened"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(Self {
            port,
            pki,
            dir,
            _server: server,
        })
    }
}

/// `psql -c sql` through the listener on `port`.
pub fn psql(port: u16, sql: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .env("PGPASSWORD", PASSWORD)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            USER,
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .output()
        .unwrap()
}

pub fn psql_ok(port: u16, sql: &str) -> String {
    let out = psql(port, sql);
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A `tokio-postgres` session through the listener on `port`: the extended protocol.
pub async fn driver(port: u16) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .code()
        .map(|c| c.code().to_owned())
        .unwrap_or_default()
}

/// A database, the proxy (its own process, so that its output can be read) with three
/// database tunnels to it, and the employees.
pub struct Rig {
    pub setup: Setup,
    pub employees: Employees,
    _db: Postgres,
    pub https: u16,
    pub config: std::path::PathBuf,
    pub said: Arc<Mutex<Vec<String>>>,
    /// The CA of the pg2 tunnel, which did not sign the database's certificate.
    _stranger: Pki,
    pub proxy: Spawned,
}

impl Rig {
    pub async fn start() -> Option<Self> {
        let db = Postgres::start()?;
        let setup = Setup::new().await;
        let employees = Employees::new();
        let stranger = Pki::new(&[SERVER_NAME]);
        let tunnel = |target: &str, port: u16, ca: &std::path::Path, extra: &str| {
            format!(
                "[[tunnels]]\nhost = \"{GATEWAY}\"\ntarget = \"{target}\"\nport = {port}\n\
                 upstream = \"pg\"\nallow = [\"alice\", \"group:ops\"]\nprotocol = \"postgres\"\n\
                 tls_ca = \"{ca}\"\nserver_name = \"{SERVER_NAME}\"\n{extra}",
                ca = ca.display(),
            )
        };
        let toml = setup.toml(&format!(
            "{gateway}[upstreams.pg]\nenvironment = \"test\"\naddrs = [\"127.0.0.1:{port}\"]\n{rw}{ro}{wrong}",
            gateway = gateway_toml(&setup, &employees, 666),
            port = db.port,
            rw = tunnel("pg1", 5432, &db.pki.ca_pem, ""),
            ro = tunnel(
                "pg1",
                5433,
                &db.pki.ca_pem,
                "read_only = true\nallow_write = [\"group:ops\"]\nlog_reads = true\n"
            ),
            wrong = tunnel("pg2", 5432, &stranger.ca_pem, ""),
        ));
        let https = free_port();
        let config = super::ConfigToml::parse(&toml)
            .set("listen.https", format!("127.0.0.1:{https}"))
            .set("server.allow_root", true);
        let file = setup.pki.dir.path().join("postgres.toml");
        std::fs::write(&file, config.text()).unwrap();
        let said = Arc::new(Mutex::new(Vec::new()));
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.args(["run", "-c", file.to_str().unwrap()]);
        let proxy = super::spawn_until_listening_keeping(command, said.clone());
        Some(Self {
            setup,
            employees,
            _db: db,
            https,
            config: file,
            said,
            _stranger: stranger,
            proxy,
        })
    }

    /// `portcullis connect --listen` for `person` to `target`; its port and what it says.
    pub fn listen(&self, person: &str, target: &str) -> (Spawned, u16, Arc<Mutex<Vec<String>>>) {
        let (cert, key) = self.employees.person_files(person, 40);
        let port = free_port();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["connect", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--gateway", &format!("127.0.0.1:{}", self.https)])
            .args(["--server-name", GATEWAY, "--cert", cert.to_str().unwrap()])
            .args(["--key", key.to_str().unwrap(), "--ca"])
            .arg(&self.setup.pki.ca_pem)
            .arg(target);
        let said = Arc::new(Mutex::new(Vec::new()));
        let child = super::spawn_until_listening_keeping(command, said.clone());
        (child, port, said)
    }

    /// The audit trail's lines of `event`, once there are at least `count` of them.
    pub async fn audit_lines(&self, event: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let lines: Vec<Value> = self
                .setup
                .audit()
                .into_iter()
                .filter(|l| l["event"] == event)
                .collect();
            if lines.len() >= count || tokio::time::Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Everything the proxy and the listeners wrote: log files and their own output.
    pub fn everything_written(&self, listeners: &[&Arc<Mutex<Vec<String>>>]) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.setup.log_dir()).unwrap().flatten() {
            all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        all.push_str(&self.said.lock().unwrap().join("\n"));
        for said in listeners {
            all.push_str(&said.lock().unwrap().join("\n"));
        }
        all
    }
}
