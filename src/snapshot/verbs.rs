//! `portcullis restore`: an archive back onto this machine, judged whole before a byte is
//! written, listed, written with its modes and this machine's owners, and audited. `main`
//! then runs `check` on the restored config, as the account that will run it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::apply::{destination, newer_on_disk, write};
use super::restore::{RestoreError, read};
use crate::audit::{Audit, AuditRecord, Timestamp};

/// `portcullis restore`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreOptions {
    /// The archive: `portcullis-*.tar.gz.age` (or a plain `.tar.gz`).
    pub archive: PathBuf,
    /// The age identity file of one of `[snapshots] recipients` (as `age-keygen` writes it).
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Write under this directory instead of `/` (to look before restoring in place).
    #[arg(long)]
    pub to: Option<PathBuf>,
    /// Judge and list what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace files on disk that are newer than the archive's.
    #[arg(long)]
    pub force: bool,
}

/// What a restore did.
#[derive(Debug)]
pub enum Restored {
    /// `--dry-run`: judged and listed.
    Listed,
    /// Written.
    Written {
        /// The restored config, where it now is.
        config: PathBuf,
        /// How many files.
        files: usize,
    },
}

/// Why a restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum RestoreVerbError {
    /// The archive was refused or could not be written.
    #[error(transparent)]
    Archive(#[from] RestoreError),
    /// Files on disk are newer than the archive's copies.
    #[error(
        "newer on disk than in the archive (--force replaces them):\n{}",
        .0.iter().map(|p| format!("  {}", p.display())).collect::<Vec<_>>().join("\n")
    )]
    Newer(Vec<PathBuf>),
}

/// Reads, judges, lists and (unless `--dry-run`) writes the archive.
pub fn restore(options: &RestoreOptions) -> Result<Restored, RestoreVerbError> {
    let sha256 = super::archive::sha256_of(&options.archive).map_err(|e| match e {
        super::SnapshotError::Io { path, source } => RestoreError::Io { path, source },
        other => RestoreError::Damaged(other.to_string()),
    })?;
    println!("{}", options.archive.display());
    println!("  sha256 {sha256} (compare with the archive's `snapshot` audit line)");
    let restorable = read(&options.archive, options.identity.as_deref())?;
    let root = options.to.as_deref().unwrap_or(Path::new("/"));
    for member in &restorable.members {
        let path = destination(root, &member.path);
        let what = match (member.dir, path.exists()) {
            (true, _) => "dir    ",
            (false, true) => "replace",
            (false, false) => "create ",
        };
        println!(
            "  {what} {} {:04o} {} {} bytes",
            path.display(),
            member.mode,
            member.owner,
            member.data.len()
        );
    }
    if options.dry_run {
        println!("dry run: nothing written");
        return Ok(Restored::Listed);
    }
    let newer = newer_on_disk(root, &restorable.members);
    if !newer.is_empty() && !options.force {
        return Err(RestoreVerbError::Newer(newer));
    }
    let files = write(root, &restorable.members)?;
    audit(
        &destination(root, &restorable.log_dir),
        &options.archive,
        sha256,
        files,
    );
    Ok(Restored::Written {
        config: destination(root, &restorable.config),
        files,
    })
}

/// The restore's line in the trail it restored, in a file the service can go on appending to.
fn audit(logs: &Path, archive: &Path, sha256: String, files: usize) {
    let settings = crate::config::LogSettings {
        dir: Some(logs.to_owned()),
        ..crate::config::LogSettings::default()
    };
    let Ok(audit) = Audit::new(&settings) else {
        eprintln!("warning: cannot open the audit trail in {}", logs.display());
        return;
    };
    audit.record(AuditRecord::Restore {
        ts: Timestamp::now(),
        archive: archive.display().to_string(),
        sha256,
        files: files as u64,
    });
    audit.close();
    // Run as root, the line's file is root's: hand it to the directory's owner, the service.
    let Ok(dir) = std::fs::metadata(logs) else {
        return;
    };
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let ours = entry
            .metadata()
            .is_ok_and(|m| m.uid() != dir.uid() && m.uid() == nix::unistd::geteuid().as_raw());
        if ours && super::is_audit_file(&name.to_string_lossy()) {
            let _ = std::os::unix::fs::chown(entry.path(), Some(dir.uid()), Some(dir.gid()));
        }
    }
}
