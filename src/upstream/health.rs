//! Active health checks: one task per address, probing it every `interval` through the same
//! connector as traffic (so the address policy holds for probes too), marking it down after
//! `unhealthy` failures in a row and up after `healthy` successes. A probe is a new connection
//! each time, as HAProxy's and nginx's are: a pooled one would say nothing about accepting.
//!
//! A task holds its address weakly and ends with it: a reload that drops the upstream stops its
//! checks.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request};
use http_body_util::Empty;
use hyper::client::conn::http1;
use tower::Service;

use super::connector::CheckedConnector;
use super::target::Target;
use crate::config::{HealthCheck, ProbeKind};

/// Starts checking `target` on the current runtime, if there is one; the first check is at once.
pub(super) fn spawn(
    upstream: Arc<str>,
    target: &Arc<Target>,
    connector: CheckedConnector,
    check: HealthCheck,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let target = Arc::downgrade(target);
    runtime.spawn(run(upstream, target, connector, check));
}

async fn run(
    upstream: Arc<str>,
    target: Weak<Target>,
    mut connector: CheckedConnector,
    check: HealthCheck,
) {
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        ticks.tick().await;
        let Some(address) = target.upgrade() else {
            return;
        };
        let uri = address.uri.clone();
        // The task must not keep the address alive while it waits.
        drop(address);
        let passed = tokio::time::timeout(check.timeout, probe(&mut connector, uri, &check.probe))
            .await
            .unwrap_or(false);
        let Some(address) = target.upgrade() else {
            return;
        };
        if passed {
            (passes, failures) = (passes.saturating_add(1), 0);
        } else {
            (passes, failures) = (0, failures.saturating_add(1));
        }
        let healthy = address.is_healthy();
        if healthy && failures >= check.unhealthy {
            address.set_healthy(false);
            let address = address.uri.authority().map(|a| a.as_str()).unwrap_or("");
            tracing::warn!(%upstream, %address, failures, "upstream address down: health check failed");
        } else if !healthy && passes >= check.healthy {
            address.set_healthy(true);
            let address = address.uri.authority().map(|a| a.as_str()).unwrap_or("");
            tracing::info!(%upstream, %address, passes, "upstream address up: health check passed");
        }
    }
}

/// One check of the address `uri` names.
async fn probe(connector: &mut CheckedConnector, uri: http::Uri, kind: &ProbeKind) -> bool {
    let authority = uri.authority().cloned();
    let Ok(io) = connector.call(uri).await else {
        return false;
    };
    let ProbeKind::Http { path, status, host } = kind else {
        return true;
    };
    let Ok((mut sender, connection)) = http1::handshake::<_, Empty<Bytes>>(io).await else {
        return false;
    };
    let connection = tokio::spawn(connection);
    let host = host
        .clone()
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let mut request = Request::new(Empty::new());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = path.clone().into();
    let headers = request.headers_mut();
    if let Some(host) = host {
        headers.insert(HOST, host);
    }
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static("portcullis-health-check"),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    let passed = match sender.send_request(request).await {
        Ok(response) => status.contains(&response.status().as_u16()),
        Err(_) => false,
    };
    connection.abort();
    passed
}
