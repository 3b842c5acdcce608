//! Who is asking, and on what: a trusted certificate of a configured person, admitted by the
//! route's `allow` list or by an approved access request running now. A refused person the
//! gateway trusts is told why; anyone else learns nothing beyond the status.

use std::time::SystemTime;

use super::{Gateway, Routed};
use crate::access_requests::ActiveGrant;
use crate::config::{RouteAccess, User};
use crate::connection::{ClientIdentity, ConnectionInfo, Distrust};
use crate::error::{ProxyError, Refusal};
use crate::routing::{Action, Route, TunnelError};

impl Gateway {
    /// On what `client`'s user, who must be a configured person, may use the route named
    /// `route` with `access` at `now`: its `allow` list, or an approved request running now.
    pub fn admits(
        &self,
        route: &str,
        access: &RouteAccess,
        client: &ClientIdentity,
        now: SystemTime,
    ) -> Option<Basis> {
        let user = self.settings.users.get(&client.user)?;
        if access
            .allow
            .iter()
            .any(|g| g.admits(&client.user, &user.groups))
        {
            return Some(Basis::Allowed);
        }
        self.access_grants
            .admitting(&client.user, route, now)
            .map(Basis::Granted)
    }

    /// A `CONNECT` on `host` to `target`, which is none of its tunnels: an employee this
    /// gateway trusts is told so and their probe is an audit line with their name; anyone else
    /// learns nothing beyond the status.
    pub fn unknown_target(&self, conn: &ConnectionInfo, host: &str, target: &str) -> ProxyError {
        let employee = conn
            .client
            .as_ref()
            .filter(|client| self.settings.users.contains_key(&client.user))
            .filter(|_| self.still_trusts(conn));
        let Some(client) = employee else {
            return TunnelError::UnknownTarget.into();
        };
        let probed = format!("{host} CONNECT {target}");
        self.audit
            .deny(&probed, &client.user, "no such tunnel target");
        Refusal::NoSuchTarget.into()
    }
}

/// Why someone may use a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// The route's `allow` list names them or a group of theirs.
    Allowed,
    /// An approved access request, until its end.
    Granted(ActiveGrant),
}

impl Basis {
    /// The audit line's reason for an admission on this basis and `how` (`certificate`, ...).
    pub(super) fn reason(&self, how: &str) -> String {
        match self {
            Self::Allowed => how.to_owned(),
            Self::Granted(grant) => format!("{how}; access request {}", grant.id),
        }
    }
}

/// Who is asking for `route`, and on what, if they may: a trusted certificate, made for this
/// very host, of a configured person granted on the route. Refusals are counted into the audit
/// trail; a configured person refused for want of a grant is told so, anyone else nothing.
pub(super) fn identify<'a, B>(
    gateway: &'a Gateway,
    conn: &'a ConnectionInfo,
    routed: &Routed<B>,
    route: &Route,
    access: &RouteAccess,
) -> Result<Identity<'a>, ProxyError> {
    // The connection must have been made for this very host: a certificate that also covers an
    // internal name must not let a public host's connection reach it.
    if conn.sni.as_deref() != Some(routed.host.name.as_str()) {
        return Err(ProxyError::Misdirected);
    }
    let deny = |user: &str, reason: &'static str| {
        gateway.audit.deny(&route.label.name, user, reason);
        ProxyError::Forbidden
    };
    let Some(client) = &conn.client else {
        return Err(deny("-", "no client certificate"));
    };
    if !gateway.still_trusts(conn) {
        let reason = match conn.trust.withdrawn() {
            Some(Distrust::Expired) => "certificate expired",
            _ => "certificate no longer trusted",
        };
        return Err(deny(&client.user, reason));
    }
    let Some(user) = gateway.settings.users.get(&client.user) else {
        return Err(deny(&client.user, "not a configured user"));
    };
    let Some(basis) = gateway.admits(&route.label.name, access, client, SystemTime::now()) else {
        deny(&client.user, "not granted on this route");
        let what = match route.action {
            Action::Tunnel(_) => routed.host.authority.to_string(),
            _ => route.label.name.to_string(),
        };
        return Err(ProxyError::Refused(Refusal::NoGrant(what)));
    };
    Ok(Identity {
        client,
        user,
        basis,
    })
}

/// A person the gateway identified, and why they may use the route.
pub(super) struct Identity<'a> {
    pub(super) client: &'a ClientIdentity,
    pub(super) user: &'a User,
    pub(super) basis: Basis,
}
