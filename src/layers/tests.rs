//! The TLS listener's layers called directly with `oneshot`, no socket, no handshake: what
//! routing and the gateway let through reaches the inner service (a recorder standing in for
//! the proxy); everything else is answered here, with HSTS, and never reaches it.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HOST, STRICT_TRANSPORT_SECURITY};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio_util::sync::CancellationToken;
use tower::{ServiceExt, service_fn};

use super::https_layers;
use crate::access_log::AccessLog;
use crate::app::{App, LiveApp, Shared};
use crate::audit::Audit;
use crate::body::ResponseBody;
use crate::config::{Config, LogSettings};
use crate::connection::{ConnectionInfo, TlsVersion, forwarded_for};
use crate::error::ProxyError;
use crate::gateway::MfaState;
use crate::host::HostPattern;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::routing::Routed;
use crate::tunnel::Tunnels;

struct Harness {
    live: LiveApp,
    conn: Arc<ConnectionInfo>,
    reached: Arc<Mutex<Vec<String>>>,
    _certs: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let certs = tempfile::tempdir().unwrap();
        crate::dev_certs::ensure(certs.path()).unwrap();
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
"#
        );
        let config = Config::from_raw(toml::from_str(&toml).unwrap()).unwrap();
        let shared = Shared {
            access_log: Arc::new(
                AccessLog::start(LogSettings {
                    dir: None,
                    retention_days: 30,
                    stdout: false,
                    client_hash: false,
                })
                .unwrap(),
            ),
            metrics: Arc::new(Metrics::new()),
            ticketer: crate::tls::ticketer().unwrap(),
            acme: None,
            mfa: Arc::new(MfaState::new().unwrap()),
            audit: Arc::new(Audit::new(None, 30).unwrap()),
        };
        let app = App::new(&config, 443, &shared).unwrap();
        let peer: SocketAddr = "127.0.0.9:50000".parse().unwrap();
        let lease = Arc::new(());
        let conn = ConnectionInfo {
            client_ip: peer.ip(),
            forwarded_for: forwarded_for(peer.ip()),
            // The certificate this connection was shown covers these two names only.
            certificate: Arc::from([
                HostPattern::Exact("localhost".into()),
                HostPattern::Exact(IpAddr::from([127, 0, 0, 1]).to_string()),
            ]),
            tls_version: TlsVersion::Tls13,
            sni: Some("localhost".into()),
            client: None,
            trusted_under: 0.into(),
            revoked: CancellationToken::new(),
            tunnels: Tunnels::new(
                Lifecycle::default(),
                lease,
                Duration::from_secs(5),
                Duration::from_secs(5),
            ),
        };
        Self {
            live: Arc::new(ArcSwap::from_pointee(app)),
            conn: Arc::new(conn),
            reached: Arc::default(),
            _certs: certs,
        }
    }

    /// Sends one request through every layer; returns its status and HSTS header.
    async fn send(&self, request: Request<Full<Bytes>>) -> Response<()> {
        let reached = self.reached.clone();
        let inner = service_fn(move |routed: Routed<Full<Bytes>>| {
            reached
                .lock()
                .unwrap()
                .push(routed.request.uri().path().to_owned());
            std::future::ready(Ok::<_, ProxyError>(Response::new(ResponseBody::full("up"))))
        });
        let response = https_layers(&self.live, &self.conn, inner)
            .oneshot(request)
            .await
            .unwrap();
        response.map(|_| ())
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
        let target = request.uri().to_string();
        harness.reached.lock().unwrap().clear();
        let response = harness.send(request).await;
        assert_eq!(response.status(), status, "{target}");
        assert!(
            response.headers().contains_key(STRICT_TRANSPORT_SECURITY),
            "{target}: no HSTS"
        );
        let reached = harness.reached.lock().unwrap().clone();
        assert_eq!(
            reached,
            forwarded_as
                .map(str::to_owned)
                .into_iter()
                .collect::<Vec<_>>(),
            "{target}"
        );
    }
}
