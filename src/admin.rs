//! The admin listener: health, readiness, metrics, the certificates in service and reload. Plain HTTP/1.1 on loopback, or,
//! with `[admin] allow`, mutual TLS where only granted employees are answered (validated with
//! the config). Connections are accepted with the public listeners' rules and a limit of their
//! own. Every request is audited but probes and scrapes (`GET` of `/healthz`, `/livez`,
//! `/readyz`, `/metrics`, `/certificates`), which are counted instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::{LiveApp, Process};
use crate::audit::Trigger;
use crate::connection::ClientIdentity;
use crate::health::Readiness;
use crate::lifecycle::Lifecycle;
use crate::metrics::Probe;
use crate::reload::Reloader;
use crate::server::Server;

/// Admin connections open at once; operators need few, and no client can hold more.
const MAX_ADMIN_CONNECTIONS: usize = 16;
/// Handshake and request-head deadline.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints read and act on.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The writers and the metrics.
    pub process: Process,
    /// The generation in service: its certificates, gateway and `[admin] allow`.
    pub live: LiveApp,
    /// For `POST /reload`.
    pub reloader: Arc<Reloader>,
    /// Shutdown: readiness goes false as soon as the process is leaving; connections end when
    /// draining starts.
    pub lifecycle: Lifecycle,
}

/// Who is asking, on a mutual-TLS admin listener.
#[derive(Debug, Clone)]
enum Caller {
    /// Plain HTTP on loopback.
    Local,
    /// A granted employee.
    Granted(String),
    /// A verified employee without the grant: every request is 403.
    Refused(String),
}

impl Admin {
    /// Serves the admin listener until shutdown, with `server`'s accept rules.
    pub fn spawn(self, listener: TcpListener, server: &Arc<Server>) {
        let admin = Arc::new(self);
        let limit = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
        server.spawn_listener(listener, limit, move |stream, _, _| {
            admin.clone().serve(stream)
        });
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let app = self.live.load_full();
        if app.fixed.admin_allow().is_empty() {
            return self.serve_http(TokioIo::new(stream), Caller::Local).await;
        }
        let Some(gateway) = &app.gateway else { return };
        let Ok(config) = crate::tls::admin_config(app.certs.clone(), &gateway.settings) else {
            return;
        };
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        let Ok(Ok(tls)) = tokio::time::timeout(ADMIN_TIMEOUT, accept).await else {
            return;
        };
        let Some(client) = ClientIdentity::from_session(tls.get_ref().1) else {
            return;
        };
        let granted = gateway
            .settings
            .users
            .get(&client.user)
            .is_some_and(|user| {
                app.fixed
                    .admin_allow()
                    .iter()
                    .any(|g| g.admits(&client.user, &user.groups))
            });
        let caller = if granted {
            Caller::Granted(client.user)
        } else {
            Caller::Refused(client.user)
        };
        self.serve_http(TokioIo::new(tls), caller).await;
    }

    async fn serve_http<I>(self: Arc<Self>, io: TokioIo<I>, caller: Caller)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let lifecycle = self.lifecycle.clone();
        let service = hyper::service::service_fn(move |request| {
            let (admin, caller) = (self.clone(), caller.clone());
            async move { Ok::<_, Infallible>(admin.handle(request, &caller).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(ADMIN_TIMEOUT)
            .serve_connection(io, service);
        lifecycle.serve(conn).await;
    }

    async fn handle(&self, request: Request<Incoming>, caller: &Caller) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = match request.uri().path() {
            p @ ("/healthz" | "/livez" | "/readyz" | "/metrics" | "/certificates" | "/reload") => p,
            _ => "other",
        };
        let readiness = Readiness {
            lifecycle: self.lifecycle.clone(),
            audit: self.process.audit.clone(),
        };
        let metrics = &self.process.metrics;
        let (status, body) = match (&method, path) {
            _ if matches!(caller, Caller::Refused(_)) => {
                (StatusCode::FORBIDDEN, "forbidden\n".to_owned())
            }
            (&Method::GET, "/healthz" | "/livez") => readiness.answer(Probe::Live, metrics),
            (&Method::GET, "/readyz") => readiness.answer(Probe::Ready, metrics),
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                metrics.render(&[
                    ("access", self.process.access_log.health()),
                    ("audit", self.process.audit.health()),
                ]),
            ),
            (&Method::GET, "/certificates") => (StatusCode::OK, certificates(metrics)),
            (&Method::POST, "/reload") => self.reload().await,
            (_, "other") => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".to_owned(),
            ),
        };
        let user = match caller {
            Caller::Local => "-",
            Caller::Granted(user) | Caller::Refused(user) => user.as_str(),
        };
        // Probes and scrapes come every few seconds and change nothing: counted, not logged,
        // so that the trail keeps what people did.
        let probe = method == Method::GET
            && matches!(
                path,
                "/healthz" | "/livez" | "/readyz" | "/metrics" | "/certificates"
            )
            && !matches!(caller, Caller::Refused(_));
        if probe {
            tracing::debug!(path, status = status.as_u16(), "admin probe");
        } else {
            tracing::info!(%method, path, status = status.as_u16(), "admin request");
            self.process
                .audit
                .admin(user, method.as_str(), path, status.as_u16());
        }
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    }

    /// `POST /reload`: the file re-read; a refusal is logged with its reasons, as SIGHUP's is.
    async fn reload(&self) -> (StatusCode, String) {
        let reloader = self.reloader.clone();
        match tokio::task::spawn_blocking(move || reloader.reload_file(Trigger::Admin)).await {
            Ok(Ok(())) => (StatusCode::OK, "reloaded\n".to_owned()),
            Ok(Err(e)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("reload refused:\n{e}\n"),
            ),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "reload failed\n".to_owned(),
            ),
        }
    }
}

/// `GET /certificates`: every certificate in service, its source, when it expires and, from
/// ACME, how its names are validated and when it is next renewed; JSON, times in RFC 3339.
fn certificates(metrics: &crate::metrics::Metrics) -> String {
    let time = |t: std::time::SystemTime| {
        time::OffsetDateTime::from(t)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let list: Vec<serde_json::Value> = metrics
        .certificate_status()
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "names": c.names,
                "source": c.source,
                "not_after": time(c.not_after),
                "challenge": c.challenge,
                "next_renewal": c.renewal.map(time),
            })
        })
        .collect();
    format!("{}\n", serde_json::json!({ "certificates": list }))
}
