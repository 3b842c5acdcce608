//! A real HTTP/1.1 upstream on loopback that reports what it received.
//!
//! `GET` answers with the request line and every header it saw, one per line; `POST` streams the
//! request body back. Special paths: `/slow/<ms>`, `/bytes/<n>`, `/hop` (hop-by-hop, HSTS and
//! `X-Request-Id` headers of its own), `/collect` (reads the whole body, then echoes it), `/ws` (accepts a websocket upgrade and echoes), `/no-upgrade` (ignores
//! an Upgrade request), `/reset` (reads the whole request, then drops the connection without
//! answering), `/healthz` (answers the status [`Upstream::set_health`] set; not counted in
//! `hits` or `targets`). [`Upstream::set_delay`] slows every answer; [`Upstream::kill`] stops it
//! as a crashed server stops: no more connections, every open one dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<String>>>,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    control: Arc<Control>,
}

/// How a test changes a running upstream's answers.
#[derive(Default)]
struct Control {
    /// `/healthz`'s status; 0 means 200.
    health: AtomicU16,
    health_probes: AtomicUsize,
    delay_ms: AtomicU64,
    killed: tokio_util::sync::CancellationToken,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (counter, log, opened) = (hits.clone(), targets.clone(), open.clone());
        let accepts = accepted.clone();
        let control = Arc::new(Control::default());
        let controls = control.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = controls.killed.cancelled() => return,
                };
                let Ok((stream, _)) = accepted else { return };
                let (counter, log, opened) = (counter.clone(), log.clone(), opened.clone());
                let control = controls.clone();
                opened.fetch_add(1, Ordering::SeqCst);
                accepts.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let controls = control.clone();
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (counter, log, control) =
                            (counter.clone(), log.clone(), control.clone());
                        async move {
                            if req.uri().path() == "/healthz" {
                                return Ok(health(&control));
                            }
                            counter.fetch_add(1, Ordering::SeqCst);
                            log.lock().unwrap().push(req.uri().to_string());
                            let delay = control.delay_ms.load(Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            if req.uri().path() == "/reset" {
                                let _ = req.into_body().collect().await;
                                return Err("reset after reading the request");
                            }
                            handle(req).await.map_err(|never| match never {})
                        }
                    });
                    let serving = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::select! {
                        _ = serving => {}
                        () = controls.killed.cancelled() => {}
                    }
                    opened.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            hits,
            targets,
            open,
            accepted,
            control,
        }
    }

    /// Stops it as a crashed server stops: the listener closes and every connection drops.
    pub fn kill(&self) {
        self.control.killed.cancel();
    }

    /// The status `/healthz` answers from now on.
    pub fn set_health(&self, status: u16) {
        self.control.health.store(status, Ordering::SeqCst);
    }

    /// `/healthz` requests received so far.
    pub fn health_probes(&self) -> usize {
        self.control.health_probes.load(Ordering::SeqCst)
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.control.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Request targets received so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }

    /// Connections open now (an upgraded one counts until it switches protocols).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn health(control: &Control) -> Response<Body> {
    control.health_probes.fetch_add(1, Ordering::SeqCst);
    let status = match control.health.load(Ordering::SeqCst) {
        0 => 200,
        status => status,
    };
    Response::builder()
        .status(status)
        .body(full("health"))
        .unwrap()
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let seen_target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let mut response = if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        Response::new(full("slow"))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        Response::new(full(vec![b'x'; n.parse().unwrap_or(0)]))
    } else if path == "/hop" {
        Response::builder()
            .header("strict-transport-security", "max-age=0")
            .header("connection", "x-private")
            .header("x-private", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-public", "ok")
            .header("x-request-id", "upstream-chosen")
            .body(full("hop"))
            .unwrap()
    } else if path == "/ws" && req.headers().contains_key("upgrade") {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(""))
            .unwrap()
    } else if path == "/collect" {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        match body {
            Ok(bytes) => Response::new(full(bytes)),
            Err(_) => Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(full(""))
                .unwrap(),
        }
    } else if req.method() == http::Method::POST {
        Response::new(req.into_body().boxed())
    } else {
        let mut text = format!("{} {}\n", req.method(), seen_target);
        for (name, value) in req.headers() {
            text.push_str(&format!(
                "{}: {}\n",
                name,
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        Response::new(full(text))
    };
    response.headers_mut().insert(
        "x-seen-target",
        seen_target.parse().unwrap_or_else(|_| "?".parse().unwrap()),
    );
    Ok(response)
}

/// The values of header `name` in an echo body.
pub fn seen(echo: &str, name: &str) -> Vec<String> {
    echo.lines()
        .skip(1)
        .filter_map(|line| line.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned())
        .collect()
}

/// A TCP server that echoes what it reads until EOF, counting the connections it accepted.
pub struct Echo {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        Self { addr, accepted }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
