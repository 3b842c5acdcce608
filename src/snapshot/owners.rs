//! Owners by name. An archive records each member's user and group names beside their ids,
//! because ids are the one thing a rebuilt machine does not keep: the service account made again
//! by `useradd` gets the next free uid. A restore maps the names to this machine's accounts.

use std::collections::HashMap;

use nix::unistd::{Gid, Group, Uid, User};

/// Names of ids, each looked up once per archive.
#[derive(Default)]
pub(super) struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    /// The account name of `uid`, if this machine has one.
    pub(super) fn user(&mut self, uid: u32) -> Option<&str> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .as_deref()
    }

    /// The group name of `gid`, if this machine has one.
    pub(super) fn group(&mut self, gid: u32) -> Option<&str> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                Group::from_gid(Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .as_deref()
    }
}

/// This machine's uid of the account named `name`.
pub(super) fn uid_of(name: &str) -> Option<u32> {
    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
}

/// This machine's gid of the group named `name`.
pub(super) fn gid_of(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}
