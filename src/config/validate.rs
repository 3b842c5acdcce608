//! From the raw TOML mirror to typed values, one section at a time. Each function records every
//! problem it finds with its key and returns its best typed value, so that all problems of a
//! file are reported together.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use ipnet::IpNet;

use super::problems::{Key, Problems};
use super::raw::{self, RawConfig, RawLimits};
use super::{
    AdminSettings, HealthSettings, Limits, Listen, MIN_HEADER_BYTES, ProblemKind, RouteAction,
    RouteConfig, UpstreamConfig, UpstreamId,
};
use crate::host::HostPattern;
use crate::networks::check_private;

fn socket_addr(value: &str, key: &str, problems: &mut Problems) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        problems.push(key, ProblemKind::SocketAddr(value.to_owned()));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

pub(super) fn validate_listen(raw: &RawConfig, problems: &mut Problems) -> Listen {
    Listen {
        http: raw
            .listen
            .http
            .as_deref()
            .map(|v| socket_addr(v, "listen.http", problems)),
        https: socket_addr(&raw.listen.https, "listen.https", problems),
        public_https_port: raw.listen.public_https_port,
        proxy_protocol_from: super::environments::validate_balancers(raw, problems),
    }
}

pub(super) fn validate_limits(raw: &RawLimits, problems: &mut Problems) -> Limits {
    let mut duration = |value: &str, name: &str| {
        let key = Key::new("limits").field(name);
        match humantime::parse_duration(value) {
            Ok(d) if d.is_zero() => {
                problems.push(key, ProblemKind::Zero);
                d
            }
            Ok(d) => d,
            Err(_) => {
                problems.push(key, ProblemKind::Duration(value.to_owned()));
                Duration::ZERO
            }
        }
    };
    let limits = Limits {
        handshake_timeout: duration(&raw.handshake_timeout, "handshake_timeout"),
        header_read_timeout: duration(&raw.header_read_timeout, "header_read_timeout"),
        body_read_timeout: duration(&raw.body_read_timeout, "body_read_timeout"),
        send_timeout: duration(&raw.send_timeout, "send_timeout"),
        idle_timeout: duration(&raw.idle_timeout, "idle_timeout"),
        upstream_connect_timeout: duration(
            &raw.upstream_connect_timeout,
            "upstream_connect_timeout",
        ),
        upstream_response_timeout: duration(
            &raw.upstream_response_timeout,
            "upstream_response_timeout",
        ),
        upstream_idle_timeout: duration(&raw.upstream_idle_timeout, "upstream_idle_timeout"),
        shutdown_grace: duration(&raw.shutdown_grace, "shutdown_grace"),
        drain_delay: humantime::parse_duration(&raw.drain_delay).unwrap_or_else(|_| {
            problems.push(
                "limits.drain_delay",
                ProblemKind::Duration(raw.drain_delay.clone()),
            );
            Duration::ZERO
        }),
        max_header_bytes: raw.max_header_bytes,
        max_body_bytes: raw.max_body_bytes,
        max_connections: raw.max_connections,
        h2_max_concurrent_streams: raw.h2_max_concurrent_streams,
    };
    if raw.max_header_bytes < MIN_HEADER_BYTES {
        problems.push("limits.max_header_bytes", ProblemKind::TooSmall);
    }
    if raw.max_connections == 0 {
        problems.push("limits.max_connections", ProblemKind::Zero);
    }
    if raw.h2_max_concurrent_streams == 0 {
        problems.push("limits.h2_max_concurrent_streams", ProblemKind::Zero);
    }
    limits
}

/// Something to serve: certificate files, or ACME.
pub(super) fn require_certificates(raw: &RawConfig, problems: &mut Problems) {
    if raw.tls.certificates.is_empty() && raw.tls.acme.is_none() {
        problems.push("tls.certificates", ProblemKind::NoCertificate);
    }
}

pub(super) fn validate_routes(
    raw: &RawConfig,
    upstreams: &[UpstreamConfig],
    limits: &Limits,
    problems: &mut Problems,
) -> Vec<RouteConfig> {
    let gateway = raw.gateway.as_ref();
    let mut routes: Vec<RouteConfig> = Vec::new();
    let mut seen = HashSet::new();
    for (i, route) in raw.routes.iter().enumerate() {
        let route_key = Key::new("routes").index(i);
        let key = |field: &str| route_key.field(field);
        let host = HostPattern::parse(&route.host)
            .map_err(|e| problems.push(key("host"), e))
            .ok();
        let prefix = &route.path_prefix;
        if !prefix.starts_with('/')
            || crate::path::normalize_path(prefix).ok().as_deref() != Some(prefix)
            || prefix.contains('%')
        {
            problems.push(key("path_prefix"), ProblemKind::PathPrefix(prefix.clone()));
        } else if crate::path::is_reserved(prefix) {
            problems.push(
                key("path_prefix"),
                ProblemKind::ReservedPrefix(prefix.clone()),
            );
        }
        let action = route_action(route, upstreams, &raw.upstreams, &key, problems);
        let limit = route
            .limit
            .as_ref()
            .and_then(|rate| super::rates::rate(rate, &key("limit"), problems));
        let access = super::gateway::route_access(i, route, gateway, problems);
        let (Some(host), Some(action)) = (host, action) else {
            continue;
        };
        if !seen.insert((host.clone(), prefix.as_str())) {
            problems.push(
                key("path_prefix"),
                ProblemKind::DuplicateRoute(host.to_string()),
            );
        }
        routes.push(RouteConfig {
            host,
            path_prefix: prefix.clone(),
            action,
            access,
            max_body_bytes: route.max_body_bytes.unwrap_or(limits.max_body_bytes),
            limit,
        });
    }
    routes
}

fn route_action(
    route: &raw::RawRoute,
    upstreams: &[UpstreamConfig],
    declared: &BTreeMap<String, raw::RawUpstream>,
    key: &dyn Fn(&str) -> Key,
    problems: &mut Problems,
) -> Option<RouteAction> {
    match (&route.upstream, &route.respond) {
        (Some(name), None) => {
            let id = upstreams.iter().position(|u| *u.name == **name);
            if id.is_none() && !declared.contains_key(name) {
                problems.push(key("upstream"), ProblemKind::UnknownUpstream(name.clone()));
            }
            // A declared upstream missing here was refused with its own key.
            id.map(|id| RouteAction::Forward(UpstreamId(id)))
        }
        (None, Some(respond)) => match StatusCode::from_u16(respond.status) {
            Ok(status) if (200..600).contains(&respond.status) => Some(RouteAction::Respond {
                status,
                body: Bytes::from(respond.body.clone()),
            }),
            _ => {
                problems.push(key("respond.status"), ProblemKind::Status(respond.status));
                None
            }
        },
        _ => {
            problems.push(key("upstream"), ProblemKind::RouteAction);
            None
        }
    }
}

/// `[admin]`: private by construction. Plain HTTP on a loopback address, or mutual TLS with
/// employee certificates and a grant (`allow`) on a loopback or private address; never on a
/// public or wildcard address.
pub(super) fn validate_admin(raw: &RawConfig, problems: &mut Problems) -> Option<AdminSettings> {
    let admin = raw.admin.as_ref()?;
    let listen = socket_addr(&admin.listen, "admin.listen", problems);
    if is_public(listen) {
        problems.push("admin.listen", ProblemKind::PublicListener(listen));
    } else if admin.allow.is_empty() && !listen.ip().to_canonical().is_loopback() {
        problems.push("admin.listen", ProblemKind::UnauthenticatedAdmin(listen));
    }
    let allow = match &raw.gateway {
        Some(gateway) => {
            super::gateway::grants(&admin.allow, &Key::new("admin.allow"), gateway, problems)
        }
        None if admin.allow.is_empty() => Vec::new(),
        None => {
            problems.push("admin.allow", ProblemKind::NoGateway);
            Vec::new()
        }
    };
    Some(AdminSettings { listen, allow })
}

/// The loopback networks, IPv4 and IPv6.
const LOOPBACK: [IpNet; 2] = [
    IpNet::V4(ipnet::Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(127, 0, 0, 0),
        8,
    )),
    IpNet::V6(ipnet::Ipv6Net::new_assert(
        std::net::Ipv6Addr::LOCALHOST,
        128,
    )),
];

/// `[health]`: plain HTTP for the balancers, on a loopback or private address, answering only
/// the networks of `allow` (by default the balancers that send PROXY headers, else loopback).
pub(super) fn validate_health(
    raw: &RawConfig,
    listen: &Listen,
    problems: &mut Problems,
) -> Option<HealthSettings> {
    let health = raw.health.as_ref()?;
    let addr = socket_addr(&health.listen, "health.listen", problems);
    if is_public(addr) {
        problems.push("health.listen", ProblemKind::PublicListener(addr));
    }
    let allow = super::environments::private_ranges(&health.allow, "health.allow", problems);
    let allow = match () {
        () if !health.allow.is_empty() => allow,
        () if !listen.proxy_protocol_from.is_empty() => listen.proxy_protocol_from.clone(),
        () => LOOPBACK.to_vec(),
    };
    Some(HealthSettings {
        listen: addr,
        allow,
    })
}

/// Reachable from outside: a public address, or every address at once.
fn is_public(addr: SocketAddr) -> bool {
    check_private(&IpNet::from(addr.ip())).is_err() || addr.ip().is_unspecified()
}

/// RFC 6797 6.1: `max-age` is required; `includeSubDomains` and `preload` are flags.
/// Legal HSTS settings that do not do what their author likely meant.
pub(super) fn hsts_warnings(raw: &raw::RawHsts, warnings: &mut Problems) {
    if raw.max_age == 0 {
        warnings.push("hsts.max_age", ProblemKind::HstsOff);
    }
    if raw.preload && (!raw.include_subdomains || raw.max_age < 31_536_000) {
        warnings.push("hsts.preload", ProblemKind::PreloadIneligible);
    }
}

pub(super) fn hsts_value(raw: &raw::RawHsts) -> HeaderValue {
    let mut value = format!("max-age={}", raw.max_age);
    if raw.include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if raw.preload {
        value.push_str("; preload");
    }
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("max-age=63072000"))
}
