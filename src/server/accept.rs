//! The accept loop shared by every listener: deny list at accept, the connection limit held in
//! the kernel backlog, backoff on accept errors.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Server;
use crate::relay::Lease;

/// Longest pause after repeated accept errors (file descriptors exhausted).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);

/// Accepts until shutdown. At the connection limit the loop holds the one connection it just
/// accepted until a slot frees, so further clients wait in the kernel backlog instead of being
/// accepted and starved. The permit is taken after `accept`, not before: with two listeners
/// sharing one limit, a permit held by an idle `accept` would starve the other listener.
pub(super) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    server: Arc<Server>,
    limit: Arc<Semaphore>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Lease) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = MIN_ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = server.lifecycle.draining.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                if backoff == MIN_ACCEPT_BACKOFF {
                    tracing::warn!(error = %e, "accept failed; backing off");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = server.lifecycle.draining.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        backoff = MIN_ACCEPT_BACKOFF;
        if server.live.load().refused_clients.refuses(peer.ip()) {
            // Closed before a byte is read: no TLS, no HTTP parser sees this client.
            drop(stream);
            continue;
        }
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = server.lifecycle.draining.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let lease: Lease = Arc::new((server.metrics.connection(), permit));
        // `map`, not an async block: awaiting a captured future would keep room for it twice.
        let connection = serve(stream, peer, lease.clone()).map(move |()| drop(lease));
        server.lifecycle.tracker.spawn(connection);
    }
}

/// Errors that concern one aborted connection, not the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    )
}
