//! Writing a judged archive: directories first with their modes and owners, then each file
//! under a temporary name in its own directory, owned, synced and renamed into place (a link
//! already there is replaced, never followed). Nothing is written until the whole archive was
//! judged, and a newer file on disk is not replaced without `--force`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::restore::{Member, RestoreError};

/// Where a member goes: its path under `root` (`/`, or `--to DIR`).
pub fn destination(root: &Path, member: &Path) -> PathBuf {
    root.join(member.strip_prefix("/").unwrap_or(member))
}

/// Files on disk newer than the archive's copy, which a restore would turn back.
pub fn newer_on_disk(root: &Path, members: &[Member]) -> Vec<PathBuf> {
    members
        .iter()
        .filter(|m| !m.dir)
        .filter_map(|m| {
            let on_disk = destination(root, &m.path);
            let modified = std::fs::symlink_metadata(&on_disk).ok()?.mtime();
            (u64::try_from(modified).unwrap_or(0) > m.mtime).then_some(on_disk)
        })
        .collect()
}

/// Writes every member under `root`; returns how many files were written.
pub fn write(root: &Path, members: &[Member]) -> Result<usize, RestoreError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RestoreError::Io { path, source }
    };
    // Owners can be given away by root only; anyone else restores files as their own.
    let chown = nix::unistd::Uid::effective().is_root();
    let mut dirs: Vec<&Member> = members.iter().filter(|m| m.dir).collect();
    dirs.sort_by_key(|m| m.path.components().count());
    for dir in dirs {
        let path = destination(root, &dir.path);
        match std::fs::symlink_metadata(&path) {
            // The operator's link (say /etc/portcullis to a volume) stays as it is.
            Ok(meta) if meta.file_type().is_symlink() => continue,
            Ok(_) => {}
            Err(_) => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&path)
                .map_err(io(&path))?,
        }
        if chown {
            std::os::unix::fs::chown(&path, Some(dir.uid), Some(dir.gid)).map_err(io(&path))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(dir.mode))
            .map_err(io(&path))?;
    }
    let mut written = 0;
    for file in members.iter().filter(|m| !m.dir) {
        let path = destination(root, &file.path);
        let parent = path.parent().unwrap_or(root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io(parent))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let partial = parent.join(format!(".{name}.restore.{}", std::process::id()));
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io(&partial))?;
        let done = (|| {
            out.write_all(&file.data)?;
            if chown {
                std::os::unix::fs::fchown(&out, Some(file.uid), Some(file.gid))?;
            }
            out.set_permissions(std::fs::Permissions::from_mode(file.mode))?;
            out.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(file.mtime))?;
            out.sync_all()?;
            std::fs::rename(&partial, &path)
        })();
        if let Err(source) = done {
            let _ = std::fs::remove_file(&partial);
            return Err(RestoreError::Io { path, source });
        }
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent))?;
        written += 1;
    }
    Ok(written)
}
