//! Problems with how the process itself runs: the account it switches to, what that account
//! can do with the files the config names, and the snapshots of its state.

use std::path::PathBuf;

/// A problem with `[server]`'s account, its access to the files, or `[snapshots]`.
#[derive(Debug, thiserror::Error)]
pub enum ProcessProblem {
    /// `allow_root`: legal, and worth a second look.
    #[error(
        "the proxy keeps root after start-up, so a flaw in it is a flaw with root's powers: set server.user instead"
    )]
    AllowRoot,
    /// `group` without `user`.
    #[error("needs server.user: the group is only switched to together with the user")]
    GroupWithoutUser,
    /// A user or group that is root.
    #[error("{0:?} is root: name an unprivileged one to run as")]
    RootAccount(String),
    /// An account this system does not have.
    #[error("{0:?} is not a user or group on this system")]
    UnknownAccount(String),
    /// A user whose primary group is root, with no `group` to use instead.
    #[error("{0:?}'s primary group is root: set server.group to an unprivileged group")]
    RootGroup(String),
    /// A snapshot tier kept outside the policy's range.
    #[error("{value} {unit} is outside the backup policy of {min} to {max} {unit}")]
    SnapshotRetention {
        /// Configured.
        value: u32,
        /// Days, weeks or months.
        unit: &'static str,
        /// The policy's least.
        min: u32,
        /// The policy's most.
        max: u32,
    },
    /// Not an age X25519 recipient.
    #[error("{0:?} is not an age recipient (age1... or age1pq1..., as age-keygen prints it)")]
    AgeRecipient(String),
    /// Post-quantum and X25519 recipients together.
    #[error(
        "post-quantum (age1pq1...) and X25519 (age1...) recipients cannot be mixed: an archive is only as safe as its weakest recipient"
    )]
    MixedRecipients,
    /// Snapshots without recipients leave out what a restore needs.
    #[error(
        "not set: archives leave out keys, certificates and secrets, so one cannot restore a working instance alone (set an age recipient whose identity is kept offline)"
    )]
    SnapshotsIncomplete,
    /// A built-in schedule that would leave the 6-hourly tier empty.
    #[error("must be between 1m and 6h: the finest tier keeps one snapshot per 6 hours")]
    SnapshotEvery,
    /// The account the proxy runs as cannot do with a path what the proxy will.
    #[error("server.user {user:?} cannot {need} {}: {source}", path.display())]
    AccountAccess {
        /// `server.user`.
        user: String,
        /// "read", "write".
        need: &'static str,
        /// The path, or the existing directory a missing one would be made in.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}
