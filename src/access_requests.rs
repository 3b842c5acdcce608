//! Access on request, for a time: the state file that `portcullis employees request`,
//! `approve` and `deny` write and the gateway re-reads. A request names one person, one
//! internal route or tunnel and a duration; an approval turns it into a grant from the moment
//! of approval until `until`, after which it admits nothing, whatever the file still says.
//!
//! The file is the one source of these grants, so it is read as a privilege: a file that others
//! than its owner could write, or that is not what the CLI writes, grants nothing (fail closed).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::audit::Timestamp;

/// The longest a grant may last: access on request is for a task, not a standing grant.
pub const LONGEST_GRANT: Duration = Duration::from_secs(24 * 3600);
/// Far more than any real list of requests; a larger file is not one.
const MAX_FILE_BYTES: u64 = 4 << 20;
/// Permission bits that let someone but the owner change the file, and so grant themselves.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Every request still kept: pending, approved (running or ended) and denied.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsFile {
    /// In the order they were made.
    #[serde(default)]
    pub requests: Vec<AccessRequest>,
}

/// One request and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// Its number, which `approve` and `deny` name.
    pub id: u64,
    /// Who asks: a configured person.
    pub user: String,
    /// For what.
    pub target: Target,
    /// For how long once approved, in seconds.
    pub seconds: u64,
    /// Why, as the requester wrote it.
    pub reason: String,
    /// When it was made.
    pub requested_at: Timestamp,
    /// The account that ran `request`.
    pub operator: String,
    /// Pending, approved or denied.
    #[serde(flatten)]
    pub state: State,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Waiting for an approver.
    Pending,
    /// A grant from `at` until `until`.
    Approved {
        /// The approver, one of `[gateway] approvers`.
        by: String,
        /// When.
        at: Timestamp,
        /// When the grant ends.
        until: Timestamp,
    },
    /// Refused.
    Denied {
        /// Who refused it.
        by: String,
        /// When.
        at: Timestamp,
    },
}

/// What a request is for: a route or a tunnel, by the name routing gives it (`host/prefix`,
/// `host CONNECT target:port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// An internal web route.
    Route(String),
    /// A `[[tunnels]]` target.
    Tunnel(String),
}

impl Target {
    /// The route's name, as routing and the audit trail give it.
    pub fn route(&self) -> &str {
        match self {
            Self::Route(name) | Self::Tunnel(name) => name,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Route(name) => write!(f, "route {name}"),
            Self::Tunnel(name) => write!(f, "tunnel {name}"),
        }
    }
}

/// An approved request while it runs: what the gateway admits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveGrant {
    /// The request's number.
    pub id: u64,
    /// Who it admits.
    pub user: String,
    /// Where (the route's name).
    pub route: String,
    /// When it ends.
    pub until: SystemTime,
}

/// Why the file grants nothing.
#[derive(Debug, thiserror::Error)]
pub enum RequestsError {
    /// It cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Others than its owner could change it.
    #[error("{} has mode {mode:03o}: only its owner may write it (chmod go-w)", path.display(), mode = mode & 0o777)]
    Writable {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// Larger than any list of requests.
    #[error("{} is larger than {MAX_FILE_BYTES} bytes", .0.display())]
    TooLarge(PathBuf),
    /// Not what `portcullis employees` writes.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl RequestsFile {
    /// The file at `path`; none there is no request at all.
    pub fn read(path: &Path) -> Result<Self, RequestsError> {
        let io = |source| RequestsError::Io {
            path: path.to_owned(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(e)),
        };
        let mode = file.metadata().map_err(io)?.permissions().mode();
        if mode & WRITABLE_BY_OTHERS != 0 {
            return Err(RequestsError::Writable {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(RequestsError::TooLarge(path.to_owned()));
        }
        serde_json::from_str(&text).map_err(|e| RequestsError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The file's text, as written.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The grants running at `now`. A grant longer than [`LONGEST_GRANT`] or starting after
    /// `now` is not one the CLI made, and admits no one.
    pub fn active(&self, now: SystemTime) -> Vec<ActiveGrant> {
        self.requests
            .iter()
            .filter_map(|request| {
                let State::Approved { at, until, .. } = &request.state else {
                    return None;
                };
                let length = until.0.duration_since(at.0).ok()?;
                let running = at.0 <= now && now < until.0 && length <= LONGEST_GRANT;
                running.then(|| ActiveGrant {
                    id: request.id,
                    user: request.user.clone(),
                    route: request.target.route().to_owned(),
                    until: until.0,
                })
            })
            .collect()
    }

    /// The request numbered `id`.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut AccessRequest> {
        self.requests.iter_mut().find(|r| r.id == id)
    }

    /// The number the next request gets.
    pub fn next_id(&self) -> u64 {
        self.requests.iter().map(|r| r.id).max().unwrap_or(0) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approved(id: u64, at: SystemTime, length: Duration) -> AccessRequest {
        AccessRequest {
            id,
            user: "carol".into(),
            target: Target::Tunnel("gw.corp.test CONNECT db1:22".into()),
            seconds: length.as_secs(),
            reason: "migration".into(),
            requested_at: Timestamp(at),
            operator: "root".into(),
            state: State::Approved {
                by: "bob".into(),
                at: Timestamp(at),
                until: Timestamp(at + length),
            },
        }
    }

    #[test]
    fn only_grants_running_now_and_no_longer_than_allowed_admit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hour = Duration::from_secs(3600);
        let file = RequestsFile {
            requests: vec![
                approved(1, now - hour, 2 * hour),
                approved(2, now - 2 * hour, hour),
                approved(3, now + hour, hour),
                approved(4, now - hour, LONGEST_GRANT + hour),
                AccessRequest {
                    state: State::Pending,
                    ..approved(5, now - hour, 2 * hour)
                },
            ],
        };
        let ids: Vec<u64> = file.active(now).iter().map(|g| g.id).collect();
        assert_eq!(ids, [1]);
        assert_eq!(file.next_id(), 6);
        let back: RequestsFile = serde_json::from_str(&file.to_json()).unwrap();
        assert_eq!(back.requests, file.requests);
    }

    #[test]
    fn a_file_others_can_write_or_that_is_not_ours_grants_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access-requests.json");
        assert!(RequestsFile::read(&path).unwrap().requests.is_empty());
        std::fs::write(&path, r#"{"requests":[],"grants":[]}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            RequestsFile::read(&path),
            Err(RequestsError::Invalid { .. })
        ));
        std::fs::write(&path, r#"{"requests":[]}"#).unwrap();
        assert!(RequestsFile::read(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(matches!(
            RequestsFile::read(&path),
            Err(RequestsError::Writable { .. })
        ));
    }
}
