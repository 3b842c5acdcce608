//! Files that hold secrets (TLS private keys, TOTP secrets, the ACME account key) are refused
//! unless only their owner can read them: one stray `chmod 644` would hand them to every local
//! account, and nothing else would notice.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Permission bits that let anyone but the owner in.
const OTHERS: u32 = 0o077;

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Exposure {
    /// Its metadata cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Group or others have some access.
    #[error(
        "{} has mode {mode:03o}: only its owner may have access (chmod {fix:03o})",
        path.display(),
        mode = mode & 0o777,
        fix = mode & 0o700
    )]
    Exposed {
        /// The file or directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

/// `path` (a file, or a directory) gives group and others no access at all.
pub fn require_private(path: &Path) -> Result<(), Exposure> {
    let mode = std::fs::metadata(path)
        .map_err(|source| Exposure::Unreadable {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & OTHERS == 0 {
        Ok(())
    } else {
        Err(Exposure::Exposed {
            path: path.to_owned(),
            mode,
        })
    }
}

/// A directory of secrets and every entry in it are private.
pub fn require_private_dir(dir: &Path) -> Result<(), Exposure> {
    require_private(dir)?;
    let unreadable = |source| Exposure::Unreadable {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        require_private(&entry.map_err(unreadable)?.path())?;
    }
    Ok(())
}

/// Creates `dir` (and missing parents) readable by its owner only; an existing one is left as
/// it is, for the config checks to judge.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"secret").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_owner_only_modes_pass() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400, 0o700] {
            assert!(require_private(&with_mode(dir.path(), "ok", mode)).is_ok());
        }
        for mode in [0o640, 0o604, 0o610, 0o644, 0o601] {
            let path = with_mode(dir.path(), "bad", mode);
            let message = require_private(&path).unwrap_err().to_string();
            assert!(message.contains(&format!("mode {mode:03o}")), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    #[test]
    fn a_private_directory_with_an_exposed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        with_mode(dir.path(), "account", 0o600);
        assert!(require_private_dir(dir.path()).is_ok());
        let exposed = with_mode(dir.path(), "cert", 0o644);
        let message = require_private_dir(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains(&exposed.display().to_string()),
            "{message}"
        );
    }
}
