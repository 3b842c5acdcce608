//! ACME's shared store for the tests: a real S3-compatible server (moto) with one bucket, and
//! instances run as the real binary sharing it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ConfigToml, Setup, free_port};

/// The base config with a route and `[tls.acme]` for acme.test, HTTPS on `port`.
pub fn acme_config(setup: &Setup, port: u16, directory: &str, cache: &Path) -> ConfigToml {
    setup
        .config()
        .merge(&format!(
            "[[routes]]\nhost = \"acme.test\"\nupstream = \"app\"\n[tls.acme]\ndomains = [\"acme.test\"]\ncontact = [\"mailto:ops@acme.test\"]\ndirectory = \"{directory}\"\ncache_dir = \"{}\"\ndirectory_ca = \"{}\"\n",
            cache.display(),
            setup.pki.ca_pem.display()
        ))
        .set("listen.https", format!("127.0.0.1:{port}"))
}

/// An S3-compatible server (moto), with one bucket, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub const BUCKET: &str = "portcullis-certs";

    pub fn client(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(Self::BUCKET)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_http_connector(portcullis::StoreConnector)
            .build()
            .unwrap()
    }

    /// An object's content.
    pub async fn read(&self, name: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(name);
        let object = self.client().get(&path).await.unwrap();
        object.bytes().await.unwrap().to_vec()
    }

    /// The names of the objects in the bucket.
    pub async fn objects(&self) -> Vec<String> {
        use futures_util::StreamExt;
        use object_store::ObjectStore;
        let mut names: Vec<String> = self
            .client()
            .list(None)
            .map(|meta| meta.unwrap().location.to_string())
            .collect()
            .await;
        names.sort();
        names
    }

    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            if let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let put = format!(
                    "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    Self::BUCKET
                );
                let mut answer = String::new();
                if tcp.write_all(put.as_bytes()).is_ok() && tcp.read_to_string(&mut answer).is_ok()
                {
                    break answer;
                }
            }
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(created.starts_with("HTTP/1.1 200"), "{created}");
        moto
    }
}

/// One instance, run as the real binary with AWS credentials in its environment (moto takes
/// any), its stderr kept.
pub struct Instance {
    pub process: super::Spawned,
    pub stderr: Arc<std::sync::Mutex<Vec<String>>>,
    pub https: SocketAddr,
    pub admin: SocketAddr,
}

impl Instance {
    pub fn start(setup: &Setup, name: &str, https: u16, directory: &str, moto: &Moto) -> Self {
        Self::start_with(setup, name, https, directory, moto, |toml| toml)
    }

    /// As [`start`](Self::start), with `edit` applied to its config last.
    pub fn start_with(
        setup: &Setup,
        name: &str,
        https: u16,
        directory: &str,
        moto: &Moto,
        edit: impl FnOnce(ConfigToml) -> ConfigToml,
    ) -> Self {
        let dir = setup.pki.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let admin = free_port();
        let toml = acme_config(setup, https, directory, &dir.join("unused-cache"))
            .merge(&format!(
                "[tls.acme.store]\nbucket = \"{}\"\nprefix = \"prod/\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nlease = \"2s\"\npoll = \"250ms\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
                Moto::BUCKET,
                moto.endpoint
            ))
            .set("tls.acme.renew_before", "25s")
            .set("log.dir", dir.join("logs").display().to_string())
            .set("server.allow_root", true);
        let toml = edit(toml).text();
        let file = dir.join("portcullis.toml");
        std::fs::write(&file, toml).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["run", "-c"])
            .arg(&file)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("RUST_LOG", "info");
        let stderr = Arc::new(std::sync::Mutex::new(Vec::new()));
        let process = super::spawn_until_listening_keeping(command, stderr.clone());
        Self {
            process,
            stderr,
            https: SocketAddr::from(([127, 0, 0, 1], https)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        }
    }

    pub fn said(&self, what: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(what))
    }

    /// Certificates this instance ordered itself.
    pub async fn orders(&self) -> u64 {
        let metrics = super::raw_tcp(
            self.admin,
            b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .await;
        metrics
            .lines()
            .find(|l| {
                l.starts_with(
                    "portcullis_acme_events_total{kind=\"issued and deployed a new certificate\"}",
                )
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Killed, as a crash would stop it.
    pub fn stop(self) {
        drop(self);
    }

    /// SIGTERM, as a rolling deploy stops it; waits until it has exited.
    pub fn terminate(&mut self) {
        let pid = self.process.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.process.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the instance did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
