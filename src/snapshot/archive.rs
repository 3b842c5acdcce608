//! Writing one archive: a gzip'd tar, encrypted to the recipients when there are any, written
//! under a temporary name, synced, then renamed, so that a crash never leaves half an archive
//! under a snapshot's name.

use std::collections::BTreeSet;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::name::archive_name;
use super::owners::Names;
use super::{SnapshotError, Sources, Taken, io};

/// Writes one archive of `sources` into `dir`, named by `now`.
pub fn take(sources: &Sources, dir: &Path, now: SystemTime) -> Result<Taken, SnapshotError> {
    crate::secrets::create_private_dir(dir).map_err(io(dir))?;
    let name = archive_name(now, !sources.recipients.is_empty())?;
    let archive = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io(&partial))?;
    let written = encrypted(sources, file, &partial).and_then(|(file, members)| {
        file.sync_all().map_err(io(&partial))?;
        Ok(members)
    });
    let members = match written {
        Ok(members) => members,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &archive).map_err(io(&archive))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    let bytes = std::fs::metadata(&archive).map_err(io(&archive))?.len();
    let sha256 = sha256_of(&archive)?;
    Ok(Taken {
        archive,
        members,
        bytes,
        sha256,
    })
}

/// The archive, through age when there are recipients.
fn encrypted(
    sources: &Sources,
    file: File,
    partial: &Path,
) -> Result<(File, Vec<String>), SnapshotError> {
    if sources.recipients.is_empty() {
        return write_archive(sources, file);
    }
    let recipients = sources.recipients.iter().map(|r| r.as_dyn());
    let encryptor = age::Encryptor::with_recipients(recipients)
        .map_err(|e| SnapshotError::Encrypt(e.to_string()))?;
    let sealed = encryptor.wrap_output(file).map_err(io(partial))?;
    let (sealed, members) = write_archive(sources, sealed)?;
    Ok((sealed.finish().map_err(io(partial))?, members))
}

fn write_archive<W: Write>(sources: &Sources, out: W) -> Result<(W, Vec<String>), SnapshotError> {
    let gzip = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = Tar {
        builder: tar::Builder::new(gzip),
        names: Names::default(),
        members: Vec::new(),
        dirs: BTreeSet::new(),
    };
    // The config first: a restore reads it to learn where everything else may go. Named by the
    // operator, and often a link (a config map, /etc/alternatives): followed.
    tar.file(&sources.config, false)?;
    for file in &sources.files {
        // Optional files (the access requests, the register) may not be there yet.
        if file.exists() {
            tar.file(file, false)?;
        }
    }
    if let Some(cache) = &sources.acme_cache {
        tar.dir(cache, |_| true, false)?;
    }
    if let Some(logs) = &sources.log_dir {
        tar.dir(logs, super::is_audit_file, true)?;
    }
    let gzip = tar.builder.into_inner().map_err(io(&sources.config))?;
    let out = gzip.finish().map_err(io(&sources.config))?;
    Ok((out, tar.members))
}

struct Tar<W: Write> {
    builder: tar::Builder<W>,
    names: Names,
    members: Vec<String>,
    /// Directories already recorded.
    dirs: BTreeSet<PathBuf>,
}

impl<W: Write> Tar<W> {
    /// A file the config names, with its directory first (a restore makes it with its mode and
    /// owner: `/etc/portcullis` is root:portcullis 0750, not whatever `mkdir` would make).
    fn file(&mut self, path: &Path, whole_lines: bool) -> Result<(), SnapshotError> {
        let path = absolute(path);
        if let Some(parent) = path.parent().filter(|p| *p != Path::new("/")) {
            self.directory(parent)?;
        }
        let file = File::open(&path).map_err(io(&path))?;
        self.add(file, &path, whole_lines)
    }

    fn directory(&mut self, dir: &Path) -> Result<(), SnapshotError> {
        if !self.dirs.insert(dir.to_owned()) {
            return Ok(());
        }
        let meta = std::fs::metadata(dir).map_err(io(dir))?;
        let mut header = self.header(&meta);
        header.set_size(0);
        self.builder
            .append_data(&mut header, member_name(dir), std::io::empty())
            .map_err(io(dir))
    }

    /// `dir` and the regular files in it that `wanted` names. Entries are opened without
    /// following links: a link planted in a log directory must not carry another file (say
    /// `/etc/shadow`, when the snapshot runs as root) into an archive.
    fn dir(
        &mut self,
        dir: &Path,
        wanted: impl Fn(&str) -> bool,
        whole_lines: bool,
    ) -> Result<(), SnapshotError> {
        if !dir.is_dir() {
            return Ok(());
        }
        let dir = absolute(dir);
        self.directory(&dir)?;
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| wanted(name))
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&path)
                .map_err(io(&path))?;
            self.add(file, &path, whole_lines)?;
        }
        Ok(())
    }

    fn add(&mut self, mut file: File, path: &Path, whole_lines: bool) -> Result<(), SnapshotError> {
        let meta = file.metadata().map_err(io(path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(path))?;
        if whole_lines {
            let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            bytes.truncate(complete);
        }
        let mut header = self.header(&meta);
        header.set_size(bytes.len() as u64);
        let name = member_name(path);
        self.builder
            .append_data(&mut header, &name, bytes.as_slice())
            .map_err(io(path))?;
        self.members.push(name);
        Ok(())
    }

    /// Mode, ids, time, and the names of the ids, which a restore maps to this machine's.
    fn header(&mut self, meta: &Metadata) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_metadata(meta);
        if let Some(user) = self.names.user(meta.uid()) {
            // A name longer than the field (32 bytes) stays out; the restore then says so.
            let _ = header.set_username(user);
        }
        if let Some(group) = self.names.group(meta.gid()) {
            let _ = header.set_groupname(group);
        }
        header
    }
}

/// An absolute path, as the config names it (links not followed: the config reads through
/// them, and a restore must put the file where the config reads it).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The archive's name for an absolute path: without its leading `/`, as tar does.
fn member_name(path: &Path) -> String {
    path.strip_prefix("/").unwrap_or(path).display().to_string()
}

/// The archive's SHA-256, for the audit line: a restore prints it, to be compared with the
/// line shipped off the machine before it was lost.
pub(super) fn sha256_of(path: &Path) -> Result<String, SnapshotError> {
    let mut file = File::open(path).map_err(io(path))?;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).map_err(io(path))?;
        if read == 0 {
            return Ok(hex::encode(context.finish()));
        }
        context.update(&buffer[..read]);
    }
}
