//! Backups that restore, tried as an operator would. The drill: an instance running as its own
//! account, with file certificates, an employee CA, a CRL and a TOTP secret, snapshotted
//! encrypted to an age recipient; its whole state deleted; its account made again with another
//! uid; one `portcullis restore --identity`; and the instance starts, serves the same
//! certificate, lets the same employee in with the same second factor, and its audit trail goes
//! on. Archives an attacker could plant are in `restore_attacks.rs`.
//!
//! The drill needs root (accounts, owners); CI runs as root.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use http_body_util::Full;
use support::employees::{Employees, client, gateway_toml};
use support::{ConfigToml, Setup, request};

/// A system account of the test's own, deleted when dropped.
struct Account {
    name: String,
    uid: u32,
}

impl Account {
    fn create(name: &str, uid: Option<u32>) -> Self {
        let mut useradd = Command::new("useradd");
        useradd.args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if let Some(uid) = uid {
            useradd.args(["--uid", &uid.to_string()]);
        }
        assert!(
            useradd.arg(name).status().unwrap().success(),
            "useradd {name}"
        );
        let user = nix::unistd::User::from_name(name).unwrap().unwrap();
        Self {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
        }
    }

    fn delete(&self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.delete();
    }
}

fn chown_tree(dir: &Path, account: &Account) {
    let status = Command::new("chown")
        .args(["-R", &format!("{0}:{0}", account.name)])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// An age identity file and its recipient, from Debian's `age-keygen`, as an operator makes them.
fn age_key(dir: &Path) -> Option<(PathBuf, String)> {
    if !support::require_tool("age-keygen") {
        return None;
    }
    let identity = dir.join("backup-key.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    let recipient = said
        .split_whitespace()
        .find(|w| w.starts_with("age1"))?
        .to_owned();
    Some((identity, recipient))
}

fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_machine_comes_back_from_one_restore() {
    if !support::as_root("accounts and owners need root") {
        return;
    }
    let offline = tempfile::tempdir().unwrap();
    let Some((identity, recipient)) = age_key(offline.path()) else {
        return;
    };
    let name = format!("pcl-{}", fastrand::u32(10_000..99_999));
    let account = Account::create(&name, None);
    let setup = Setup::new().await;
    let employees = Employees::new();
    let backups = tempfile::tempdir().unwrap();
    let https = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let text = ConfigToml::parse(&setup.toml(&gateway_toml(&setup, &employees, 666)))
        .set("listen.https", https.to_string())
        .set("listen.http", format!("127.0.0.1:{}", support::free_port()))
        .set("server.user", name.as_str())
        .set("snapshots.dir", backups.path().display().to_string())
        .set(
            "snapshots.recipients",
            toml::Value::Array(vec![recipient.into()]),
        )
        .text();
    let file = setup.pki.dir.path().join("portcullis.toml");
    std::fs::write(&file, text).unwrap();
    let state = [setup.pki.dir.path(), employees.dir.path()];
    for dir in state {
        chown_tree(dir, &account);
    }
    chown_tree(backups.path(), &account);
    std::fs::set_permissions(backups.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = file.to_str().unwrap();
    // Twice: the second archive holds the first one's audit line.
    ok(&support::portcullis(&["snapshot", "-c", config]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let said = ok(&support::portcullis(&["snapshot", "-c", config]));
    let archive = PathBuf::from(said.split_whitespace().next().unwrap());
    assert!(archive.to_string_lossy().ends_with(".tar.gz.age"), "{said}");
    let audit_before = support::audit_text_in(&setup.log_dir());
    let served_before = std::fs::read(&setup.pki.cert).unwrap();
    // The secret is inside, encrypted: the stock age tool opens it, nothing else does.
    let sealed = std::fs::read(&archive).unwrap();
    assert!(
        !sealed
            .windows(employees.secret.len())
            .any(|w| w == employees.secret.as_bytes())
    );
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | tar -tz",
            identity.display(),
            archive.display()
        ))
        .output()
        .unwrap();
    let listing = ok(&listing);
    let totp = employees.dir.path().join("alice-600.totp");
    let member = totp.to_str().unwrap().trim_start_matches('/');
    assert!(listing.lines().any(|l| l == member), "{listing}");

    // The machine is lost: state gone, the account made again with another uid.
    for dir in state {
        std::fs::remove_dir_all(dir).unwrap();
    }
    let old_uid = account.uid;
    account.delete();
    let account = Account::create(&name, Some(old_uid + 7));
    assert_ne!(account.uid, old_uid);
    // The snapshot directory is the backup store, mounted again for the new account.
    chown_tree(backups.path(), &account);

    let out = support::portcullis(&[
        "restore",
        archive.to_str().unwrap(),
        "--identity",
        identity.to_str().unwrap(),
    ]);
    let said = ok(&out);
    assert!(said.contains(&format!("files judged as {name}")), "{said}");
    assert!(said.contains("next: start the service"), "{said}");
    for path in [&setup.pki.key, &employees.dir.path().join("alice-600.totp")] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.uid(), account.uid, "{}", path.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            path.display()
        );
    }
    assert_eq!(std::fs::read(&setup.pki.cert).unwrap(), served_before);

    // It starts as the account, serves the same certificate, honours the same employee.
    let mut run = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    run.args(["run", "-c", config]);
    let proxy = support::spawn_until_listening(run);
    let plain = client(&setup, None);
    assert_eq!(
        support::status_with(https, "localhost", "/", plain).await,
        Some(200)
    );
    let host = "mfa.corp.test";
    let alice = client(&setup, Some(employees.valid("alice", 1)));
    let mut tls = support::h1_with(https, host, alice).await.unwrap();
    let post = request("POST", host, "/.portcullis/mfa")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(bytes::Bytes::from(format!(
            "code={}&route=mfa.corp.test%2F&return=%2Ftool",
            employees.code(0)
        ))))
        .unwrap();
    tls.ready().await.unwrap();
    let passed = support::collect(tls.send_request(post).await.unwrap()).await;
    assert_eq!(
        passed.status,
        303,
        "the restored TOTP secret: {}",
        passed.text()
    );
    // The restored CRL: the same person with a revoked certificate never gets the form.
    let valid = client(&setup, Some(employees.valid("alice", 2)));
    assert_eq!(
        support::status_with(https, host, "/tool", valid).await,
        Some(401)
    );
    let revoked = client(&setup, Some(employees.valid("alice", 666)));
    assert_ne!(
        support::status_with(https, host, "/tool", revoked).await,
        Some(401)
    );
    drop(proxy);

    // The trail goes on: everything before, then the restore's own line.
    let audit_after = support::audit_text_in(&setup.log_dir());
    let first_snapshot = audit_before.lines().next().unwrap();
    assert!(audit_after.contains(first_snapshot), "{audit_after}");
    assert!(
        audit_after.contains("\"event\":\"restore\""),
        "{audit_after}"
    );
    for entry in std::fs::read_dir(setup.log_dir()).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!(meta.uid(), account.uid, "the service can go on appending");
    }
}
