//! No root after binding. Started as root, the process binds its listeners, then switches to
//! `server.user` for good (supplementary groups cleared, real, effective and saved ids all
//! changed, checked afterwards); started unprivileged with `CAP_NET_BIND_SERVICE`, it gives the
//! capability up once bound. Either way nothing it serves can bind another port, change
//! account or gain privileges through an executable.
//!
//! Runs while the process has one thread: capabilities are per thread, and the runtime's
//! threads must inherit the result rather than keep what was there before.

mod access;

pub use access::{JUDGE_VERB, Judged, answer_probes, judge_files};

use caps::CapSet;
use nix::unistd::{Gid, Uid};

use crate::config::{Privileges, RunAs};

/// Why the process will not serve with the privileges it has.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Root without `server.user` nor `server.allow_root`.
    #[error(
        "started as root and server.user is not set: refusing to serve as root (set server.user to the account to run as, or server.allow_root = true to accept root)"
    )]
    Root,
    /// `server.user` names another account than the one started as, and we are not root.
    #[error(
        "server.user: cannot switch to {user:?} from uid {uid}; start as root, or as {user:?} with CAP_NET_BIND_SERVICE"
    )]
    CannotSwitch {
        /// The configured account.
        user: String,
        /// Who we are.
        uid: u32,
    },
    /// A privilege call failed.
    #[error("{step} failed: {source}")]
    Call {
        /// What was being done.
        step: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The capability sets could not be cleared.
    #[error("clearing capabilities failed: {0}")]
    Capabilities(String),
    /// The switch did not hold.
    #[error("still privileged after switching to {user:?}: {what}")]
    StillPrivileged {
        /// The configured account.
        user: String,
        /// What was found.
        what: String,
    },
}

/// Gives up everything serving does not need; see the module documentation. Whatever the
/// process creates from here on (logs, audit files, snapshots) is its own and private.
pub fn drop_privileges(privileges: &Privileges) -> Result<(), PrivilegeError> {
    let call = |step| move |source| PrivilegeError::Call { step, source };
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    match &privileges.run_as {
        Some(run_as) if Uid::effective().is_root() => switch_to(run_as)?,
        Some(run_as) if Uid::current().as_raw() != run_as.uid => {
            return Err(PrivilegeError::CannotSwitch {
                user: run_as.user.clone(),
                uid: Uid::current().as_raw(),
            });
        }
        Some(_) => {}
        None if Uid::effective().is_root() => {
            if privileges.allow_root {
                return Ok(());
            }
            return Err(PrivilegeError::Root);
        }
        None => {}
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| PrivilegeError::Capabilities(e.to_string()))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(call("no_new_privs"))?;
    Ok(())
}

fn switch_to(run_as: &RunAs) -> Result<(), PrivilegeError> {
    let call = |step| move |source| PrivilegeError::Call { step, source };
    let (uid, gid) = (Uid::from_raw(run_as.uid), Gid::from_raw(run_as.gid));
    // Groups first: once the uid changes, the right to change them is gone.
    nix::unistd::setgroups(&[]).map_err(call("setgroups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(call("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(call("setresuid"))?;
    let still = |what: String| PrivilegeError::StillPrivileged {
        user: run_as.user.clone(),
        what,
    };
    let uids = nix::unistd::getresuid().map_err(call("getresuid"))?;
    let gids = nix::unistd::getresgid().map_err(call("getresgid"))?;
    if [uids.real, uids.effective, uids.saved] != [uid; 3]
        || [gids.real, gids.effective, gids.saved] != [gid; 3]
    {
        return Err(still(format!("uids {uids:?}, gids {gids:?}")));
    }
    let groups = nix::unistd::getgroups().map_err(call("getgroups"))?;
    if groups.iter().any(|g| *g != gid) {
        return Err(still(format!("supplementary groups {groups:?}")));
    }
    if nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err(still("could switch back to root".into()));
    }
    Ok(())
}
