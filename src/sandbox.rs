//! Only the files it needs: once bound and switched to its account, the process restricts
//! itself with Landlock to reading the config and the files it names and writing its log,
//! audit, ACME cache and snapshot directories. No new TCP port can be bound and no process
//! outside the sandbox signalled. Restrictions only ever tighten, so reload works within
//! this set; widening it takes a restart.
//!
//! Rules are on directories, not files: certificate renewal (certbot, cert-manager) replaces
//! files by rename, and a rule on a file holds its old inode. Both the named directory and the
//! one a symbolic link resolves to are allowed. Landlock binds the calling thread and the
//! threads it starts, so this runs before the runtime exists.

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};

use crate::config::FileAccess;

/// What name resolution and dynamic loading read: glibc's resolver files, the account
/// database (every reload checks `server.user` again) and the NSS modules it loads on first use.
const SYSTEM_READS: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/ld.so.cache",
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
];

/// The newest rights this build knows; older kernels enforce what they have.
const ABI_USED: ABI = ABI::V6;

/// How far the restriction went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    /// Every right asked for is enforced.
    Full,
    /// The kernel enforces only some (an older Landlock ABI).
    Partial,
    /// This kernel has no Landlock: file access is not restricted.
    Unavailable,
}

/// Why the restriction could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel refused a rule.
    #[error("Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// A directory to be written could not be made.
    #[error("cannot create {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Creates the directories the process writes (a rule needs them to exist), then
/// [`restrict`]s, and says how far that went.
pub fn confine(access: &FileAccess, config_path: &Path) -> Result<Sandbox, SandboxError> {
    for dir in &access.write {
        crate::secrets::create_private_dir(dir).map_err(|source| SandboxError::Dir {
            path: dir.clone(),
            source,
        })?;
    }
    // The main thread's stack bounds come from /proc/self/maps, which the sandbox hides:
    // learnt now, stacker (the SQL parser's stack guard, `postgres/guard.rs`) knows them after.
    let _ = stacker::remaining_stack();
    let sandbox = restrict(access, config_path)?;
    match sandbox {
        Sandbox::Full => {
            tracing::info!("Landlock: file access restricted to what the config names")
        }
        Sandbox::Partial => {
            tracing::info!("Landlock: file access partly restricted (older kernel ABI)")
        }
        Sandbox::Unavailable => {
            tracing::warn!(
                "Landlock is not available on this kernel: file access is not restricted"
            )
        }
    }
    Ok(sandbox)
}

/// Restricts this thread and all it starts to `access` plus the config file's directory.
fn restrict(access: &FileAccess, config_path: &Path) -> Result<Sandbox, SandboxError> {
    let read_dirs: Vec<PathBuf> = std::iter::once(config_path)
        .chain(access.read.iter().chain(&access.kept).map(PathBuf::as_path))
        .flat_map(directories_of)
        .chain(resolver_dir())
        .collect();
    let fs = AccessFs::from_all(ABI_USED);
    let status = Ruleset::default()
        .handle_access(fs)?
        .handle_access(AccessNet::BindTcp)?
        .scope(Scope::Signal)?
        .create()?
        .add_rules(path_beneath_rules(
            SYSTEM_READS,
            AccessFs::from_read(ABI_USED),
        ))?
        .add_rules(path_beneath_rules(
            &read_dirs,
            AccessFs::from_read(ABI_USED),
        ))?
        .add_rules(path_beneath_rules(&access.write, fs))?
        .restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Sandbox::Full,
        RulesetStatus::PartiallyEnforced => Sandbox::Partial,
        RulesetStatus::NotEnforced => Sandbox::Unavailable,
    })
}

/// True when this kernel offers Landlock (for `check`).
pub fn available() -> bool {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|ruleset| ruleset.create())
        .is_ok()
}

/// Where `/etc/resolv.conf` really lives when it is a link (systemd-resolved, NetworkManager):
/// those rewrite it by rename, which a rule on the file itself would not follow.
fn resolver_dir() -> Option<PathBuf> {
    let resolved = std::fs::canonicalize("/etc/resolv.conf").ok()?;
    resolved
        .parent()
        .filter(|dir| *dir != Path::new("/etc"))
        .map(Path::to_owned)
}

/// The directory holding `file` as named, and the one holding what it resolves to.
fn directories_of(file: &Path) -> Vec<PathBuf> {
    let parent = |path: &Path| match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(file)];
    if let Ok(resolved) = std::fs::canonicalize(file) {
        dirs.push(parent(&resolved));
    }
    dirs
}
