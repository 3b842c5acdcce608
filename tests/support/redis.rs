//! Redis for the shared-state tests: a real `redis-server` (plain or TLS) on a free loopback
//! port, a fake one that speaks RESP and lies, and the gateway config, form post and tunnel
//! `CONNECT` those tests share.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use portcullis::Running;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::employees::{Employees, gateway_toml};
use super::{Answer, Setup, WAIT, free_port, request};

pub const HOST: &str = "mfa.corp.test";

/// A real Redis on a free loopback port, stopped on drop.
pub struct Redis {
    pub port: u16,
    pub password: String,
    child: Child,
}

impl Redis {
    /// `None` (test skipped) when `redis-server` is not installed outside CI.
    pub fn start() -> Option<Self> {
        super::require_tool("redis-server").then(|| Self::on(free_port(), password()))
    }

    /// A plain Redis on `port`.
    pub fn on(port: u16, password: String) -> Self {
        Self::spawn(port, password, &["--port", &port.to_string()])
    }

    /// A Redis that speaks TLS only, with `cert` and `key`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Option<Self> {
        if !super::require_tool("redis-server") {
            return None;
        }
        let port = free_port();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let listen = ["--port", "0", "--tls-port", &port.to_string()];
        let tls = ["--tls-cert-file", cert, "--tls-key-file", key];
        let args = [&listen[..], &tls, &["--tls-auth-clients", "no"]].concat();
        Some(Self::spawn(port, password(), &args))
    }

    fn spawn(port: u16, password: String, listen: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", &password])
            .args(listen)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            password,
            child,
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every key in the store, one per line, as `redis-cli --scan` lists them.
    pub fn keys(&self) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "-a", &self.password])
            .args(["--no-auth-warning", "--scan"])
            .output()
            .expect("redis-cli comes with redis-server");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn password() -> String {
    format!("pw-{}", std::process::id())
}

/// Whatever answers on the store's address: RESP, with every command answered the way that
/// opens the most doors (`EVALSHA`: "passed", `EXISTS`: 1, `GET`: `get_answer`). Remembers the
/// commands it was sent. [`FakeRedis::answering`] says what scripts answer.
pub struct FakeRedis {
    pub port: u16,
    pub commands: Arc<Mutex<Vec<String>>>,
}

impl FakeRedis {
    pub async fn start(get_answer: &'static str) -> Self {
        Self::answering("*3\r\n:0\r\n:0\r\n:0\r\n", get_answer).await
    }

    /// Scripts (`EVALSHA`, `EVAL`) answered `eval_answer`, raw RESP.
    pub async fn answering(eval_answer: &'static str, get_answer: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let seen = commands.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    while let Some(command) = read_command(&mut stream).await {
                        let name = command.first().cloned().unwrap_or_default().to_uppercase();
                        let answer = match name.as_str() {
                            "EVALSHA" | "EVAL" => eval_answer.to_owned(),
                            "EXISTS" => ":1\r\n".to_owned(),
                            "GET" => format!("${}\r\n{get_answer}\r\n", get_answer.len()),
                            _ => "+OK\r\n".to_owned(),
                        };
                        seen.lock().unwrap().push(name);
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, commands }
    }

    pub fn seen(&self, command: &str) -> bool {
        self.commands.lock().unwrap().iter().any(|c| c == command)
    }
}

/// One RESP array of bulk strings (what clients send), at most 64 parts of 64 KiB.
async fn read_command<R: tokio::io::AsyncBufRead + Unpin>(stream: &mut R) -> Option<Vec<String>> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let parts: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut command = Vec::new();
    for _ in 0..parts.min(64) {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut bulk = vec![0; len.min(65536) + 2];
        stream.read_exact(&mut bulk).await.ok()?;
        bulk.truncate(len);
        command.push(String::from_utf8_lossy(&bulk).into_owned());
    }
    Some(command)
}

/// A file only its owner can read.
pub fn private_file(employees: &Employees, name: &str, contents: &str) -> PathBuf {
    let path = employees.dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The gateway config of the gateway tests, with `[shared]` (and the Redis upstream) as given.
pub fn toml(setup: &Setup, employees: &Employees, shared: &str) -> String {
    setup.toml(&format!("{}{shared}", gateway_toml(setup, employees, 666)))
}

/// [`redis_shared`] with a shared session key as well.
pub fn redis_shared_keyed(employees: &Employees, port: u16, password: &str) -> String {
    let key = private_file(employees, "session.key", &"k3y-material-".repeat(4));
    format!(
        "{}session_key_file = \"{}\"\n",
        redis_shared(employees, port, "mfa-store", password),
        key.display()
    )
}

/// `[shared]` with Redis on `port` as `redis` (`mfa-store` or a URL of it) and `password`.
pub fn redis_shared(employees: &Employees, port: u16, redis: &str, password: &str) -> String {
    let file = private_file(employees, &format!("redis-{password}.pw"), password);
    format!(
        "[upstreams.mfa-store]\nenvironment = \"test\"\naddrs = [\"127.0.0.1:{port}\"]\n\
         [shared]\nredis = \"{redis}\"\nredis_password_file = \"{}\"\n",
        file.display()
    )
}

/// A `vault:2222` tunnel for alice alone, with a second factor, to `target`.
pub fn vault_tunnel(target: std::net::SocketAddr) -> String {
    format!(
        "[upstreams.vault]\nenvironment = \"test\"\naddrs = [\"{target}\"]\n\
         [[tunnels]]\nhost = \"gw.corp.test\"\ntarget = \"vault\"\nport = 2222\nupstream = \"vault\"\nallow = [\"alice\"]\nmfa = true\n",
    )
}

/// Posts `code` to `proxy`'s MFA form as alice.
pub async fn post_code(proxy: &Running, alice: &Arc<rustls::ClientConfig>, code: &str) -> Answer {
    let mut alice = super::h1_with(proxy.https_addr, HOST, alice.clone())
        .await
        .unwrap();
    let form = request("POST", HOST, "/.portcullis/mfa")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "code={code}&route=mfa.corp.test%2F&return=%2Ftool"
        ))))
        .unwrap();
    alice.ready().await.unwrap();
    super::collect(alice.send_request(form).await.unwrap()).await
}

/// The status of alice's `CONNECT vault:2222` on `proxy`, with a code header if given.
pub async fn open_vault(
    proxy: &Running,
    alice: &Arc<rustls::ClientConfig>,
    code: Option<&str>,
) -> u16 {
    let mut tls = super::tls_connect(proxy.https_addr, "gw.corp.test", alice.clone())
        .await
        .unwrap();
    let code = code
        .map(|c| format!("Portcullis-OTP: {c}\r\n"))
        .unwrap_or_default();
    let head = format!("CONNECT vault:2222 HTTP/1.1\r\nHost: vault:2222\r\n{code}\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut status = [0u8; 12];
    tokio::time::timeout(WAIT, tls.read_exact(&mut status))
        .await
        .expect("an answer in time")
        .unwrap();
    super::status_of(&String::from_utf8_lossy(&status)).unwrap_or(0)
}
