//! A configuration's routes and tunnels compiled for lookup, each with its upstream pool.

use std::sync::Arc;

use crate::access_log::RouteLabel;
use crate::config::{Config, RouteAction};
use crate::host::HostPattern;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimits;
use crate::routing::{Action, Route, Routes, TunnelTarget};
use crate::upstream::Upstream;

/// Compiles routes and tunnels and builds one pool per upstream, shared by the routes naming it.
pub(super) fn compile(config: &Config, metrics: &Metrics, limits: &RateLimits) -> Routes {
    // In the order of `config.upstreams`, which is what an `UpstreamId` indexes.
    let upstreams: Vec<Arc<Upstream>> = config
        .upstreams
        .iter()
        .map(|u| Arc::new(Upstream::new(u, &config.limits, metrics)))
        .collect();
    let strip: Arc<[http::HeaderName]> = config.stripped_headers.clone().into();
    let routes = config
        .routes
        .iter()
        .map(|route| {
            let (action, upstream_name) = match route.action {
                RouteAction::Forward(id) => (
                    Action::Forward {
                        upstream: upstreams[id.index()].clone(),
                        strip: strip.clone(),
                    },
                    Some(config.upstream(id).name.clone()),
                ),
                RouteAction::Respond { status, ref body } => (
                    Action::Respond {
                        status,
                        body: body.clone(),
                    },
                    None,
                ),
            };
            Arc::new(Route {
                label: Arc::new(RouteLabel {
                    name: route.name().into(),
                    prefix: route.path_prefix.as_str().into(),
                    upstream: upstream_name,
                }),
                host: route.host.clone(),
                prefix: route.path_prefix.clone(),
                action,
                access: route.access.clone(),
                max_body_bytes: route.max_body_bytes,
                limit: route
                    .limit
                    .map(|rate| limits.route_limiter(&route.name(), rate)),
            })
        })
        .collect();
    let tunnels = config
        .tunnels
        .iter()
        .map(|tunnel| {
            Arc::new(Route {
                label: Arc::new(RouteLabel {
                    name: tunnel.name().into(),
                    prefix: "".into(),
                    upstream: Some(config.upstream(tunnel.upstream).name.clone()),
                }),
                host: HostPattern::Exact(tunnel.host.clone()),
                prefix: String::new(),
                action: Action::Tunnel(TunnelTarget {
                    target: tunnel.target.clone(),
                    port: tunnel.port,
                    upstream: upstreams[tunnel.upstream.index()].clone(),
                    idle_timeout: tunnel.idle_timeout,
                    postgres: tunnel
                        .postgres
                        .as_ref()
                        .map(|pg| Arc::new(crate::postgres::PgTarget::new(pg))),
                }),
                access: Some(tunnel.access.clone()),
                max_body_bytes: 0,
                // One count per client across every tunnel.
                limit: config
                    .gateway
                    .as_ref()
                    .map(|gateway| limits.limiter("connect", gateway.connect_rate)),
            })
        })
        .collect();
    Routes::new(routes, tunnels)
}
