//! Byte streams joined through the proxy: upgraded connections (WebSocket), where the client and
//! the upstream switched protocols, and `CONNECT` tunnels to a `[[tunnels]]` target, which the
//! gateway admitted and the audit trail follows from open to close.
//!
//! A tunnel is a connection like any other: it keeps the client connection's permit and its
//! place in `portcullis_connections_active` (it holds the connection's lease; on HTTP/2 each
//! `CONNECT` tunnel also takes one of its own, and every one counts against its user's cap:
//! `limits.rs`), it ends after its
//! idle timeout without a byte either way, a write stuck for `send_timeout` fails it, and at
//! shutdown it runs until the grace period ends, then is cut. On HTTP/2, hyper drives an upgraded
//! stream with a task on the connection's stream executor, so the tunnel counts as a stream in
//! flight and the connection carrying it is not idle. A `CONNECT` tunnel is judged again at
//! every reload: when the reload no longer trusts its certificate or no longer grants it, it is
//! closed.

mod limits;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::access_requests::ActiveGrant;
use crate::app::{App, LiveApp};
use crate::audit::{ClosedBy, TunnelAudit};
use crate::connection::{ConnectionInfo, Distrust};
use crate::error::OverLimit;
use crate::io::{Activity, Watched};
use crate::lifecycle::Lifecycle;
use crate::postgres::PgSession;
use crate::routing::Action;
use crate::upstream::Upstream;

pub use limits::{Capacity, Lease, OpenTunnels, TunnelLease};

/// Bytes read at once from either side of a `CONNECT` tunnel.
const RELAY_BUFFER: usize = 16 * 1024;

/// What a client connection's tunnels run under.
#[derive(Clone)]
pub struct Tunnels {
    lifecycle: Lifecycle,
    /// The connection's permit and gauge: released when the connection and its tunnels end.
    lease: Lease,
    /// On HTTP/2, where each tunnel takes a permit of its own.
    capacity: Option<Capacity>,
    /// Tunnels open per user, across connections.
    open: Arc<OpenTunnels>,
    idle_timeout: Duration,
    send_timeout: Duration,
    live: LiveApp,
    reloads: watch::Receiver<()>,
}

impl fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnels")
            .field("idle_timeout", &self.idle_timeout)
            .field("send_timeout", &self.send_timeout)
            .finish_non_exhaustive()
    }
}

/// A `CONNECT` tunnel the gateway admitted and the proxy connected.
#[derive(Debug)]
pub struct Connected {
    /// The client's side, once the `200` is sent.
    pub client: OnUpgrade,
    /// The target's side.
    pub upstream: TcpStream,
    /// Its lines in the audit trail.
    pub audit: TunnelAudit,
    /// The tunnel route's name, to judge it again after a reload.
    pub route: Arc<str>,
    /// The connection it was opened on.
    pub conn: Arc<ConnectionInfo>,
    /// How long it may carry no byte.
    pub idle_timeout: Duration,
    /// Its place among its user's tunnels and, on HTTP/2, its connection permit.
    pub lease: TunnelLease,
    /// What it was opened under, for a reload to judge again.
    pub terms: TunnelTerms,
}

/// What a `CONNECT` tunnel was opened under: a reload that changes either closes it.
#[derive(Debug)]
pub struct TunnelTerms {
    /// The upstream it was connected to.
    pub upstream: Arc<Upstream>,
    /// Whether a second factor was passed to open it.
    pub second_factor: bool,
    /// The approved access request it was opened under, if not its `allow` list.
    pub grant: Option<ActiveGrant>,
    /// With `protocol = "postgres"`: the session the gateway speaks (not bytes it relays), and
    /// whether its user may change anything.
    pub postgres: Option<PgSession>,
}

impl Tunnels {
    /// Tunnels of one connection holding `lease`, judged again by `live` at each change of
    /// `reloads`; `idle_timeout` is the upgraded connections' one. With `capacity` (an HTTP/2
    /// connection) each `CONNECT` tunnel takes a connection permit of its own.
    pub fn new(
        lifecycle: Lifecycle,
        (lease, capacity): (Lease, Option<Capacity>),
        open: Arc<OpenTunnels>,
        live: LiveApp,
        reloads: watch::Receiver<()>,
        (idle_timeout, send_timeout): (Duration, Duration),
    ) -> Self {
        Self {
            lifecycle,
            lease,
            capacity,
            open,
            live,
            reloads,
            idle_timeout,
            send_timeout,
        }
    }

    /// What a `CONNECT` tunnel for `conn`'s employee must hold before its target is connected:
    /// refused when the employee has `[gateway] max_tunnels_per_user` open, or on HTTP/2 when
    /// `max_connections` connections and tunnels are open.
    pub fn reserve(&self, conn: &ConnectionInfo) -> Result<TunnelLease, OverLimit> {
        let user = conn.client.as_ref().map_or("-", |c| c.user.as_str());
        let cap = self
            .live
            .load()
            .gateway
            .as_ref()
            .map_or(0, |g| g.settings.max_tunnels_per_user);
        TunnelLease::take(&self.open, user, cap, self.capacity.as_ref())
    }

    /// Joins the two sides once both have switched; either side closing, idleness or the end
    /// of the shutdown grace ends the tunnel.
    pub fn spawn(&self, client: OnUpgrade, upstream: OnUpgrade) {
        let tunnels = self.clone();
        self.lifecycle.tracker.spawn(async move {
            let _lease = tunnels.lease.clone();
            let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
                return;
            };
            let activity = Activity::new();
            let watch = |io| Watched::new(TokioIo::new(io), activity.clone(), tunnels.send_timeout);
            let (mut client, mut upstream) = (watch(client), watch(upstream));
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                () = activity.idle(tunnels.idle_timeout) => {}
                () = tunnels.lifecycle.cut.cancelled() => {}
            }
        });
    }

    /// Relays an admitted `CONNECT` tunnel until one side closes, it idles, shutdown cuts it or
    /// a reload withdraws it; then writes its close line with the bytes each way.
    pub fn spawn_connect(&self, tunnel: Connected) {
        let tunnels = self.clone();
        self.lifecycle.tracker.spawn(async move {
            let _lease = tunnels.lease.clone();
            let Connected {
                client,
                upstream,
                audit,
                route,
                conn,
                idle_timeout,
                lease: _lease,
                terms,
            } = tunnel;
            let Ok(client) = client.await else {
                audit.close(ClosedBy::Client, 0, 0);
                return;
            };
            let _open = tunnels
                .live
                .load()
                .process
                .metrics
                .tunnel_open(route.clone());
            let activity = Activity::new();
            let client = Watched::new(TokioIo::new(client), activity.clone(), tunnels.send_timeout);
            let upstream = Watched::new(upstream, activity.clone(), tunnels.send_timeout);
            let (mut from_client, mut to_client) = (0, 0);
            let opened = Opened {
                conn: &conn,
                route: &route,
                terms: &terms,
            };
            let withdrawn = withdrawn(&tunnels.live, tunnels.reloads.clone(), opened);
            let counts = (&mut from_client, &mut to_client);
            let carried = async {
                match &terms.postgres {
                    Some(session) => {
                        crate::postgres::serve(client, upstream, session, &audit, counts).await
                    }
                    None => relay(client, upstream, counts).await,
                }
            };
            let closed_by = tokio::select! {
                by = carried => by,
                () = activity.idle(idle_timeout) => ClosedBy::IdleTimeout,
                () = tunnels.lifecycle.cut.cancelled() => ClosedBy::Shutdown,
                by = withdrawn => by,
            };
            audit.close(closed_by, from_client, to_client);
        });
    }
}

/// Copies both ways, counting bytes, until both sides have closed. A side that closes is
/// passed on as a half-close (the other direction goes on, as SSH expects); whichever closed
/// first closed the tunnel.
async fn relay<C, U>(
    client: C,
    upstream: U,
    (from_client, to_client): (&mut u64, &mut u64),
) -> ClosedBy
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let up = pump(&mut client_read, &mut upstream_write, from_client);
    let down = pump(&mut upstream_read, &mut client_write, to_client);
    let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
    tokio::select! {
        () = &mut up => {
            down.await;
            ClosedBy::Client
        }
        () = &mut down => {
            up.await;
            ClosedBy::Upstream
        }
    }
}

/// Copies `from` to `to` until `from` ends or either fails, then shuts `to` down.
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    count: &mut u64,
) {
    let mut buffer = vec![0; RELAY_BUFFER];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 || to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        *count += read as u64;
    }
    let _ = to.shutdown().await;
}

/// A running tunnel, as a reload judges it.
#[derive(Clone, Copy)]
struct Opened<'a> {
    conn: &'a ConnectionInfo,
    route: &'a str,
    terms: &'a TunnelTerms,
}

/// Completes when a reload no longer trusts the tunnel's certificate, no longer grants its
/// route to the certificate's user, sends the route elsewhere or asks it for a second factor it
/// was opened without; or when the certificate expires.
async fn withdrawn(live: &LiveApp, reloads: watch::Receiver<()>, opened: Opened<'_>) -> ClosedBy {
    // The connection's own watch ends with an upgraded HTTP/1.1 connection: the tunnel keeps
    // one of its own on the certificate's time.
    let judge = |app: &App| judge_again(app, opened);
    crate::app::withdrawn(live, reloads, opened.conn, judge, || {
        distrusted(opened.conn)
    })
    .await
}

/// How a tunnel whose connection lost the gateway's trust is closed.
fn distrusted(conn: &ConnectionInfo) -> ClosedBy {
    match conn.trust.withdrawn() {
        Some(Distrust::Expired) => ClosedBy::Expired,
        _ => ClosedBy::Revoked,
    }
}

fn judge_again(app: &App, opened: Opened<'_>) -> Option<ClosedBy> {
    let Opened {
        conn,
        route: route_name,
        terms,
    } = opened;
    let (Some(gateway), Some(client)) = (&app.gateway, &conn.client) else {
        return Some(ClosedBy::GrantRemoved);
    };
    if !gateway.still_trusts(conn) {
        return Some(distrusted(conn));
    }
    let Some(route) = app.routes.by_name(route_name) else {
        return Some(ClosedBy::GrantRemoved);
    };
    let now = SystemTime::now();
    let granted = route
        .access
        .as_ref()
        .is_some_and(|access| gateway.admits(route_name, access, client, now).is_some());
    if !granted {
        let expired = terms.grant.as_ref().is_some_and(|g| g.until <= now);
        return Some(if expired {
            ClosedBy::GrantExpired
        } else {
            ClosedBy::GrantRemoved
        });
    }
    let second_factor_missing =
        route.access.as_ref().is_some_and(|a| a.mfa) && !terms.second_factor;
    // Sent elsewhere, or carried another way: a database session made read-only (or no
    // longer one) ends, rather than go on under rules it no longer has.
    let moved = match &route.action {
        Action::Tunnel(target) => {
            !target.upstream.same_targets(&terms.upstream)
                || gateway.may_write(target, &client.user)
                    != terms.postgres.as_ref().map(|session| session.writable)
        }
        _ => true,
    };
    (second_factor_missing || moved).then_some(ClosedBy::Reconfigured)
}
