//! Accepting connections: connection limit, TLS handshake timeout, HTTP/1.1 or HTTP/2 by ALPN,
//! idle and shutdown draining, and accept errors that back off instead of spinning. Every
//! connection is a task on the process's tracker and holds a lease (its permit and its place in
//! the connections gauge) that its tunnels keep after hyper lets go of it.
//!
//! Not here: what a request means (`layers`, `redirect`).

mod accept;
mod drive;
mod streams;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures_util::future::Either;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

pub use streams::{OpenStreams, StreamExecutor};

use accept::accept_loop;
use drive::Drive;
use streams::h2_builder;

use crate::app::{App, LiveApp};
use crate::connection::ConnectionInfo;
use crate::gateway::AccessGrants;
use crate::io::{Activity, Watched};
use crate::layers::{http_service, https_service};
use crate::lifecycle::Lifecycle;
use crate::logging::Throttle;
use crate::metrics::Metrics;
use crate::proxy_protocol::{Balancers, ClientStream};
use crate::relay::{Capacity, Lease, OpenTunnels, Tunnels};

/// Failed handshakes are reported at most once a minute.
static HANDSHAKE_FAILURES: Throttle = Throttle::new(Duration::from_secs(60));
/// So are connections from a balancer range without a valid PROXY header (a balancer with the
/// protocol off closes every connection: the operator must hear of it, once a minute).
static HEADER_FAILURES: Throttle = Throttle::new(Duration::from_secs(60));

/// How often the access requests file is looked at, and how late a grant may end.
const ACCESS_REQUESTS_EVERY: Duration = Duration::from_secs(1);

/// Everything the accept loops and connection tasks share.
#[derive(Debug)]
pub struct Server {
    live: LiveApp,
    reloads: watch::Sender<()>,
    connections: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    lifecycle: Lifecycle,
    balancers: Balancers,
    /// `CONNECT` tunnels open per user, across connections and reloads.
    open_tunnels: Arc<OpenTunnels>,
}

impl Server {
    /// A server starting with `app`; `max_connections` and the `balancers` whose PROXY
    /// headers name the client are fixed for its lifetime.
    pub fn new(app: App, lifecycle: Lifecycle, balancers: Balancers) -> Arc<Self> {
        Arc::new(Self {
            balancers,
            connections: Arc::new(Semaphore::new(app.limits.max_connections)),
            metrics: app.process.metrics.clone(),
            live: Arc::new(ArcSwap::from_pointee(app)),
            reloads: watch::Sender::new(()),
            lifecycle,
            open_tunnels: Arc::default(),
        })
    }

    /// The generation in service, swapped by [`install`](Self::install).
    pub fn live(&self) -> LiveApp {
        self.live.clone()
    }

    /// Serves new connections and every new request with `app` from now on, and has open
    /// connections check their client certificates against it.
    pub fn install(&self, app: App) {
        self.live.store(Arc::new(app));
        self.reloads.send_replace(());
    }

    /// Follows the access requests of the configuration in service: read now, then looked at
    /// once a second; when what they admit changes (a grant approved, withdrawn or ended), open
    /// tunnels are judged again, as after a reload, so one opened under a grant ends with it.
    pub fn follow_access_requests(self: &Arc<Self>, grants: Arc<AccessGrants>) {
        fn file(live: &LiveApp) -> Option<PathBuf> {
            let app = live.load();
            app.gateway.as_ref().map(|g| g.settings.requests.clone())
        }
        grants.refresh(file(&self.live).as_deref(), SystemTime::now());
        let (server, cut) = (Arc::downgrade(self), self.lifecycle.cut.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cut.cancelled() => return,
                    () = tokio::time::sleep(ACCESS_REQUESTS_EVERY) => {}
                }
                let Some(server) = server.upgrade() else {
                    return;
                };
                if grants.refresh(file(&server.live).as_deref(), SystemTime::now()) {
                    server.reloads.send_replace(());
                }
            }
        });
    }

    /// Spawns the accept loops of both listeners.
    pub fn spawn(self: &Arc<Self>, https: TcpListener, http: Option<TcpListener>) {
        let server = self.clone();
        self.spawn_listener(
            https,
            self.connections.clone(),
            move |stream, peer, lease| server.clone().serve_tls(stream, peer, lease),
        );
        if let Some(http) = http {
            let server = self.clone();
            self.spawn_listener(http, self.connections.clone(), move |stream, peer, _| {
                server.clone().serve_plain(stream, peer)
            });
        }
    }

    /// Accepts on `listener` with the public listeners' rules (refused networks closed at
    /// accept, backoff on accept errors, every connection a tracked task that shutdown waits
    /// for), at most `limit`'s permits at once. The admin listener uses it with a limit of its
    /// own, so that public traffic at `max_connections` cannot lock operators out.
    pub fn spawn_listener<F, Fut>(
        self: &Arc<Self>,
        listener: TcpListener,
        limit: Arc<Semaphore>,
        serve: F,
    ) where
        F: Fn(TcpStream, SocketAddr, Lease) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.lifecycle
            .tracker
            .spawn(accept_loop(listener, self.clone(), limit, serve));
    }

    /// The connection's client: the one a trusted balancer's PROXY header names (checked
    /// against the deny list now that it is known), else the peer. `None` closes the connection:
    /// also when the client is over `[access] connection_rate`, counted before a byte of it is
    /// read (a balancer's own connections are never counted, its clients' are).
    async fn client_of(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        app: &App,
        plain: bool,
    ) -> Option<(ClientStream, SocketAddr)> {
        let limits = &app.limits;
        let within_rate = |client: SocketAddr| {
            app.connection_rate
                .as_ref()
                .is_none_or(|limit| limit.check(client.ip()).is_ok())
        };
        if !self.balancers.trust(peer.ip()) {
            if !within_rate(peer) {
                return None;
            }
            // A TLS handshake fails on a header by itself; the redirect listener must look.
            if plain && !self.balancers.is_empty() {
                let first = crate::proxy_protocol::starts_with_header(&socket);
                match tokio::time::timeout(limits.header_read_timeout, first).await {
                    Ok(false) => {}
                    Ok(true) | Err(_) => return None,
                }
            }
            return Some((ClientStream::direct(socket), peer));
        }
        let header = crate::proxy_protocol::read_header(socket, peer);
        let (stream, client) = match tokio::time::timeout(limits.handshake_timeout, header).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                HEADER_FAILURES.warn(|count| {
                    tracing::warn!(count, %error, "balancer connections closed: no valid PROXY header");
                });
                return None;
            }
            Err(_) => return None,
        };
        if app.refused_clients.refuses(client.ip()) || !within_rate(client) {
            return None;
        }
        Some((stream, client))
    }

    async fn serve_tls(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, lease: Lease) {
        let app = self.live.load_full();
        // In a block, so that nothing made on the way (the TLS stream, the service) keeps a slot
        // in the task while the connection runs: a task's future is as large as the largest
        // state it can be in, and an idle connection is in the last one.
        let served = {
            let activity = Activity::new();
            // Boxed for the same reason: an idle connection keeps no room for a handshake.
            let handshake = Box::pin(self.handshake(stream, peer, &app, &activity));
            let Some((tls, peer)) = handshake.await else {
                return;
            };
            self.connection(&app, tls, peer, lease, activity)
        };
        if let Some(served) = served {
            served.await;
        }
    }

    /// The client (`client_of`) and its TLS handshake, within `handshake_timeout`; `None` when
    /// either fails, or when the handshake was all there was to it (TLS-ALPN-01).
    async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        app: &App,
        activity: &Arc<Activity>,
    ) -> Option<(TlsStream<Watched<ClientStream>>, SocketAddr)> {
        let (stream, peer) = self.client_of(stream, peer, app, false).await?;
        let limits = &app.limits;
        let watched = Watched::new(stream, activity.clone(), limits.send_timeout);
        // The ClientHello is read first: its SNI picks the config, and with it whether a client
        // certificate is asked for.
        let handshake = async {
            let start =
                LazyConfigAcceptor::new(rustls::server::Acceptor::default(), watched).await?;
            let config = app.tls.for_sni(start.client_hello().server_name());
            start.into_stream(config).await
        };
        let Ok(Ok(tls)) = tokio::time::timeout(limits.handshake_timeout, handshake).await else {
            self.metrics.handshake(false);
            // Neither the peer nor rustls's message: both can carry what a client chose (its
            // address, an SNI). Scanners fail handshakes all day, hence the throttle.
            HANDSHAKE_FAILURES.warn(|count| {
                tracing::info!(count, "TLS handshakes failed or timed out");
            });
            return None;
        };
        self.metrics.handshake(true);
        // A TLS-ALPN-01 validation: the handshake was the whole exchange (RFC 8737 3).
        let validation = tls.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN);
        (!validation).then_some((tls, peer))
    }

    /// The connection to run over a handshake's `tls`: HTTP/2 or HTTP/1.1 by ALPN, with its
    /// service and watches. `None` for a name without a certificate.
    fn connection<'a>(
        &'a self,
        app: &App,
        tls: TlsStream<Watched<ClientStream>>,
        peer: SocketAddr,
        lease: Lease,
        activity: Arc<Activity>,
    ) -> Option<impl Future<Output = ()> + Send + 'a> {
        let (_, session) = tls.get_ref();
        let is_h2 = session.alpn_protocol() == Some(b"h2");
        let certificate = app.certs.names_for(session.server_name())?;
        // The gateway verified the client certificate during this handshake.
        let verified_under = app.gateway.as_ref().map_or(0, |g| g.generation);
        let info = Arc::new(ConnectionInfo::new(
            peer,
            session,
            certificate,
            verified_under,
        )?);
        let limits = &app.limits;
        // An HTTP/2 connection carries many tunnels: each takes a permit of its own.
        let capacity = is_h2.then(|| Capacity::new(self.connections.clone(), self.metrics.clone()));
        let tunnels = Tunnels::new(
            self.lifecycle.clone(),
            (lease, capacity),
            self.open_tunnels.clone(),
            self.live.clone(),
            self.reloads.subscribe(),
            (limits.idle_timeout, limits.send_timeout),
        );
        let service = TowerToHyperService::new(https_service(
            &self.live,
            info.clone(),
            tunnels,
            &self.lifecycle.leaving,
        ));
        let io = TokioIo::new(tls);
        let idle = limits.idle_timeout;
        let cut = (self.revocation(&info), &self.lifecycle.cut);
        Some(if is_h2 {
            // Idle means no stream in flight: a client that only pings is idle too, one with a
            // tunnel open is not.
            let in_flight = Arc::new(OpenStreams::default());
            let executor = StreamExecutor::new(limits.send_timeout, in_flight.clone());
            let conn = h2_builder(limits, executor.clone()).serve_connection(io, service);
            let conn = Box::pin(executor.run(conn));
            let quiet = async move { in_flight.idle(idle).await };
            // GOAWAY as soon as the process is leaving: the client opens its next stream on a
            // new connection, through the balancer, while this one finishes its streams.
            let leaving = &self.lifecycle.leaving;
            let drive = Drive::new(
                conn,
                |c| c.conn().graceful_shutdown(),
                (quiet, idle),
                cut,
                leaving,
            );
            Either::Left(drive)
        } else {
            let conn = Box::pin(app.http1.tls.serve_connection(io, service).with_upgrades());
            let quiet = async move { activity.idle(idle).await };
            // Closing an idle HTTP/1 connection early would race the client's next request;
            // while leaving, its responses say `Connection: close` instead (layers).
            let draining = &self.lifecycle.draining;
            let drive = Drive::new(
                conn,
                |c| c.graceful_shutdown(),
                (quiet, idle),
                cut,
                draining,
            );
            Either::Right(drive)
        })
    }

    /// Completes when the connection's client certificate is no longer trusted: a reload's new
    /// CRL revokes it or its CA is gone, or it (or a revocation list it depends on) is past its
    /// time; never for a connection without one. Boxed, and only with a client certificate: the
    /// other connections keep nothing for it.
    fn revocation(&self, info: &Arc<ConnectionInfo>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        if info.client.is_none() {
            // A zero-sized future: boxing it allocates nothing.
            return Box::pin(std::future::pending());
        }
        let (info, live, reloads) = (info.clone(), self.live.clone(), self.reloads.subscribe());
        Box::pin(async move {
            let distrusts = |app: &App| {
                let gateway = app.gateway.as_ref();
                gateway
                    .is_some_and(|g| !g.still_trusts(&info))
                    .then_some(())
            };
            crate::app::withdrawn(&live, reloads, &info, distrusts, || ()).await;
        })
    }

    async fn serve_plain(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let app = self.live.load_full();
        let served = {
            let Some((stream, peer)) = self.client_of(stream, peer, &app, true).await else {
                return;
            };
            let limits = &app.limits;
            let activity = Activity::new();
            let io = TokioIo::new(Watched::new(stream, activity.clone(), limits.send_timeout));
            let service = TowerToHyperService::new(http_service(
                &app,
                peer.ip().to_canonical(),
                &self.lifecycle.leaving,
            ));
            // No `with_upgrades`: the redirect listener never switches protocols, h2c included.
            let conn = Box::pin(app.http1.plain.serve_connection(io, service));
            let idle = limits.idle_timeout;
            let quiet = async move { activity.idle(idle).await };
            let cut = (std::future::pending(), &self.lifecycle.cut);
            let draining = &self.lifecycle.draining;
            Drive::new(
                conn,
                |c| c.graceful_shutdown(),
                (quiet, idle),
                cut,
                draining,
            )
        };
        served.await;
    }
}
