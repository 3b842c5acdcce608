//! What needs both the values and the files: every name clients reach by TLS has a
//! certificate, from a file or over ACME, and no ACME name is also served from a file. It runs
//! only once both passed, so a certificate file that could not be read never makes the hosts
//! it would have covered look uncovered.

use super::problems::{Key, Problems};
use super::{AcmeSettings, ProblemKind, RouteConfig, TunnelConfig};
use crate::certs::CertStore;
use crate::host::HostPattern;

/// The checked routes, tunnels and ACME names against the certificates read. Phase 1 passed,
/// so `routes` and `tunnels` hold one entry per table, in file order.
pub(super) fn check(
    routes: &[RouteConfig],
    tunnels: &[TunnelConfig],
    acme: Option<&AcmeSettings>,
    certificates: &CertStore,
) -> Result<(), Problems> {
    let mut problems = Problems::default();
    let acme_names = acme.map_or(&[][..], |acme| &acme.domains);
    let mut require = |host: &HostPattern, key: Key| {
        let by_acme = acme_names
            .iter()
            .any(|name| HostPattern::parse(name).is_ok_and(|name| name == *host));
        if !by_acme && !certificates.covers(host) {
            problems.push(key, ProblemKind::Uncovered(host.to_string()));
        }
    };
    for (i, route) in routes.iter().enumerate() {
        require(&route.host, Key::new("routes").index(i).field("host"));
    }
    for (i, tunnel) in tunnels.iter().enumerate() {
        let host = HostPattern::Exact(tunnel.host.clone());
        require(&host, Key::new("tunnels").index(i).field("host"));
    }
    for (i, name) in acme_names.iter().enumerate() {
        let Ok(pattern) = HostPattern::parse(name) else {
            continue;
        };
        if certificates.covers(&pattern) {
            let key = Key::new("tls.acme.domains").index(i);
            problems.push(key, crate::config::AcmeProblem::AndFile(name.clone()));
        }
    }
    problems.or(())
}
