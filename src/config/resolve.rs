//! Phase 3: what the config names that only this machine, now, can answer: the accounts of
//! `[server]` and what upstream host names resolve to. It runs on a config that passed the
//! first two phases, so an answer here is never about a value already refused.

use std::net::ToSocketAddrs;

use super::environments::check_reachable;
use super::problems::{Key, Problems};
use super::{Account, Privileges, ProblemKind, ProcessProblem, RunAs, UpstreamConfig};

/// The account to switch to: it exists, and neither it nor its group is root.
pub(super) fn privileges(account: &Account, problems: &mut Problems) -> Privileges {
    let run_as = account.user.as_ref().and_then(|user| {
        let (uid, gid) = lookup(user, account.group.as_deref(), problems)?;
        Some(RunAs {
            user: user.clone(),
            uid,
            gid,
        })
    });
    Privileges {
        run_as,
        allow_root: account.allow_root,
    }
}

/// The uid and gid of `user` (in `group`, or its own primary group).
fn lookup(user: &str, group: Option<&str>, problems: &mut Problems) -> Option<(u32, u32)> {
    let account = match nix::unistd::User::from_name(user) {
        Ok(Some(account)) if account.uid.is_root() => {
            problems.push("server.user", ProcessProblem::RootAccount(user.to_owned()));
            None
        }
        Ok(Some(account)) => Some(account),
        _ => {
            problems.push(
                "server.user",
                ProcessProblem::UnknownAccount(user.to_owned()),
            );
            None
        }
    };
    let gid = match group {
        Some(group) => match nix::unistd::Group::from_name(group) {
            Ok(Some(found)) if found.gid.as_raw() == 0 => {
                problems.push(
                    "server.group",
                    ProcessProblem::RootAccount(group.to_owned()),
                );
                None
            }
            Ok(Some(found)) => Some(found.gid),
            _ => {
                problems.push(
                    "server.group",
                    ProcessProblem::UnknownAccount(group.to_owned()),
                );
                None
            }
        },
        None => match &account {
            Some(account) if account.gid.as_raw() == 0 => {
                problems.push("server.user", ProcessProblem::RootGroup(user.to_owned()));
                None
            }
            account => account.as_ref().map(|a| a.gid),
        },
    };
    Some((account?.uid.as_raw(), gid?.as_raw()))
}

/// What the names among the upstream addresses resolve to now, each answer checked as a
/// literal address is. The connector checks again at every connect; this is the early warning.
pub(super) fn upstreams(upstreams: &[UpstreamConfig], problems: &mut Problems) {
    for upstream in upstreams {
        for (i, addr) in upstream.addrs.iter().enumerate() {
            if addr.ip.is_some() {
                continue;
            }
            let key = Key::new("upstreams")
                .field(&upstream.name)
                .field("addrs")
                .index(i);
            let value = addr.authority.as_str();
            let Ok(resolved) = value.to_socket_addrs() else {
                problems.push(key, ProblemKind::Unresolvable(value.to_owned()));
                continue;
            };
            for ip in resolved.map(|a| a.ip().to_canonical()) {
                let shown = format!("{value} (resolves to {ip})");
                if let Err(kind) = check_reachable(
                    ip,
                    &shown,
                    &upstream.environment,
                    &upstream.networks,
                    &upstream.metadata_endpoints,
                ) {
                    problems.push(key, kind);
                    break;
                }
            }
        }
    }
}
