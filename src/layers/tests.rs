//! The TLS listener's layers called directly with `oneshot`, no socket, no handshake: what
//! routing and the gateway let through reaches the inner service (a recorder standing in for
//! the proxy); everything else is answered here, with HSTS, and never reaches it.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HOST, STRICT_TRANSPORT_SECURITY};
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use tower::{ServiceExt, service_fn};

use super::https_layers;
use crate::access_log::AccessLog;
use crate::access_requests::{AccessRequest, RequestsFile, State, Target};
use crate::app::{App, LiveApp, Process};
use crate::audit::{Audit, Timestamp};
use crate::body::ResponseBody;
use crate::config::{Config, LogSettings};
use crate::connection::{ClientIdentity, ConnectionInfo, TlsVersion, Trust, forwarded_for};
use crate::error::ProxyError;
use crate::gateway::MfaState;
use crate::gateway::{Admitted, Pass};
use crate::host::HostPattern;
use crate::metrics::Metrics;

struct Harness {
    live: LiveApp,
    reached: Arc<Mutex<Vec<String>>>,
    _certs: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let certs = tempfile::tempdir().unwrap();
        crate::dev_certs::ensure(certs.path()).unwrap();
        let secret = certs.path().join("carol.totp");
        std::fs::write(&secret, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let dir = certs.path().display();
        let toml = format!(
            r#"
environment = "test"
[listen]
https = "127.0.0.1:0"
[[tls.certificates]]
cert = "{dir}/localhost.crt"
key = "{dir}/localhost.key"
[networks]
test = ["127.0.0.0/8"]
[upstreams.app]
environment = "test"
addrs = ["127.0.0.1:9"]
[[routes]]
host = "localhost"
upstream = "app"
[[routes]]
host = "localhost"
path_prefix = "/internal"
upstream = "app"
internal = true
allow = ["alice", "group:ops"]
[[routes]]
host = "localhost"
path_prefix = "/mfa"
upstream = "app"
internal = true
allow = ["carol"]
mfa = true
[gateway]
client_ca = "{dir}/ca.crt"
[gateway.users.alice]
[gateway.users.bob]
groups = ["dev"]
[gateway.users.dave]
groups = ["ops"]
[gateway.users."eve\u0007"]
groups = ["ops"]
[gateway.users.carol]
totp_secret_file = "{dir}/carol.totp"
"#
        );
        let config = Config::from_raw(toml::from_str(&toml).unwrap()).unwrap();
        let audit = Arc::new(Audit::new(&LogSettings::default()).unwrap());
        let metrics = Arc::new(Metrics::new());
        let process = Process {
            access_log: Arc::new(AccessLog::start(LogSettings::default()).unwrap()),
            rate_limits: crate::rate_limit::RateLimits::new(metrics.clone(), None),
            metrics,
            ticketer: crate::tls::ticketer().unwrap(),
            acme: None,
            mfa: Arc::new(MfaState::new(None, None).unwrap()),
            assertions: Arc::new(crate::gateway::Assertions::new(None).unwrap()),
            audit: audit.clone(),
            access_grants: Arc::new(crate::gateway::AccessGrants::new(audit)),
        };
        let app = App::new(&config, 443, &process).unwrap();
        Self {
            live: Arc::new(ArcSwap::from_pointee(app)),
            reached: Arc::default(),
            _certs: certs,
        }
    }

    /// A connection whose handshake showed the localhost certificate and, when `employee` is
    /// given, a client certificate of that name the gateway in service already verified.
    fn connection(&self, employee: Option<&str>) -> Arc<ConnectionInfo> {
        let peer: SocketAddr = "127.0.0.9:50000".parse().unwrap();
        let verified_under = self
            .live
            .load()
            .gateway
            .as_ref()
            .map_or(0, |g| g.generation);
        Arc::new(ConnectionInfo {
            client_ip: peer.ip(),
            forwarded_for: forwarded_for(peer.ip()),
            // The certificate this connection was shown covers these two names only.
            certificate: Arc::from([
                HostPattern::Exact("localhost".into()),
                HostPattern::Exact(IpAddr::from([127, 0, 0, 1]).to_string()),
            ]),
            tls_version: TlsVersion::Tls13,
            sni: Some("localhost".into()),
            client: employee.map(|user| ClientIdentity {
                user: user.to_owned(),
                fingerprint: [7; 32],
                chain: Arc::from([]),
                expires: std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
            }),
            trusted_under: verified_under.into(),
            trust: Trust::default(),
        })
    }

    /// Sends one request through every layer on a connection of `employee`; the inner
    /// service records the path it received and the user the gateway vouched for.
    async fn send_as(
        &self,
        employee: Option<&str>,
        request: Request<Full<Bytes>>,
    ) -> Response<impl http_body::Body<Data = Bytes, Error: std::fmt::Debug>> {
        let reached = self.reached.clone();
        let inner = service_fn(move |admitted: Admitted<Full<Bytes>>| {
            let employee = match admitted.pass() {
                Pass::Forward(forward) => forward.employee.as_ref(),
                _ => None,
            };
            let user = employee
                .and_then(|u| u.to_str().ok())
                .map(|u| format!(" as {u}"))
                .unwrap_or_default();
            reached
                .lock()
                .unwrap()
                .push(format!("{}{user}", admitted.request().uri().path()));
            std::future::ready(Ok::<_, ProxyError>(Response::new(ResponseBody::full("up"))))
        });
        https_layers(
            &self.live,
            &self.connection(employee),
            &tokio_util::sync::CancellationToken::new(),
            inner,
        )
        .oneshot(request)
        .await
        .unwrap()
    }

    /// The status and body of `request` sent as `employee`.
    async fn answer(
        &self,
        employee: Option<&str>,
        request: Request<Full<Bytes>>,
    ) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        let response = self.send_as(employee, request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Writes `requests` as the gateway's requests file and has it read.
    fn grant(&self, requests: Vec<AccessRequest>) {
        let app = self.live.load();
        let gateway = app.gateway.as_ref().unwrap();
        let path = &gateway.settings.requests;
        std::fs::write(path, RequestsFile { requests }.to_json()).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        gateway
            .access_grants
            .refresh(Some(path), std::time::SystemTime::now());
    }

    /// Sends `request` and returns its status and what reached the inner service.
    async fn outcome(
        &self,
        employee: Option<&str>,
        request: Request<Full<Bytes>>,
    ) -> (StatusCode, Vec<String>) {
        self.reached.lock().unwrap().clear();
        let response = self.send_as(employee, request).await;
        assert!(
            response.headers().contains_key(STRICT_TRANSPORT_SECURITY),
            "no HSTS"
        );
        (response.status(), self.reached.lock().unwrap().clone())
    }
}

fn get(host: &str, target: &str) -> Request<Full<Bytes>> {
    Request::get(target)
        .header(HOST, host)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn only_what_routes_reaches_the_inner_service_and_every_answer_has_hsts() {
    let harness = Harness::new();
    let mut two_hosts = get("localhost", "/");
    two_hosts
        .headers_mut()
        .append(HOST, "evil.test".parse().unwrap());
    let cases = [
        (get("localhost", "/a/b"), StatusCode::OK, Some("/a/b")),
        // Normalised before routing and before the inner service sees it.
        (
            get("localhost", "/a/./c/../b"),
            StatusCode::OK,
            Some("/a/b"),
        ),
        (
            get("localhost", "/%2e%2e/etc/passwd"),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (get("localhost", "/a%2fb"), StatusCode::BAD_REQUEST, None),
        (two_hosts, StatusCode::BAD_REQUEST, None),
        // Covered by the connection's certificate, but no route.
        (get("127.0.0.1", "/"), StatusCode::NOT_FOUND, None),
        // Not covered by the certificate this connection was shown: domain fronting.
        (get("evil.test", "/"), StatusCode::MISDIRECTED_REQUEST, None),
        // The proxy's own namespace is never forwarded, whatever the routes say.
        (
            get("localhost", "/.portcullis/x"),
            StatusCode::NOT_FOUND,
            None,
        ),
    ];
    for (request, status, forwarded_as) in cases {
        let target = format!("{:?} {}", request.headers().get(HOST), request.uri());
        let outcome = harness.outcome(None, request).await;
        let expected = (
            status,
            forwarded_as
                .map(str::to_owned)
                .into_iter()
                .collect::<Vec<_>>(),
        );
        assert_eq!(outcome, expected, "{target}");
    }
}

#[tokio::test]
async fn internal_routes_pass_only_granted_employees_and_vouch_for_them() {
    let harness = Harness::new();
    let cases = [
        (None, "/internal/x", StatusCode::FORBIDDEN, None),
        (Some("mallory"), "/internal/x", StatusCode::FORBIDDEN, None),
        (Some("bob"), "/internal/x", StatusCode::FORBIDDEN, None),
        (
            Some("alice"),
            "/internal/x",
            StatusCode::OK,
            Some("/internal/x as alice"),
        ),
        (
            Some("dave"),
            "/internal/x",
            StatusCode::OK,
            Some("/internal/x as dave"),
        ),
        // Granted, but a name no header can carry: refused, never forwarded unnamed.
        (Some("eve\u{7}"), "/internal/x", StatusCode::FORBIDDEN, None),
        // Granted, but no second factor yet: the form, and nothing forwarded.
        (Some("carol"), "/mfa/x", StatusCode::UNAUTHORIZED, None),
        // A public route on the same host: no identity needed, none vouched for.
        (None, "/public", StatusCode::OK, Some("/public")),
        (Some("alice"), "/public", StatusCode::OK, Some("/public")),
    ];
    for (employee, path, status, forwarded) in cases {
        let outcome = harness.outcome(employee, get("localhost", path)).await;
        let expected = (
            status,
            forwarded.map(str::to_owned).into_iter().collect::<Vec<_>>(),
        );
        assert_eq!(outcome, expected, "{employee:?} {path}");
    }
}

#[tokio::test]
async fn a_configured_employee_is_told_why_and_a_running_grant_admits_them() {
    let harness = Harness::new();
    let internal = || get("localhost", "/internal/x");
    // Nobody, or a certificate of nobody configured: the status alone.
    for stranger in [None, Some("mallory")] {
        let answer = harness.answer(stranger, internal()).await;
        assert_eq!(
            answer,
            (StatusCode::FORBIDDEN, "Forbidden\n".into()),
            "{stranger:?}"
        );
    }
    let told = (
        StatusCode::FORBIDDEN,
        "no grant for localhost/internal\n".to_owned(),
    );
    assert_eq!(harness.answer(Some("bob"), internal()).await, told);

    let now = std::time::SystemTime::now();
    let hour = std::time::Duration::from_secs(3600);
    let request = |id, at: std::time::SystemTime, until: std::time::SystemTime| AccessRequest {
        id,
        user: "bob".into(),
        target: Target::Route("localhost/internal".into()),
        seconds: until.duration_since(at).unwrap().as_secs(),
        reason: "TICKET-1".into(),
        requested_at: Timestamp(at),
        operator: "root".into(),
        state: State::Approved {
            by: "alice".into(),
            at: Timestamp(at),
            until: Timestamp(until),
        },
    };
    harness.grant(vec![request(1, now - 2 * hour, now - hour)]);
    assert_eq!(
        harness.answer(Some("bob"), internal()).await,
        told,
        "an ended grant"
    );
    harness.grant(vec![request(2, now - hour, now + hour)]);
    let outcome = harness.outcome(Some("bob"), internal()).await;
    assert_eq!(
        outcome,
        (StatusCode::OK, vec!["/internal/x as bob".to_owned()])
    );
    // The grant is for that route alone.
    let (status, _) = harness
        .answer(Some("bob"), get("localhost", "/mfa/x"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
