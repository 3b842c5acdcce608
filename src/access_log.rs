//! The access log: one JSON line per request, carrying no user information by construction.
//!
//! The request path hands an [`Event`] to a bounded queue and moves on; the writer thread masks
//! the path, drops the query and serialises a [`Record`], whose fields *are* the allow-list:
//! there is no header map, no free-form field, nothing a new piece of code could leak through
//! by accident. Client addresses never reach a line; with `client_hash` on, only a keyed hash
//! whose key lives in memory and changes with the UTC day.

mod mask;
mod render;
mod vocabulary;
mod writer;

use std::net::IpAddr;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, Version};

pub use mask::mask_path;
pub use render::{Record, logged_path, render};

use crate::config::LogSettings;
use crate::connection::TlsVersion;
use crate::daily::LogHealth;
use crate::request_id::RequestId;

/// Lines that may wait for the disk before new ones are dropped (and counted).
const QUEUE_CAPACITY: usize = 65_536;

/// Which listener answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The plain-HTTP redirect listener.
    Http,
    /// The TLS listener.
    Https,
}

/// What the request path knows when a request ends. Only the path is sensitive, and it is
/// masked before it is written.
#[derive(Debug)]
pub struct Event {
    /// When the request ended.
    pub time: SystemTime,
    /// Which listener.
    pub listener: Listener,
    /// HTTP version of the request.
    pub version: Version,
    /// Negotiated TLS version, on the TLS listener.
    pub tls: Option<TlsVersion>,
    /// Request method.
    pub method: Method,
    /// The route that served it, if any.
    pub route: Option<Arc<RouteLabel>>,
    /// The request target (path and query); masked, query dropped, on the writer thread.
    pub target: Option<Box<str>>,
    /// Final status.
    pub status: StatusCode,
    /// Request body bytes read.
    pub request_bytes: u64,
    /// Times the request was sent upstream again (no address: which one is not logged).
    pub retries: u32,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// From request head to the end of the response.
    pub duration: Duration,
    /// Why the proxy answered itself, if it did.
    pub error: Option<&'static str>,
    /// The client address, present only when client hashing is on; never written.
    pub client: Option<IpAddr>,
    /// The id the upstream and the client saw.
    pub request_id: RequestId,
}

/// The route that served a request, as the log and the metrics name it.
#[derive(Debug, Clone)]
pub struct RouteLabel {
    /// `host` + `path_prefix`.
    pub name: Arc<str>,
    /// `path_prefix`, empty for a tunnel.
    pub prefix: Arc<str>,
    /// The upstream's config name, when the route forwards.
    pub upstream: Option<Arc<str>>,
}

enum Message {
    Event(Box<Event>),
    Close,
}

/// The handle the request path logs through.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<Message>,
    health: Arc<LogHealth>,
    hash_clients: bool,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl AccessLog {
    /// Starts the writer thread.
    pub fn start(settings: LogSettings) -> std::io::Result<Self> {
        let (queue, rx) = sync_channel(QUEUE_CAPACITY);
        let hash_clients = settings.client_hash;
        let health = Arc::new(LogHealth::default());
        let writer_health = health.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer::run(settings, rx, writer_health))?;
        Ok(Self {
            queue,
            health,
            hash_clients,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// True when events should carry the client address for hashing.
    pub fn wants_client(&self) -> bool {
        self.hash_clients
    }

    /// Enqueues an event; when the queue is full the event is dropped and counted.
    pub fn log(&self, event: Event) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(Message::Event(Box::new(event)))
        {
            self.health.dropped(1);
        }
    }

    /// Lines held for the disk and lines lost, the writer's and the queue's.
    pub fn health(&self) -> &LogHealth {
        &self.health
    }

    /// Writes out everything queued and stops the writer. Later events are dropped.
    pub fn close(&self) {
        let _ = self.queue.send(Message::Close);
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PathLogging;

    fn event(route: &str, upstream: Option<&str>, error: Option<&'static str>) -> Event {
        Event {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            listener: Listener::Https,
            version: Version::HTTP_2,
            tls: Some(TlsVersion::Tls13),
            method: Method::from_bytes(b"PURGE").unwrap(),
            route: Some(Arc::new(RouteLabel {
                name: route.into(),
                prefix: "/a\"b\\c".into(),
                upstream: upstream.map(Into::into),
            })),
            target: Some("/x/y?token=1".into()),
            status: StatusCode::BAD_GATEWAY,
            request_bytes: 7,
            retries: 0,
            response_bytes: u64::MAX,
            duration: Duration::from_micros(1234),
            error,
            client: None,
            request_id: RequestId::new(),
        }
    }

    fn parsed(line: &[u8]) -> serde_json::Map<String, serde_json::Value> {
        let line = line
            .strip_suffix(b"\n")
            .expect("a line ends with a newline");
        assert!(!line.contains(&b'\n'));
        serde_json::from_slice(line).expect("a line is one JSON object")
    }

    #[test]
    fn a_line_is_json_with_every_field_in_order() {
        let event = event("example.com/", Some("app"), None);
        let raw = render(&event, PathLogging::Masked, None);
        let line = parsed(&raw);
        let raw = String::from_utf8(raw).unwrap();
        let order = [
            "ts",
            "listener",
            "protocol",
            "tls",
            "method",
            "route",
            "path",
            "status",
            "request_bytes",
            "retries",
            "response_bytes",
            "duration_us",
            "upstream",
            "request_id",
            "error",
        ];
        assert_eq!(line.len(), order.len());
        let positions: Vec<usize> = order
            .iter()
            .map(|key| raw.find(&format!("\"{key}\":")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{raw}");
        assert_eq!(line["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(line["listener"], "https");
        assert_eq!(line["protocol"], "h2");
        assert_eq!(line["tls"], "1.3");
        assert_eq!(line["method"], "OTHER");
        assert_eq!(line["route"], "example.com/");
        assert_eq!(line["path"], "/x/y");
        assert_eq!(line["status"], 502);
        assert_eq!(line["request_bytes"], 7);
        assert_eq!(line["response_bytes"], u64::MAX);
        assert_eq!(line["duration_us"], 1234);
        assert_eq!(line["upstream"], "app");
        assert_eq!(line["request_id"], event.request_id.to_string());
        assert_eq!(line["error"], serde_json::Value::Null);
    }

    #[test]
    fn values_from_a_config_are_escaped() {
        let route = "q\"uote\\back\nline\u{1}ctl\u{e9}";
        let event = event(route, None, Some("upstream_unreachable"));
        let line = parsed(&render(&event, PathLogging::Route, Some("h\"ash".into())));
        assert_eq!(line["route"], route);
        assert_eq!(line["path"], "/a\"b\\c");
        assert_eq!(line["upstream"], serde_json::Value::Null);
        assert_eq!(line["error"], "upstream_unreachable");
        assert_eq!(line["client_hash"], "h\"ash");
    }

    #[test]
    fn timestamps_reuse_only_their_own_second() {
        let at = |millis: u64| {
            let mut event = event("r", None, None);
            event.time = SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
            parsed(&render(&event, PathLogging::Masked, None))["ts"].clone()
        };
        assert_eq!(at(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(1_700_000_000_999), "2023-11-14T22:13:20.999Z");
        assert_eq!(at(1_700_000_001_004), "2023-11-14T22:13:21.004Z");
        assert_eq!(at(1_700_000_000_050), "2023-11-14T22:13:20.050Z");
    }

    #[test]
    fn lines_go_to_the_file_of_their_own_day() {
        let dir = tempfile::tempdir().unwrap();
        let log = AccessLog::start(LogSettings {
            dir: Some(dir.path().to_owned()),
            ..LogSettings::default()
        })
        .unwrap();
        let today = SystemTime::now();
        let yesterday = today - Duration::from_secs(86_400);
        for time in [yesterday, yesterday, today] {
            let mut event = event("r", None, None);
            event.time = time;
            log.log(event);
        }
        log.close();
        let lines = |time| {
            let name = format!("access-{}.jsonl", crate::daily::utc_date(time));
            std::fs::read_to_string(dir.path().join(name)).map_or(0, |text| text.lines().count())
        };
        assert_eq!((lines(yesterday), lines(today)), (2, 1));
    }
}
