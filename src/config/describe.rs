//! What `portcullis check` prints: the sockets, hosts and routes a config exposes, so that a
//! reviewer can read the attack surface without reading the TOML.

use std::fmt::Write;

use super::{Config, RouteAccess, RouteAction, UpstreamConfig};

/// A human-readable summary of what `config` exposes.
mod acme;

pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "config is valid (environment {:?})",
        config.environment
    );
    let _ = writeln!(out, "listeners:");
    if let Some(http) = config.listen.http {
        let _ = writeln!(out, "  http   {http}  (redirects to https only)");
    }
    let _ = writeln!(
        out,
        "  https  {}  (TLS 1.2/1.3, h2 + http/1.1)",
        config.listen.https
    );
    if !config.listen.proxy_protocol_from.is_empty() {
        let ranges: Vec<String> = config
            .listen
            .proxy_protocol_from
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(
            out,
            "  PROXY protocol required from {} (and refused from anywhere else)",
            ranges.join(", ")
        );
    }
    let _ = writeln!(out, "certificates:");
    for (i, cert) in config.certificates.entries().iter().enumerate() {
        let names: Vec<String> = cert.names.iter().map(ToString::to_string).collect();
        let default = if i == 0 {
            "  (default without SNI)"
        } else {
            ""
        };
        let expires = acme::date(cert.not_after);
        let _ = writeln!(out, "  {}{default}, expires {expires}", names.join(", "));
    }
    if let Some(acme) = &config.acme {
        acme::describe(acme, &mut out);
    }
    let _ = writeln!(out, "routes:");
    for route in &config.routes {
        let upstream = match route.action {
            RouteAction::Forward(id) => config.upstream(id),
            RouteAction::Respond { status, .. } => {
                let _ = writeln!(out, "  {} -> responds {status} itself", route.name());
                continue;
            }
        };
        let _ = writeln!(out, "  {} -> {}", route.name(), upstream.name);
        describe_addrs(upstream, &mut out);
        let _ = writeln!(out, "       {}", describe_resilience(&upstream.resilience));
    }
    describe_exposure(config, &mut out);
    if let Some(gateway) = &config.gateway {
        let now = std::time::SystemTime::now();
        let soon = gateway.crl_updates.iter().filter(|crl| {
            crl.next_update
                .is_some_and(|next| next > now && next <= now + super::CRL_TIMER_PERIOD)
        });
        for crl in soon {
            let _ = writeln!(
                out,
                "warning: {} expires within portcullis-crl.timer's period ({}): run `portcullis employees refresh-crl` now, or every client certificate it covers is refused when it does",
                crl.key,
                humantime::format_duration(super::CRL_TIMER_PERIOD)
            );
        }
        for crl in gateway.expired_crls(now) {
            let since = crl
                .next_update
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "warning: {} expired at {since}: every client certificate it covers is refused until a fresh list is installed",
                crl.key
            );
        }
    }
    out
}

/// Where an upstream's addresses land: environment and network.
fn describe_addrs(upstream: &UpstreamConfig, out: &mut String) {
    for addr in &upstream.addrs {
        let network = match addr.ip {
            Some(ip) => upstream
                .networks
                .iter()
                .find(|net| net.contains(&ip.ip().to_canonical()))
                .map_or_else(String::new, ToString::to_string),
            None => "checked at every connect".to_owned(),
        };
        let _ = writeln!(
            out,
            "       {addr}  environment {:?}, network {network}",
            upstream.environment
        );
    }
}

/// What one client address may send, and where each limit is counted.
fn describe_limits(config: &Config, out: &mut String) {
    let alone = " (counted by each instance)";
    let shared = match (&config.shared.redis, &config.shared.session_key) {
        (Some(redis), Some(_)) => format!(
            " (counted across instances in Redis {})",
            config.upstream(redis.upstream).name
        ),
        _ => alone.to_owned(),
    };
    let mut limits: Vec<String> = Vec::new();
    if let Some(rate) = &config.connection_rate {
        limits.push(format!(
            "new connections per client: {rate}, closed at accept beyond it{alone}"
        ));
    }
    for route in &config.routes {
        if let Some(rate) = &route.limit {
            let name = route.name();
            limits.push(format!(
                "{name} requests per client: {rate}, 429 beyond it{shared}"
            ));
        }
    }
    if let Some(gateway) = &config.gateway {
        let forms = gateway.mfa_rate;
        limits.push(format!("second-factor forms per client: {forms}{alone}"));
        if !config.tunnels.is_empty() {
            let connects = gateway.connect_rate;
            limits.push(format!("tunnel CONNECTs per client: {connects}{alone}"));
        }
    }
    if limits.is_empty() {
        let _ = writeln!(out, "  rate limits: none");
    }
    for limit in limits {
        let _ = writeln!(out, "  limit {limit}");
    }
}

/// How an upstream's addresses are picked, checked, ejected and retried, on one line.
fn describe_resilience(resilience: &super::Resilience) -> String {
    use super::{Balance, ProbeKind};
    let balance = match resilience.balance {
        Balance::P2c => "p2c (fewest in flight)",
        Balance::RoundRobin => "round-robin",
    };
    let health = match &resilience.health {
        Some(check) => {
            let probe = match &check.probe {
                ProbeKind::Tcp => "tcp".to_owned(),
                ProbeKind::Http { path, .. } => format!("GET {path}"),
            };
            format!(
                "health {probe} every {}, down after {}, up after {}",
                humantime::format_duration(check.interval),
                check.unhealthy,
                check.healthy
            )
        }
        None => "no health check".to_owned(),
    };
    let outlier = match &resilience.outlier {
        Some(o) => format!(
            "ejected after {} failures for {}..{}, at most {}%",
            o.consecutive,
            humantime::format_duration(o.base_ejection),
            humantime::format_duration(o.max_ejection),
            o.max_ejected_percent
        ),
        None => "never ejected".to_owned(),
    };
    format!(
        "{balance}; {health}; {outlier}; {} retries within {}% of requests",
        resilience.retries,
        (resilience.retry_budget * 100.0).round()
    )
}

/// Who passes the gateway: `client certificate[ + TOTP]; allowed: ...`.
fn who_passes(access: &RouteAccess) -> String {
    let who: Vec<String> = access.allow.iter().map(ToString::to_string).collect();
    let who = if who.is_empty() {
        "nobody".to_owned()
    } else {
        who.join(", ")
    };
    let mfa = if access.mfa { " + TOTP" } else { "" };
    format!("client certificate{mfa}; allowed: {who}")
}

/// The attack surface at a glance: sockets and who can reach them, peerings and refusals.
fn describe_exposure(config: &Config, out: &mut String) {
    let _ = writeln!(out, "exposure:");
    let sockets = [
        ("http", config.listen.http),
        ("https", Some(config.listen.https)),
        ("admin", config.admin.as_ref().map(|a| a.listen)),
        ("health", config.health.as_ref().map(|h| h.listen)),
    ];
    for (name, addr) in sockets {
        if let Some(addr) = addr {
            let _ = writeln!(out, "  socket {name:<6} {addr:<22} {}", reach_of(addr.ip()));
        }
    }
    if let Some(health) = &config.health {
        let nets: Vec<String> = health.allow.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  health: /livez and /readyz, plain HTTP, answered only to {}",
            nets.join(", ")
        );
    }
    if config.peerings.is_empty() {
        let _ = writeln!(
            out,
            "  peerings: none (only environment {:?} is reachable)",
            config.environment
        );
    }
    for peering in &config.peerings {
        let nets: Vec<String> = peering
            .to_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(
            out,
            "  peering {} -> {} ({}): one-way; clients from there are refused",
            peering.from,
            peering.to,
            nets.join(", ")
        );
    }
    describe_limits(config, out);
    for route in &config.routes {
        if let Some(access) = &route.access {
            let _ = writeln!(out, "  internal {}: {}", route.name(), who_passes(access));
        }
    }
    for tunnel in &config.tunnels {
        let upstream = config.upstream(tunnel.upstream);
        let _ = writeln!(
            out,
            "  tunnel {} -> {}: {}; idle timeout {}",
            tunnel.name(),
            upstream.name,
            who_passes(&tunnel.access),
            humantime::format_duration(tunnel.idle_timeout)
        );
        if let Some(pg) = &tunnel.postgres {
            let writes = if !pg.read_only {
                "changes audited".to_owned()
            } else if pg.allow_write.is_empty() {
                "read-only".to_owned()
            } else {
                let writers: Vec<String> = pg.allow_write.iter().map(ToString::to_string).collect();
                format!("read-only but for {}", writers.join(", "))
            };
            let _ = writeln!(
                out,
                "    postgres over TLS to {} (CA {}); {writes}",
                pg.server_name.to_str(),
                pg.tls_ca.display()
            );
        }
        describe_addrs(upstream, out);
    }
    if config.gateway.is_some() {
        let key = match config.shared.session_key {
            Some(_) => "sessions signed with shared.session_key_file",
            None => "sessions signed with a key made at start (this instance only)",
        };
        let _ = writeln!(out, "  second factor: {key}");
        match &config.shared.redis {
            Some(redis) => {
                let upstream = config.upstream(redis.upstream);
                let transport = match &redis.tls {
                    Some(tls) => format!("TLS, certificate for {}", tls.server_name.to_str()),
                    None => "plain TCP".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "  second factor: codes, lockouts and tunnel sessions shared in Redis {} ({transport})",
                    upstream.name
                );
                describe_addrs(upstream, out);
            }
            None => {
                let _ = writeln!(
                    out,
                    "  second factor: codes and lockouts counted by this instance alone"
                );
            }
        }
    }
    let refused: Vec<String> = config
        .refused_clients
        .iter()
        .map(
            |net| match config.environments.environment_of(net.network()) {
                Some(env) if env != config.environment => format!("{net} (environment {env})"),
                _ => format!("{net} (deny_clients)"),
            },
        )
        .collect();
    if !refused.is_empty() {
        let _ = writeln!(out, "  refused at accept: {}", refused.join(", "));
    }
}

fn reach_of(ip: std::net::IpAddr) -> &'static str {
    if ip.is_loopback() {
        "loopback: this machine only"
    } else if ip.is_unspecified() {
        "PUBLIC: every interface"
    } else if crate::networks::check_private(&ipnet::IpNet::from(ip)).is_ok() {
        "private network"
    } else {
        "PUBLIC"
    }
}
