//! `[[tunnels]] protocol = "postgres"`: the gateway speaks PostgreSQL's wire protocol (v3) on
//! both sides of a tunnel instead of relaying its bytes, so that every statement that changes
//! a database is an audit line with who sent it, and a read-only tunnel refuses those before
//! they reach the database.
//!
//! The database is reached over TLS verified against the tunnel's `tls_ca`; the client side
//! is already inside the employee's mutual TLS to the gateway. Since the gateway ends the
//! database's TLS, SCRAM channel binding cannot pass through it: `SCRAM-SHA-256-PLUS` is taken
//! out of the mechanisms the server offers, and the client authenticates with plain
//! `SCRAM-SHA-256` (or what else the server offers) end to end with the database.

mod flow;
mod guard;
mod normal;
mod session;
mod startup;
mod statements;
mod wire;

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::audit::{ClosedBy, DbSessionNames, TunnelAudit};
use crate::config::{Grant, PostgresSettings};

/// A database behind a tunnel: how to reach it and what its users may do.
#[derive(Debug)]
pub struct PgTarget {
    /// `None` only if rustls refused our own provider's defaults: every handshake then fails.
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: ServerName<'static>,
    read_only: bool,
    allow_write: Vec<Grant>,
    log_reads: bool,
}

impl PgTarget {
    /// The database `settings` describe, its TLS client ready.
    pub fn new(settings: &PostgresSettings) -> Self {
        let tls = crate::certs::client_config(settings.roots.as_ref().clone()).map(|mut tls| {
            // PostgreSQL 17 refuses any other ALPN; older servers ignore it.
            tls.alpn_protocols = vec![b"postgresql".to_vec()];
            Arc::new(tls)
        });
        Self {
            tls: tls.ok(),
            server_name: settings.server_name.clone(),
            read_only: settings.read_only,
            allow_write: settings.allow_write.clone(),
            log_reads: settings.log_reads,
        }
    }

    /// Whether `user`, in `groups`, may send statements that change the database.
    pub fn writable(&self, user: &str, groups: &[String]) -> bool {
        !self.read_only || self.allow_write.iter().any(|g| g.admits(user, groups))
    }
}

/// One session's database and what its user may do there.
#[derive(Debug, Clone)]
pub struct PgSession {
    pub target: Arc<PgTarget>,
    pub writable: bool,
}

/// Serves one tunnel's PostgreSQL session until either side ends it, counting the bytes each
/// way; a malformed or oversized message closes it.
pub async fn serve<C, U>(
    mut client: C,
    upstream: U,
    session: &PgSession,
    audit: &TunnelAudit,
    (from_client, to_client): (&mut u64, &mut u64),
) -> ClosedBy
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let first = match startup::from_client(&mut client).await {
        Ok(first) => first,
        Err(_) => return refuse(&mut client, "08P01", "malformed startup packet").await,
    };
    let target = &session.target;
    let secured = match &target.tls {
        Some(tls) => startup::secure(upstream, tls.clone(), target.server_name.clone()).await,
        None => Err(wire::WireError::NoTls),
    };
    let mut upstream = match secured {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::warn!(tunnel = audit.tunnel(), %error, "database TLS failed");
            let text = format!("could not connect securely to the database: {error}");
            let _ = refuse(&mut client, "08001", &text).await;
            return ClosedBy::UpstreamFailed;
        }
    };
    let (packet, names) = match first {
        startup::First::Cancel(packet) => {
            let _ = upstream.write_all(&packet).await;
            let _ = upstream.shutdown().await;
            return ClosedBy::Client;
        }
        startup::First::Startup {
            packet,
            user,
            database,
        } => (
            packet,
            DbSessionNames {
                id: audit.id().to_owned(),
                user: audit.user().to_owned(),
                tunnel: audit.tunnel().to_owned(),
                db_user: user,
                database,
            },
        ),
    };
    let packet = if session.writable {
        packet
    } else {
        startup::read_only(&packet)
    };
    if upstream.write_all(&packet).await.is_err() {
        return ClosedBy::UpstreamFailed;
    }
    *from_client += packet.len() as u64;
    let ends = session::Ends {
        audit,
        names,
        writable: session.writable,
        log_reads: target.log_reads,
    };
    session::relay(client, upstream, ends, (from_client, to_client)).await
}

/// A FATAL `ErrorResponse` to the client, and the end of the tunnel.
async fn refuse(client: &mut (impl AsyncWrite + Unpin), code: &str, text: &str) -> ClosedBy {
    let message = wire::error_response("FATAL", code, &format!("portcullis: {text}"));
    let _ = client.write_all(&message).await;
    let _ = client.shutdown().await;
    ClosedBy::Malformed
}
