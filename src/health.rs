//! The health listener for load balancers (`[health] listen`): plain HTTP/1.1 answering
//! `GET /livez` and `GET /readyz` and nothing else, to the networks of `[health] allow` only,
//! without a client certificate. A balancer on another host cannot present an employee
//! certificate to the admin listener; this listener gives it the same answers and nothing more.
//!
//! Probes are counted (`portcullis_health_checks_total`), never logged at INFO nor audited: a
//! balancer asks every few seconds, and the audit trail is for people's access.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::audit::Audit;
use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, Probe};
use crate::server::Server;

/// Health connections open at once: a few balancers each keep at most one or two.
const MAX_HEALTH_CONNECTIONS: usize = 32;
/// Request-head deadline.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the process should get traffic: the answer of `/readyz` on both listeners.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// `leaving` fails readiness at once on shutdown.
    pub lifecycle: Lifecycle,
    /// An audit trail that cannot be written fails it too: a process that cannot keep the
    /// record of access must not be sent any.
    pub audit: Arc<Audit>,
}

impl Readiness {
    /// `Ok` with the body of a 200, or the reason for a 503.
    pub fn check(&self) -> Result<&'static str, String> {
        let health = self.audit.health();
        if self.lifecycle.leaving.is_cancelled() {
            Err("shutting down\n".to_owned())
        } else if health.failing() {
            Err(format!(
                "degraded: the audit trail cannot be written ({} lines held, {} lost)\n",
                health.held(),
                health.dropped_total()
            ))
        } else {
            Ok("ready\n")
        }
    }

    /// The answer to a probe, counted.
    pub fn answer(&self, probe: Probe, metrics: &Metrics) -> (StatusCode, String) {
        let answer = match probe {
            Probe::Live => Ok("ok\n"),
            Probe::Ready => self.check(),
        };
        metrics.health_check(probe, answer.is_ok());
        match answer {
            Ok(body) => (StatusCode::OK, body.to_owned()),
            Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
        }
    }
}

/// The health listener's state.
#[derive(Debug)]
pub struct Health {
    /// What `/readyz` says.
    pub readiness: Readiness,
    /// Where probes are counted.
    pub metrics: Arc<Metrics>,
    /// The networks answered.
    pub allow: Vec<IpNet>,
}

impl Health {
    /// Serves the health listener until shutdown stops accepting (a balancer then sees the
    /// port closed, which it takes as down, as it should by then).
    pub fn spawn(self, listener: TcpListener, server: &Arc<Server>) {
        let health = Arc::new(self);
        let limit = Arc::new(Semaphore::new(MAX_HEALTH_CONNECTIONS));
        server.spawn_listener(listener, limit, move |stream, peer, _| {
            let health = health.clone();
            async move {
                let ip = peer.ip().to_canonical();
                if health.allow.iter().any(|net| net.contains(&ip)) {
                    health.serve(stream).await;
                }
            }
        });
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let lifecycle = self.readiness.lifecycle.clone();
        let service = hyper::service::service_fn(move |request| {
            let answer = self.answer(&request);
            async move { Ok::<_, Infallible>(answer) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEALTH_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        lifecycle.serve(conn).await;
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let probe = match request.uri().path() {
            "/livez" => Some(Probe::Live),
            "/readyz" => Some(Probe::Ready),
            _ => None,
        };
        let (status, body) = match (request.method(), probe) {
            (&Method::GET | &Method::HEAD, Some(probe)) => {
                self.readiness.answer(probe, &self.metrics)
            }
            (_, Some(_)) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".to_owned(),
            ),
            (_, None) => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
        };
        tracing::debug!(?probe, status = status.as_u16(), "health probe");
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    }
}
