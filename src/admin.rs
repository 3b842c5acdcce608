//! The admin listener: health, readiness, metrics and reload, on a loopback or private address
//! only (validated with the config). Plain HTTP/1.1; every request is written to the
//! operational log.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::audit::{Audit, AuditRecord, now};
use crate::metrics::Metrics;
use crate::reload::Reloader;

/// What the admin endpoints read and act on.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// For the dropped-lines gauge.
    pub access_log: Arc<AccessLog>,
    /// For `POST /reload`.
    pub reloader: Arc<Reloader>,
    /// Cancelled when shutting down: readiness goes false.
    pub shutdown: CancellationToken,
    /// Admin requests are audited.
    pub audit: Arc<Audit>,
}

impl Admin {
    /// Serves the admin listener until shutdown.
    pub fn spawn(self, listener: TcpListener, tracker: &TaskTracker) {
        let shutdown = self.shutdown.clone();
        tracker.spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    () = shutdown.cancelled() => return,
                };
                let admin = self.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let admin = admin.clone();
                        async move { Ok::<_, Infallible>(admin.handle(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(std::time::Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let (status, body) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => (StatusCode::OK, "ok\n".to_owned()),
            (&Method::GET, "/readyz") if self.shutdown.is_cancelled() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down\n".to_owned(),
            ),
            (&Method::GET, "/readyz") => (StatusCode::OK, "ready\n".to_owned()),
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                self.metrics.render(self.access_log.dropped()),
            ),
            (&Method::POST, "/reload") => {
                let reloader = self.reloader.clone();
                match tokio::task::spawn_blocking(move || reloader.reload_file("admin")).await {
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
            (_, "/healthz" | "/readyz" | "/metrics" | "/reload") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".to_owned(),
            ),
            _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
        };
        let path = match request.uri().path() {
            p @ ("/healthz" | "/readyz" | "/metrics" | "/reload") => p,
            _ => "other",
        };
        tracing::info!(%method, path, status = status.as_u16(), "admin request");
        self.audit.record(AuditRecord::Admin {
            ts: now(),
            method: method.to_string(),
            path: path.to_owned(),
            status: status.as_u16(),
        });
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    }
}
