//! The lines of the audit trail, as they are written and read back (`access-report`).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::database::{DbSession, DbStatement};
pub use super::tunnel::ClosedBy;

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditRecord {
    /// A decision on an internal route that admitted someone or judged a second factor.
    Access {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The certificate's user.
        user: String,
        /// The route's name.
        route: String,
        /// Request method.
        method: String,
        /// Masked path, no query.
        path: String,
        /// What was decided.
        decision: Decision,
        /// Why.
        reason: String,
        /// The request's `X-Request-Id`, as in its access-log line; `-` when it has none.
        #[serde(default)]
        request_id: String,
    },
    /// Requests refused on an internal route within one minute, for one user and reason.
    Denied {
        /// The first refusal of the minute, RFC 3339 UTC.
        ts: Timestamp,
        /// The certificate's user, `-` without one.
        user: String,
        /// The route's name.
        route: String,
        /// Why.
        reason: String,
        /// How many.
        count: u64,
    },
    /// A tunnel the gateway opened: who, with which certificate, to what, and why.
    TunnelOpened {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The `CONNECT` request's id: joins this line to the tunnel's close line and to the
        /// request's access-log line.
        id: String,
        /// The certificate's user.
        user: String,
        /// SHA-256 of the client certificate, hex.
        fingerprint: String,
        /// The tunnel's name (`host CONNECT target:port`).
        tunnel: String,
        /// Always `allowed`: refusals are counted as [`AuditRecord::Denied`] lines.
        decision: Decision,
        /// Why.
        reason: String,
    },
    /// The end of a tunnel opened by a [`AuditRecord::TunnelOpened`] line with the same `id`.
    TunnelClosed {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The open line's `id`.
        id: String,
        /// The certificate's user.
        user: String,
        /// The tunnel's name.
        tunnel: String,
        /// From the open decision to the close.
        duration_ms: u64,
        /// Bytes the client sent to the target.
        bytes_from_client: u64,
        /// Bytes the target sent to the client.
        bytes_to_client: u64,
        /// Who or what ended it.
        closed_by: ClosedBy,
    },
    /// A statement that changed, or may have changed, a database through a tunnel.
    DbStatement(DbStatement),
    /// The end of a database session through a tunnel: what it read, changed and was refused.
    DbSession(DbSession),
    /// A configuration load or reload.
    Config {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// What caused the load.
        trigger: Trigger,
        /// Whether it went into service.
        outcome: Outcome,
        /// SHA-256 of the file in service before.
        old_digest: String,
        /// SHA-256 of the file read.
        new_digest: String,
    },
    /// A snapshot of the proxy's own state was written.
    Snapshot {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The archive's path.
        archive: String,
        /// How many files it holds.
        files: u64,
        /// Its size.
        bytes: u64,
        /// Its SHA-256: a restore prints the archive's, to compare with this line.
        sha256: String,
        /// Encrypted to `[snapshots] recipients`, and complete.
        encrypted: bool,
    },
    /// An archive the backup policy no longer keeps was deleted.
    SnapshotPruned {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The archive's path.
        archive: String,
    },
    /// Retention deleted nothing because the clock disagrees with what is on disk (see
    /// `crate::daily::ClockDoubt`): said once per doubt, by the audit trail's own sweep and by
    /// each snapshot prune.
    RetentionHeld {
        /// RFC 3339 UTC, by the doubted clock.
        ts: Timestamp,
        /// What was not pruned: `audit` files or `snapshots`.
        kind: String,
        /// Why.
        reason: String,
        /// The newest item, which the clock disagrees with.
        newest: String,
    },
    /// Something in the snapshot directory named like an archive is not a regular file:
    /// pruning leaves it alone.
    SnapshotSkipped {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// Its path.
        path: String,
    },
    /// `portcullis restore` wrote an archive back.
    Restore {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The archive's path.
        archive: String,
        /// Its SHA-256.
        sha256: String,
        /// How many files were written.
        files: u64,
    },
    /// A snapshot could not be written or pruned.
    SnapshotFailed {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// Why.
        reason: String,
    },
    /// `portcullis employees` made or used the employee CA: who ran it, what, for whom.
    Enrolment {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The verb: `init`, `add`, `renew`, `revoke`, `refresh_crl`, `list`.
        action: String,
        /// The employee it concerns; `-` for the CA as a whole.
        user: String,
        /// The certificate issued or revoked, hex; `-` when none.
        serial: String,
        /// The account that ran it (`SUDO_USER` when run through sudo).
        operator: String,
    },
    /// An access request made, approved or denied, or a grant whose time is up.
    AccessRequest {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// `requested`, `approved`, `denied` or `expired`.
        action: String,
        /// The request's number.
        id: u64,
        /// Who it is for.
        user: String,
        /// The route or tunnel (`tunnel gw.example.com CONNECT db1:5432`).
        target: String,
        /// When the grant ends, once approved.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Timestamp>,
        /// The approver who approved or denied it; `-` otherwise.
        by: String,
        /// Why it was asked for, on the `requested` line.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
        /// The account that ran the command (`SUDO_USER` through sudo); `-` for the proxy.
        operator: String,
    },
    /// An ACME order for the instance's names, issued or failed.
    AcmeOrder {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The names ordered.
        domains: Vec<String>,
        /// `single` (this instance's cache) or `store` (the lease holder of the shared store).
        mode: String,
        /// How it ended.
        outcome: AcmeOutcome,
        /// Why it failed, as the proxy says it; empty when issued.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        error: String,
        /// The CA's problem document, when it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        problem: Option<AcmeProblem>,
    },
    /// A request to the admin listener.
    Admin {
        /// RFC 3339 UTC.
        ts: Timestamp,
        /// The employee, over mutual TLS; `-` on loopback.
        #[serde(default)]
        user: String,
        /// Request method.
        method: String,
        /// Endpoint.
        path: String,
        /// Status answered.
        status: u16,
        /// Requests alike in this minute (from the first one's `ts`); 1 in lines written
        /// before admin requests were aggregated.
        #[serde(default = "one")]
        count: u64,
    },
}

fn one() -> u64 {
    1
}

/// An ACME problem document (RFC 8555 6.7), as the CA wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeProblem {
    /// `urn:ietf:params:acme:error:...`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The CA's explanation.
    #[serde(default)]
    pub detail: String,
    /// Per identifier, for an order refused for some of its names (RFC 8555 6.7.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subproblems: Vec<AcmeSubproblem>,
}

/// One identifier's part of a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeSubproblem {
    /// `urn:ietf:params:acme:error:...`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The CA's explanation.
    #[serde(default)]
    pub detail: String,
    /// The name it concerns.
    #[serde(default)]
    pub identifier: Option<AcmeIdentifier>,
}

/// An ACME identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeIdentifier {
    /// `dns`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The name.
    #[serde(default)]
    pub value: String,
}

/// How an ACME order ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcmeOutcome {
    /// A certificate was issued and put in service (or in the store).
    Issued,
    /// The order failed; it is tried again after a pause.
    Failed,
}

/// A decision on an internal route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The request was let through.
    Allowed,
    /// A correct TOTP code opened an MFA session.
    MfaPassed,
    /// A wrong, expired or replayed code.
    MfaFailed,
    /// Too many wrong codes: the user is locked out for a while.
    MfaLocked,
}

/// What caused a configuration load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The process started.
    Startup,
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin listener.
    Admin,
}

/// Whether a loaded configuration went into service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It serves.
    Applied,
    /// It was invalid; the previous one serves on.
    Refused,
}

/// A moment as audit lines write it: RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_rfc3339_millis(self.0).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_unknown_decisions_are_not_read() {
        let line = r#"{"event":"access","ts":"2026-12-02T04:15:00.123Z","user":"alice","route":"tools/","method":"GET","path":"/","decision":"mfa_passed","reason":"r","request_id":"01a236e9-1b51-7fa1-adcc-62c8e671eab8"}"#;
        let record: AuditRecord = serde_json::from_str(line).unwrap();
        let AuditRecord::Access { ts, decision, .. } = &record else {
            panic!("{record:?}");
        };
        assert_eq!(*decision, Decision::MfaPassed);
        assert_eq!(ts.to_string(), "2026-12-02T04:15:00.123Z");
        assert_eq!(serde_json::to_string(&record).unwrap(), line);
        let typo = line.replace("mfa_passed", "allowd");
        assert!(serde_json::from_str::<AuditRecord>(&typo).is_err());
    }
}
