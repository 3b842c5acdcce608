//! A real PostgreSQL (Debian's `postgresql`) started for one test: its own cluster in a temp
//! directory, run as the `postgres` account (it refuses root) on a loopback port, TLS on with a
//! certificate from the test PKI for `pg1.db.test`, and only `hostssl` with SCRAM in
//! `pg_hba.conf`: a session that did not come over TLS with the password is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Pki, Spawned, WAIT, free_port};

/// The cluster's superuser and its password.
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-password-1";
/// The name on the database's certificate.
pub const SERVER_NAME: &str = "pg1.db.test";

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
