//! The grants of approved access requests, as the gateway admits on them: read from the
//! requests file when it changes, and ended by the clock. They outlive reloads (the file is not
//! the config); the server looks at the file once a second and, when what is admitted changed,
//! has open tunnels judged again, so one opened under a grant is cut when the grant ends.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::access_requests::{AccessRequest, ActiveGrant, RequestsFile};
use crate::audit::{Audit, AuditRecord, Timestamp};

/// See the module documentation.
#[derive(Debug)]
pub struct AccessGrants {
    active: ArcSwap<Vec<ActiveGrant>>,
    loaded: Mutex<Loaded>,
    audit: Arc<Audit>,
}

/// What was read last, and which ends were written to the audit trail.
#[derive(Debug, Default)]
struct Loaded {
    path: Option<PathBuf>,
    stamp: Option<Stamp>,
    file: RequestsFile,
    ended: BTreeSet<u64>,
}

/// Enough of a file's metadata to tell that it was replaced or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self {
            inode: metadata.ino(),
            len: metadata.len(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        })
    }
}

impl AccessGrants {
    /// No grant yet; ends are written to `audit`.
    pub fn new(audit: Arc<Audit>) -> Self {
        Self {
            active: ArcSwap::from_pointee(Vec::new()),
            loaded: Mutex::new(Loaded::default()),
            audit,
        }
    }

    /// The grant that admits `user` on the route named `route` at `now`, if one runs.
    pub fn admitting(&self, user: &str, route: &str, now: SystemTime) -> Option<ActiveGrant> {
        self.active
            .load()
            .iter()
            .find(|g| g.user == user && g.route == route && now < g.until)
            .cloned()
    }

    /// Reads `path` (the requests file of the configuration in service; `None` without a
    /// gateway) again if it changed, and ends the grants whose time is up: true when what is
    /// admitted changed. A file that cannot be used grants nothing.
    pub fn refresh(&self, path: Option<&Path>, now: SystemTime) -> bool {
        let Ok(mut loaded) = self.loaded.lock() else {
            return false;
        };
        let stamp = path.and_then(Stamp::of);
        if loaded.path.as_deref() != path || loaded.stamp != stamp {
            loaded.file = match path.map(RequestsFile::read).transpose() {
                Ok(file) => file.unwrap_or_default(),
                Err(error) => {
                    tracing::error!(%error, "access requests not read: no access on request is granted");
                    RequestsFile::default()
                }
            };
            loaded.path = path.map(Path::to_owned);
            loaded.stamp = stamp;
        }
        let active = loaded.file.active(now);
        let before = self.active.load_full();
        for ended in before.iter().filter(|g| g.until <= now) {
            if loaded.ended.insert(ended.id) {
                self.expired(ended, &loaded.file.requests);
            }
        }
        if *before == active {
            return false;
        }
        self.active.store(Arc::new(active));
        true
    }

    /// The audit line of a grant whose time is up.
    fn expired(&self, grant: &ActiveGrant, requests: &[AccessRequest]) {
        let target = requests
            .iter()
            .find(|r| r.id == grant.id)
            .map_or_else(|| grant.route.clone(), |r| r.target.to_string());
        self.audit.record(AuditRecord::AccessRequest {
            ts: Timestamp::now(),
            action: "expired".into(),
            id: grant.id,
            user: grant.user.clone(),
            target,
            until: Some(Timestamp(grant.until)),
            by: "-".into(),
            reason: String::new(),
            operator: "-".into(),
        });
    }
}
