//! A tunnel's lines in the audit trail: its open and close lines, and what ended it.

use serde::{Deserialize, Serialize};

use super::{Audit, AuditRecord, Decision, Timestamp};

/// One tunnel's two lines in the audit trail: [`open`](Self::open) writes the first, and the
/// close line is written when the tunnel ends, or when this is dropped without a close (the
/// client went away before the tunnel was set up).
#[derive(Debug)]
pub struct TunnelAudit {
    audit: std::sync::Arc<Audit>,
    id: String,
    user: String,
    tunnel: String,
    opened: std::time::Instant,
    closed: Option<(ClosedBy, u64, u64)>,
    /// Whether a second factor was passed to open it.
    pub second_factor: bool,
}

impl TunnelAudit {
    /// Writes the open line of a tunnel the gateway admitted, named by its request's id;
    /// `second_factor` when a code or a second-factor session admitted it.
    pub fn open(
        audit: std::sync::Arc<Audit>,
        id: String,
        (user, fingerprint): (&str, &[u8]),
        tunnel: &str,
        reason: &str,
        second_factor: bool,
    ) -> Self {
        audit.record(AuditRecord::TunnelOpened {
            ts: Timestamp::now(),
            id: id.clone(),
            user: user.to_owned(),
            fingerprint: hex::encode(fingerprint),
            tunnel: tunnel.to_owned(),
            decision: Decision::Allowed,
            reason: reason.to_owned(),
        });
        Self {
            audit,
            id,
            user: user.to_owned(),
            tunnel: tunnel.to_owned(),
            opened: std::time::Instant::now(),
            closed: None,
            second_factor,
        }
    }

    /// Writes the close line: who ended the tunnel and the bytes each way.
    pub fn close(mut self, by: ClosedBy, bytes_from_client: u64, bytes_to_client: u64) {
        self.closed = Some((by, bytes_from_client, bytes_to_client));
    }
}

impl Drop for TunnelAudit {
    fn drop(&mut self) {
        let (closed_by, bytes_from_client, bytes_to_client) =
            self.closed.unwrap_or((ClosedBy::Client, 0, 0));
        self.audit.record(AuditRecord::TunnelClosed {
            ts: Timestamp::now(),
            id: std::mem::take(&mut self.id),
            user: std::mem::take(&mut self.user),
            tunnel: std::mem::take(&mut self.tunnel),
            duration_ms: u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_from_client,
            bytes_to_client,
            closed_by,
        });
    }
}

impl TunnelAudit {
    /// The open line's id, which the tunnel's other lines carry.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The certificate's user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The tunnel's name.
    pub fn tunnel(&self) -> &str {
        &self.tunnel
    }

    /// Writes another line of this tunnel's.
    pub fn record(&self, record: AuditRecord) {
        self.audit.record(record);
    }
}

/// What ended a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// The client closed its side first, or went away.
    Client,
    /// The target closed its side first.
    Upstream,
    /// The target could not be reached: the tunnel never carried a byte.
    UpstreamFailed,
    /// No byte either way for the tunnel's `idle_timeout`.
    IdleTimeout,
    /// The proxy shut down and its grace period ended.
    Shutdown,
    /// A reload no longer trusts the client certificate (revoked, CA removed).
    Revoked,
    /// The client certificate, or a revocation list it depends on, is past its time.
    Expired,
    /// Not opened: its user had `max_tunnels_per_user` open, or no connection permit was left.
    OverLimit,
    /// A reload changed the tunnel's upstream, or now asks for a second factor it was opened
    /// without.
    Reconfigured,
    /// A reload removed the tunnel, or the user's grant on it, or the access request it was
    /// opened under is no longer approved.
    GrantRemoved,
    /// The access request it was opened under reached its end.
    GrantExpired,
    /// A message broke the tunnel's protocol or its limits (`protocol = "postgres"`).
    Malformed,
}
