//! Archives an attacker could plant in the backup store, restored as an operator would: each
//! refused whole, nothing written. age does not say who encrypted an archive (anyone with the
//! public recipient can), so these are sealed to the operator's own recipient.

mod support;

use std::path::{Path, PathBuf};

/// A planted archive: honest but for one member, encrypted to the operator's recipient (age
/// does not say who encrypted: anyone with the public recipient can).
struct Planted {
    root: tempfile::TempDir,
    recipient: age::x25519::Identity,
}

/// A config that names one certificate and key under `/srv/pcl`, and a log directory there.
const CONFIG: &str = "environment = \"t\"\n[listen]\nhttps = \"127.0.0.1:0\"\n\
    [[tls.certificates]]\ncert = \"/srv/pcl/cert.pem\"\nkey = \"/srv/pcl/key.pem\"\n\
    [log]\ndir = \"/srv/pcl/logs\"\n";

#[allow(deprecated)]
impl Planted {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
            recipient: age::x25519::Identity::generate(),
        }
    }

    fn identity(&self) -> PathBuf {
        let path = self.root.path().join("key.txt");
        use age::secrecy::ExposeSecret;
        std::fs::write(&path, self.recipient.to_string().expose_secret()).unwrap();
        path
    }

    /// A tar.gz of the config, then `members` (name, type, bytes), sealed to the recipient.
    fn archive(&self, config: &str, members: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
        self.archive_owned_by("root", config, members)
    }

    /// [`Planted::archive`], every member owned by `user`.
    fn archive_owned_by(
        &self,
        user: &str,
        config: &str,
        members: &[(&[u8], tar::EntryType, &[u8])],
    ) -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mut add = |name: &[u8], kind: tar::EntryType, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            // Written into the field by hand: the tar crate refuses to make these names.
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_entry_type(kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("/etc/shadow").unwrap();
            }
            header.set_uid(0);
            header.set_gid(0);
            header.set_username(user).unwrap();
            header.set_groupname("root").unwrap();
            header.set_cksum();
            tar.append(&header, data).unwrap();
        };
        add(
            b"srv/pcl/portcullis.toml",
            tar::EntryType::Regular,
            config.as_bytes(),
        );
        for (name, kind, data) in members {
            add(name, *kind, data);
        }
        let plain = tar.into_inner().unwrap().finish().unwrap();
        let recipient = self.recipient.to_public();
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut sealed = Vec::new();
        let mut writer = encryptor.wrap_output(&mut sealed).unwrap();
        std::io::Write::write_all(&mut writer, &plain).unwrap();
        writer.finish().unwrap();
        sealed
    }

    /// `restore --to` an empty directory: refused, saying `why`, and nothing written.
    fn refused(&self, sealed: &[u8], why: &str) {
        let archive = self.root.path().join("planted.tar.gz.age");
        std::fs::write(&archive, sealed).unwrap();
        let to = tempfile::tempdir().unwrap();
        let out = self.restore(&archive, to.path(), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "restored: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains(why), "{why:?} not in {stderr}");
        let written: Vec<_> = std::fs::read_dir(to.path()).unwrap().collect();
        assert!(written.is_empty(), "{written:?}");
    }

    /// `portcullis restore ARCHIVE` with this identity, under `to`, with `extra` flags.
    fn restore(&self, archive: &Path, to: &Path, extra: &[&str]) -> std::process::Output {
        let identity = self.identity();
        let mut args = vec![
            "restore",
            archive.to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ];
        args.extend(extra);
        support::portcullis(&args)
    }
}

#[test]
fn planted_archives_are_refused_whole_and_nothing_is_written() {
    let planted = Planted::new();
    let cert: &[u8] = b"srv/pcl/cert.pem";
    let regular = tar::EntryType::Regular;
    // The honest archive restores (under --to): the control.
    let honest = planted.archive(CONFIG, &[(cert, regular, b"pem")]);
    let archive = planted.root.path().join("honest.tar.gz.age");
    std::fs::write(&archive, &honest).unwrap();
    let to = tempfile::tempdir().unwrap();
    let restored = planted.restore(&archive, to.path(), &[]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert_eq!(
        std::fs::read(to.path().join("srv/pcl/cert.pem")).unwrap(),
        b"pem"
    );

    for (member, kind, why) in [
        (
            &b"srv/pcl/../../etc/cron.d/x"[..],
            regular,
            "climbs with ..",
        ),
        (b"/etc/passwd", regular, "is a system file"),
        (
            b"srv/pcl/other.pem",
            regular,
            "is not a place the archive's config names",
        ),
        (
            b"srv/pcl/logs/access-2026-12-01.jsonl",
            regular,
            "is not a place",
        ),
        (cert, tar::EntryType::Symlink, "is a link"),
        (cert, tar::EntryType::Char, "is not a file or a directory"),
    ] {
        planted.refused(
            &planted.archive(CONFIG, &[(cert, regular, b"pem"), (member, kind, b"x")]),
            why,
        );
    }
    // A config that names a system file is no licence to write it.
    let greedy = CONFIG.replace("/srv/pcl/cert.pem", "/etc/passwd");
    planted.refused(
        &planted.archive(
            &greedy,
            &[(b"etc/passwd", regular, b"root::0:0::/:/bin/sh\n")],
        ),
        "is a system file",
    );
    // Cut short, or one byte changed: age's authentication says so before anything is written.
    planted.refused(&honest[..honest.len() - 40], "damaged or was tampered with");
    let mut flipped = honest.clone();
    let middle = flipped.len() - 60;
    flipped[middle] ^= 1;
    planted.refused(&flipped, "damaged or was tampered with");
    // Another identity opens nothing.
    let stranger = Planted::new();
    stranger.refused(&honest, "cannot decrypt");
}

/// The operator's guard rails: `--dry-run` lists and writes nothing, a newer file on disk is
/// not turned back without `--force`, and an owner this machine has no account for stops the
/// restore before anything is written.
#[test]
fn dry_runs_newer_files_and_missing_accounts_write_nothing() {
    let planted = Planted::new();
    let cert: &[u8] = b"srv/pcl/cert.pem";
    let regular = tar::EntryType::Regular;
    let archive = planted.root.path().join("honest.tar.gz.age");
    std::fs::write(
        &archive,
        planted.archive(CONFIG, &[(cert, regular, b"pem")]),
    )
    .unwrap();
    let to = tempfile::tempdir().unwrap();
    let restore = |extra: &[&str]| planted.restore(&archive, to.path(), extra);
    let listed = restore(&["--dry-run"]);
    let said = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{said}");
    let target = to.path().join("srv/pcl/cert.pem");
    assert!(
        said.contains(&format!("create  {}", target.display())),
        "{said}"
    );
    assert!(said.contains("dry run: nothing written"), "{said}");
    assert_eq!(std::fs::read_dir(to.path()).unwrap().count(), 0);

    // Changed on disk since the archive was taken (the archive's copy is from 1970).
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, b"newer").unwrap();
    let refused = restore(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("newer on disk than in the archive"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"newer");
    let forced = restore(&["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"pem");

    let stranger = planted.archive_owned_by("pcl-nobody-here", CONFIG, &[(cert, regular, b"x")]);
    planted.refused(
        &stranger,
        "user \"pcl-nobody-here\" (id 0 where the snapshot was taken) does not exist here",
    );
}
