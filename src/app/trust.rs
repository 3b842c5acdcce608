//! When what a connection or a tunnel was let in on is withdrawn: a reload judges it again, or
//! its client certificate's own time, or that of a revocation list it depends on, runs out. One
//! watch for both, each with its own verdict.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{App, LiveApp};
use crate::connection::ConnectionInfo;

/// The longest a trust watch sleeps before it reads the wall clock again: the deadline it waits
/// for is a wall-clock time, and the clock may jump while it sleeps on the monotonic one.
const RECHECK_AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// Completes when the gateway in service stops trusting `conn`'s client certificate without a
/// reload: once the certificate or a revocation list it depends on is past its time, trust is
/// withdrawn (`Distrust::Expired`). A reload's verdict is its own watch's business; this one
/// never completes for a connection without a client certificate or without a gateway.
async fn trust_lapses(live: &LiveApp, conn: &ConnectionInfo) {
    let Some(client) = &conn.client else {
        return std::future::pending().await;
    };
    loop {
        let app = live.load_full();
        let Some(gateway) = &app.gateway else {
            return std::future::pending().await;
        };
        // A time already past that still verified (a stale list of another issuer) is looked
        // at again only every `RECHECK_AT_LEAST_EVERY`, never in a loop.
        let nap = gateway
            .recheck_at(client)
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .filter(|nap| !nap.is_zero())
            .map_or(RECHECK_AT_LEAST_EVERY, |nap| {
                nap.min(RECHECK_AT_LEAST_EVERY)
            });
        drop(app);
        tokio::time::sleep(nap).await;
        let app = live.load_full();
        if app.gateway.as_ref().is_some_and(|g| !g.still_trusts(conn)) {
            return;
        }
    }
}

/// Completes when what `conn` was let in on is withdrawn: at a reload, when `judge` of the new
/// generation gives a verdict (returned); without one, when trust in its client certificate
/// lapses or another watch saw it lost (`lapsed`'s verdict). Never for a closed reload channel.
pub async fn withdrawn<T>(
    live: &LiveApp,
    mut reloads: watch::Receiver<()>,
    conn: &ConnectionInfo,
    judge: impl Fn(&App) -> Option<T>,
    lapsed: impl Fn() -> T,
) -> T {
    let lapses = trust_lapses(live, conn);
    tokio::pin!(lapses);
    loop {
        tokio::select! {
            changed = reloads.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
                if let Some(verdict) = judge(&live.load()) {
                    return verdict;
                }
            }
            () = &mut lapses => return lapsed(),
            () = conn.trust.lost() => return lapsed(),
        }
    }
}
