//! Reading an archive back, before anything is written: decrypted with the operator's age
//! identity, unpacked in memory, and judged whole. A member goes only where the archive's own
//! config names a file or a directory the proxy keeps state in; no `..`, no link, no device,
//! no system file, no account this machine lacks. One refusal refuses the archive: a restore
//! writes all of it or nothing.
//!
//! age does not say who encrypted an archive (anyone with the recipient can), so the config in
//! it is not trusted to name any path it likes: system files are refused whatever it says, and
//! the archive's SHA-256 is printed to compare with the `snapshot` audit line shipped off the
//! machine.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::is_audit_file;
use super::owners::{gid_of, uid_of};
use crate::config::{Config, SYSTEM_ROOTS};

/// The most an archive may unpack to: far above a real instance's state (its audit trail
/// included), far below what would exhaust memory.
const MAX_UNPACKED: u64 = 1 << 30;
/// What age writes first.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";
/// Places no Portcullis config has any business naming.
const SYSTEM: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/root",
    "/sbin",
    "/sys",
    "/usr",
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/pam.d",
    "/etc/security",
    "/etc/systemd",
    "/etc/cron.d",
    "/etc/crontab",
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/profile",
    "/etc/profile.d",
    "/etc/environment",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
];

/// Why an archive is not restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive or the identity could not be read, or a file not written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Encrypted, and no identity given.
    #[error("{} is encrypted: --identity FILE names the age identity of a [snapshots] recipient", .0.display())]
    NeedsIdentity(PathBuf),
    /// age could not open it: the wrong identity, or a damaged header.
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    /// Cut short or changed after it was written: age's or gzip's checks failed.
    #[error("the archive is damaged or was tampered with: {0}")]
    Damaged(String),
    /// Unpacks to more than a real instance holds.
    #[error("the archive unpacks to more than {} MiB", MAX_UNPACKED >> 20)]
    TooLarge,
    /// The first member is not a config this build reads.
    #[error("the first member is not a Portcullis config: {0}")]
    NoConfig(String),
    /// Members that may not be written, each with why.
    #[error("refused, nothing written:\n{}", .0.join("\n"))]
    Refused(Vec<String>),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One member, judged: where it goes, as whom, with what.
#[derive(Debug)]
pub struct Member {
    /// Its absolute path on the machine it came from.
    pub path: PathBuf,
    /// A directory, or a regular file.
    pub dir: bool,
    /// Permission bits (never set-id: a restore makes no privileged program).
    pub mode: u32,
    /// This machine's ids of the recorded owner names; the recorded ids when there were none.
    pub uid: u32,
    /// As `uid`.
    pub gid: u32,
    /// The recorded names, for the listing.
    pub owner: String,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// The file's bytes.
    pub data: Vec<u8>,
}

/// An archive read and judged whole.
#[derive(Debug)]
pub struct Restorable {
    /// The config member's path.
    pub config: PathBuf,
    /// The log directory its config names, for the restore's audit line.
    pub log_dir: PathBuf,
    /// Every member; the config is the first file.
    pub members: Vec<Member>,
}

/// Decrypts (with `identity` when the archive is encrypted), unpacks and judges `archive`.
pub fn read(archive: &Path, identity: Option<&Path>) -> Result<Restorable, RestoreError> {
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let mut input = BufReader::new(file);
    let sealed = input
        .fill_buf()
        .map_err(io(archive))?
        .starts_with(AGE_MAGIC);
    let plain: Box<dyn Read> = if sealed {
        let identity = identity.ok_or_else(|| RestoreError::NeedsIdentity(archive.to_owned()))?;
        let identities = age::IdentityFile::from_file(identity.display().to_string())
            .map_err(io(identity))?
            .into_identities()
            .map_err(|e| RestoreError::Decrypt(e.to_string()))?;
        let decryptor =
            age::Decryptor::new(input).map_err(|e| RestoreError::Decrypt(e.to_string()))?;
        let reader = decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| RestoreError::Decrypt(e.to_string()))?;
        Box::new(reader)
    } else {
        Box::new(input)
    };
    let members = unpack(plain)?;
    judge(members)
}

/// A member as recorded, before judging.
struct Raw {
    path: Result<PathBuf, String>,
    kind: Result<bool, String>,
    header: tar::Header,
    data: Vec<u8>,
}

fn unpack(plain: impl Read) -> Result<Vec<Raw>, RestoreError> {
    let damaged = |e: std::io::Error| RestoreError::Damaged(e.to_string());
    let gzip = flate2::read::GzDecoder::new(plain);
    let mut archive = tar::Archive::new(gzip);
    let mut members = Vec::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular => Ok(false),
            tar::EntryType::Directory => Ok(true),
            tar::EntryType::Symlink | tar::EntryType::Link => Err("is a link".to_owned()),
            other => Err(format!("is not a file or a directory ({other:?})")),
        };
        let path = entry
            .path()
            .map_err(|e| e.to_string())
            .and_then(|p| absolute_member(&p));
        total = total.saturating_add(entry.size());
        if total > MAX_UNPACKED {
            return Err(RestoreError::TooLarge);
        }
        let mut data = Vec::new();
        if kind == Ok(false) {
            entry.read_to_end(&mut data).map_err(damaged)?;
        }
        members.push(Raw {
            path,
            kind,
            header: entry.header().clone(),
            data,
        });
    }
    // Read to the end, so that age checks the last chunk: a cut archive fails here.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(damaged)?;
    Ok(members)
}

/// A member's name as an absolute path: one leading `/` is tar's to drop, `.` is nothing, and
/// `..` is refused, not resolved.
fn absolute_member(name: &Path) -> Result<PathBuf, String> {
    let mut path = PathBuf::from("/");
    for component in name.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => path.push(part),
            Component::ParentDir | Component::Prefix(_) => return Err("climbs with ..".into()),
        }
    }
    if path == Path::new("/") {
        return Err("names no file".into());
    }
    Ok(path)
}

/// Where the archive's config lets members go, and who they belong to here.
fn judge(raw: Vec<Raw>) -> Result<Restorable, RestoreError> {
    // The config is the first file (its directory comes before it).
    let first = raw
        .iter()
        .find(|m| m.kind != Ok(true))
        .ok_or(RestoreError::NoConfig("no file in the archive".into()))?;
    let (config_path, text) = match (&first.path, &first.kind) {
        (Ok(path), Ok(false)) => (path.clone(), String::from_utf8_lossy(&first.data)),
        _ => return Err(RestoreError::NoConfig("not a regular file".into())),
    };
    let config = Config::parse_file(&text, &config_path)
        .and_then(crate::config::Parsed::strict)
        .map_err(|e| RestoreError::NoConfig(e.to_string()))?;
    let named = Config::named_files(&config);
    let mut files: BTreeSet<PathBuf> = (named.read.iter())
        .chain(&named.kept)
        .filter(|f| *f != Path::new(SYSTEM_ROOTS))
        .cloned()
        .collect();
    files.insert(config_path.clone());
    let cache = (config.tls.acme.as_ref())
        .filter(|a| a.store.is_none())
        .map(|a| a.cache_dir.clone());
    let logs = config.log.dir.clone();
    let mut dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_owned))
        .collect();
    dirs.extend(cache.clone());
    dirs.insert(logs.clone());

    let mut refused = Vec::new();
    let mut seen = BTreeSet::new();
    let mut members = Vec::new();
    for member in raw {
        let name = String::from_utf8_lossy(&member.header.path_bytes()).into_owned();
        let (path, dir) = match (member.path, member.kind) {
            (Err(why), _) | (_, Err(why)) => {
                refused.push(format!("  {name}: {why}"));
                continue;
            }
            (Ok(path), Ok(dir)) => (path, dir),
        };
        let allowed = if dir {
            dirs.contains(&path)
        } else {
            files.contains(&path)
                || path.parent().is_some_and(|parent| {
                    cache.as_deref() == Some(parent)
                        || (parent == logs
                            && path
                                .file_name()
                                .is_some_and(|n| is_audit_file(&n.to_string_lossy())))
                })
        };
        let why = if is_system(&path) {
            Some("is a system file no config may name")
        } else if !allowed {
            Some("is not a place the archive's config names")
        } else if !seen.insert(path.clone()) {
            Some("is in the archive twice")
        } else {
            None
        };
        if let Some(why) = why {
            refused.push(format!("  /{}: {why}", name.trim_start_matches('/')));
            continue;
        }
        match owner(&member.header) {
            Ok((uid, gid, owner)) => members.push(Member {
                mode: member.header.mode().unwrap_or(0o600) & 0o777,
                mtime: member.header.mtime().unwrap_or(0),
                path,
                dir,
                uid,
                gid,
                owner,
                data: member.data,
            }),
            Err(why) => refused.push(format!("  {}: {why}", path.display())),
        }
    }
    if !refused.is_empty() {
        return Err(RestoreError::Refused(refused));
    }
    Ok(Restorable {
        config: config_path,
        log_dir: logs,
        members,
    })
}

fn is_system(path: &Path) -> bool {
    SYSTEM.iter().any(|system| path.starts_with(system))
}

/// This machine's ids for the recorded owner names, or why there are none.
fn owner(header: &tar::Header) -> Result<(u32, u32, String), String> {
    let recorded = |id: std::io::Result<u64>| id.ok().and_then(|id| u32::try_from(id).ok());
    let (uid, gid) = (recorded(header.uid()), recorded(header.gid()));
    let user = header.username().ok().flatten().filter(|n| !n.is_empty());
    let group = header.groupname().ok().flatten().filter(|n| !n.is_empty());
    let missing = |kind: &str, name: &str, id: Option<u32>| {
        format!(
            "{kind} {name:?} (id {} where the snapshot was taken) does not exist here: create it, then restore again",
            id.map_or("?".to_owned(), |id| id.to_string())
        )
    };
    let uid = match user {
        Some(name) => uid_of(name).ok_or_else(|| missing("user", name, uid))?,
        None => uid.ok_or("records no owner")?,
    };
    let gid = match group {
        Some(name) => gid_of(name).ok_or_else(|| missing("group", name, gid))?,
        None => gid.ok_or("records no group")?,
    };
    let name = |name: Option<&str>, id: u32| name.map_or(id.to_string(), str::to_owned);
    Ok((
        uid,
        gid,
        format!("{}:{}", name(user, uid), name(group, gid)),
    ))
}
