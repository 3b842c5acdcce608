//! `request`, `approve`, `deny` and `requests`: access on request, for a time. A request names
//! an enrolled person, one internal route or tunnel of the config, a duration and a reason; one
//! of `[gateway] approvers`, never the person it is for, turns it into a grant that ends by
//! itself; `deny` refuses a pending request or ends a running grant early. The requests file
//! is changed under a lock, whole or not at all, and every verb is an audit line.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::session::Session;
use super::write::{self, Owner};
use super::{EmployeesError, check_name};
use crate::access_requests::{AccessRequest, LONGEST_GRANT, RequestsFile, State, Target};
use crate::audit::{AuditRecord, Timestamp};
use crate::config::raw::RawGateway;
use crate::host::HostPattern;

/// The longest reason kept: a ticket reference and a sentence.
const LONGEST_REASON: usize = 200;
/// Requests decided, or whose grant ended, longer ago than this leave the file (the audit trail
/// keeps them).
const KEPT_AFTER_END: Duration = Duration::from_secs(7 * 86_400);

/// What a request is for, as given on the command line.
pub(super) enum Asked<'a> {
    /// `--route HOST[/PREFIX]`.
    Route(&'a str),
    /// `--tunnel TARGET[:PORT]`.
    Tunnel(&'a str),
}

/// `request NAME --route R|--tunnel T --for D --reason TEXT`.
pub(super) fn request(
    config: &Path,
    name: &str,
    asked: &Asked<'_>,
    length: Duration,
    reason: &str,
) -> Result<(), EmployeesError> {
    check_name(name)?;
    if length.is_zero() || length > LONGEST_GRANT {
        return Err(EmployeesError::GrantLength(length));
    }
    let reason = reason.trim();
    if reason.is_empty()
        || reason.chars().count() > LONGEST_REASON
        || reason.contains(char::is_control)
    {
        return Err(EmployeesError::Reason(LONGEST_REASON));
    }
    let session = Session::open(config)?;
    let gateway = session.gateway()?;
    let Some(person) = gateway.users.get(name) else {
        return Err(EmployeesError::Unknown(name.to_owned()));
    };
    let (target, rules) = resolve(&session, asked)?;
    if rules.allow.iter().any(|g| admits(g, name, &person.groups)) {
        return Err(EmployeesError::AlreadyAllowed(
            name.to_owned(),
            target.to_string(),
        ));
    }
    if rules.mfa && person.totp_secret_file.is_none() {
        return Err(EmployeesError::NoSecondFactor(
            name.to_owned(),
            target.to_string(),
        ));
    }
    let operator = super::session::operator();
    let id = change(&session, |file, now| {
        let id = file.next_id();
        file.requests.push(AccessRequest {
            id,
            user: name.to_owned(),
            target: target.clone(),
            seconds: length.as_secs(),
            reason: reason.to_owned(),
            requested_at: Timestamp(now),
            operator: operator.clone(),
            state: State::Pending,
        });
        Ok(id)
    })?;
    println!(
        "access request {id}: {name} for {target}, {} once approved",
        humantime::format_duration(length)
    );
    println!(
        "approve it with: portcullis employees approve {id} --by APPROVER (one of [gateway] approvers: {})",
        gateway.approvers.join(", ")
    );
    session.audit_record(|operator| AuditRecord::AccessRequest {
        ts: Timestamp::now(),
        action: "requested".into(),
        id,
        user: name.to_owned(),
        target: target.to_string(),
        until: None,
        by: "-".into(),
        reason: reason.to_owned(),
        operator,
    })
}

/// `approve ID --by APPROVER`.
pub(super) fn approve(config: &Path, id: u64, by: &str) -> Result<(), EmployeesError> {
    let session = Session::open(config)?;
    let gateway = session.gateway()?;
    check_approver(gateway, by)?;
    let approved = change(&session, |file, now| {
        let request = file.get_mut(id).ok_or(EmployeesError::NoRequest(id))?;
        if request.user == by {
            return Err(EmployeesError::SelfApproval(by.to_owned()));
        }
        if request.state != State::Pending {
            return Err(EmployeesError::Decided(id));
        }
        let until = now + Duration::from_secs(request.seconds);
        request.state = State::Approved {
            by: by.to_owned(),
            at: Timestamp(now),
            until: Timestamp(until),
        };
        Ok((request.clone(), until))
    })?;
    let (request, until) = approved;
    println!(
        "access request {id} approved: {} may use {} until {}",
        request.user,
        request.target,
        Timestamp(until)
    );
    session.audit_record(|operator| AuditRecord::AccessRequest {
        ts: Timestamp::now(),
        action: "approved".into(),
        id,
        user: request.user,
        target: request.target.to_string(),
        until: Some(Timestamp(until)),
        by: by.to_owned(),
        reason: String::new(),
        operator,
    })
}

/// `deny ID [--by APPROVER]`: refuses a pending request, or ends a running grant now.
pub(super) fn deny(config: &Path, id: u64, by: Option<&str>) -> Result<(), EmployeesError> {
    let session = Session::open(config)?;
    let gateway = session.gateway()?;
    if let Some(by) = by {
        check_approver(gateway, by)?;
    }
    let by = by.unwrap_or("-").to_owned();
    let request = change(&session, |file, now| {
        let request = file.get_mut(id).ok_or(EmployeesError::NoRequest(id))?;
        let running = matches!(&request.state, State::Approved { until, .. } if now < until.0);
        if request.state != State::Pending && !running {
            return Err(EmployeesError::Decided(id));
        }
        request.state = State::Denied {
            by: by.clone(),
            at: Timestamp(now),
        };
        Ok(request.clone())
    })?;
    println!(
        "access request {id} denied: {} may not use {}",
        request.user, request.target
    );
    session.audit_record(|operator| AuditRecord::AccessRequest {
        ts: Timestamp::now(),
        action: "denied".into(),
        id,
        user: request.user,
        target: request.target.to_string(),
        until: None,
        by,
        reason: String::new(),
        operator,
    })
}

/// `requests [--json]`: every request kept, and what became of it.
pub(super) fn list(config: &Path, json: bool) -> Result<(), EmployeesError> {
    let session = Session::open(config)?;
    let path = session.gateway()?.requests_file();
    let file = RequestsFile::read(&path).map_err(|e| EmployeesError::Requests(e.to_string()))?;
    if json {
        print!("{}", file.to_json());
        return Ok(());
    }
    let now = SystemTime::now();
    println!(
        "{:>4}  {:<12} {:<24} {:<40} reason",
        "id", "user", "state", "for"
    );
    for request in &file.requests {
        let state = match &request.state {
            State::Pending => "pending".to_owned(),
            State::Approved { by, until, .. } if now < until.0 => format!(
                "granted by {by} until {}",
                until
                    .0
                    .duration_since(now)
                    .map(
                        |d| humantime::format_duration(Duration::from_secs(d.as_secs()))
                            .to_string()
                    )
                    .unwrap_or_default()
            ),
            State::Approved { by, .. } => format!("ended (by {by})"),
            State::Denied { by, .. } => format!("denied by {by}"),
        };
        println!(
            "{:>4}  {:<12} {:<24} {:<40} {}",
            request.id, request.user, state, request.target, request.reason
        );
    }
    Ok(())
}

/// The access rules a request is judged against.
struct Rules {
    allow: Vec<String>,
    mfa: bool,
}

/// The internal route or tunnel `asked` names, by the name routing gives it.
fn resolve(session: &Session, asked: &Asked<'_>) -> Result<(Target, Rules), EmployeesError> {
    let host =
        |raw: &str| HostPattern::parse(raw).map_or_else(|_| raw.to_owned(), |h| h.to_string());
    let mut found: Vec<(Target, Rules)> = Vec::new();
    let mut known = Vec::new();
    match asked {
        Asked::Route(given) => {
            for route in session.raw.routes.iter().filter(|r| r.internal) {
                let host = host(&route.host);
                let name = format!("{host}{}", route.path_prefix);
                if *given == name || *given == host {
                    found.push((
                        Target::Route(name.clone()),
                        Rules {
                            allow: route.allow.clone(),
                            mfa: route.mfa,
                        },
                    ));
                }
                known.push(name);
            }
        }
        Asked::Tunnel(given) => {
            for tunnel in &session.raw.tunnels {
                let target = tunnel.target.to_ascii_lowercase();
                let name = format!("{} CONNECT {target}:{}", host(&tunnel.host), tunnel.port);
                let authority = format!("{target}:{}", tunnel.port);
                if given.eq_ignore_ascii_case(&authority) || given.eq_ignore_ascii_case(&target) {
                    found.push((
                        Target::Tunnel(name),
                        Rules {
                            allow: tunnel.allow.clone(),
                            mfa: tunnel.mfa,
                        },
                    ));
                }
                known.push(authority);
            }
        }
    }
    let given = match asked {
        Asked::Route(given) | Asked::Tunnel(given) => (*given).to_owned(),
    };
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(EmployeesError::NoSuchTarget { given, known }),
        _ => Err(EmployeesError::AmbiguousTarget {
            given,
            matches: found.iter().map(|(t, _)| t.to_string()).collect(),
        }),
    }
}

/// `by` is a configured person that `[gateway] approvers` names, or a group of theirs.
fn check_approver(gateway: &RawGateway, by: &str) -> Result<(), EmployeesError> {
    let approver = gateway.users.get(by);
    let approves = approver.is_some_and(|person| {
        gateway
            .approvers
            .iter()
            .any(|entry| admits(entry, by, &person.groups))
    });
    if approves {
        Ok(())
    } else {
        Err(EmployeesError::NotApprover(by.to_owned()))
    }
}

/// Whether an `allow`-style entry (`alice`, `group:ops`) names `user` with `groups`.
fn admits(entry: &str, user: &str, groups: &[String]) -> bool {
    match entry.strip_prefix("group:") {
        Some(group) => groups.iter().any(|g| g == group),
        None => entry == user,
    }
}

/// Changes the requests file under its lock: read, `edit`, drop what ended long ago, written
/// whole. Nothing is written when `edit` refuses.
fn change<T>(
    session: &Session,
    edit: impl FnOnce(&mut RequestsFile, SystemTime) -> Result<T, EmployeesError>,
) -> Result<T, EmployeesError> {
    let path = session.gateway()?.requests_file();
    let _lock = lock(&path)?;
    let mut file =
        RequestsFile::read(&path).map_err(|e| EmployeesError::Requests(e.to_string()))?;
    let now = SystemTime::now();
    let done = edit(&mut file, now)?;
    file.requests.retain(|r| now < ended(r) + KEPT_AFTER_END);
    let (mode, owner) = readable_by_service(session);
    write::replace(&path, file.to_json().as_bytes(), mode, owner)?;
    Ok(done)
}

/// When a request stopped mattering: its grant's end, its denial, or (pending) its making.
fn ended(request: &AccessRequest) -> SystemTime {
    match &request.state {
        State::Pending => request.requested_at.0,
        State::Approved { until, .. } => until.0,
        State::Denied { at, .. } => at.0,
    }
}

/// The proxy reads the file and must never write it: root's, readable by the service's group,
/// when run as root; else the caller's alone.
fn readable_by_service(session: &Session) -> (u32, Option<Owner>) {
    match session.service_owner() {
        Some(service) => (
            0o640,
            Some(Owner {
                uid: 0,
                gid: service.gid,
            }),
        ),
        None => (0o600, None),
    }
}

/// An exclusive lock beside the file, held while it is read and replaced.
fn lock(path: &Path) -> Result<File, EmployeesError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lock_path: PathBuf = path.with_file_name(format!(".{name}.lock"));
    let io = |source| EmployeesError::io(&lock_path, source);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}
