//! Files written by `portcullis employees`: whole or not at all (a temporary file renamed over
//! the old one, so the proxy never reads half a CRL or half a config), with the mode and owner
//! the reader needs.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::EmployeesError;

/// Who a written file belongs to: the service account for what the proxy reads, else whoever
/// runs the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owner {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// Writes `path` only if nothing is there: a CA key or a person's TOTP secret is never
/// overwritten by mistake.
pub(super) fn create(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> Result<(), EmployeesError> {
    let io = |source| EmployeesError::io(path, source);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => EmployeesError::Exists(path.to_owned()),
            _ => io(source),
        })?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    chown(path, owner)
}

/// Replaces `path` (or creates it) atomically, with `mode` and `owner`.
pub(super) fn replace(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> Result<(), EmployeesError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = path.with_file_name(format!(".{file_name}.{}.partial", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    create(&partial, contents, mode, owner)?;
    std::fs::rename(&partial, path).map_err(|source| {
        let _ = std::fs::remove_file(&partial);
        EmployeesError::io(path, source)
    })
}

/// Replaces `path`, keeping its mode and owner: the config, which only the operator edits.
pub(super) fn replace_keeping(path: &Path, contents: &[u8]) -> Result<(), EmployeesError> {
    let metadata = std::fs::metadata(path).map_err(|source| EmployeesError::io(path, source))?;
    let owner = Owner {
        uid: metadata.uid(),
        gid: metadata.gid(),
    };
    replace(path, contents, metadata.mode() & 0o7777, Some(owner))
}

/// A directory for a person's files, private when it is new.
pub(super) fn private_dir(dir: &Path) -> Result<(), EmployeesError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| EmployeesError::io(dir, source))
}

fn chown(path: &Path, owner: Option<Owner>) -> Result<(), EmployeesError> {
    let Some(owner) = owner else {
        return Ok(());
    };
    let metadata = std::fs::metadata(path).map_err(|source| EmployeesError::io(path, source))?;
    if metadata.uid() == owner.uid && metadata.gid() == owner.gid {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
        .map_err(|source| EmployeesError::io(path, source))
}
