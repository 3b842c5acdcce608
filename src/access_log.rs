//! The access log: one JSON line per request, carrying no user information by construction.
//!
//! The request path hands an [`Event`] to a bounded queue and moves on; the writer thread masks
//! the path, drops the query and serialises a [`Record`], whose fields *are* the allow-list:
//! there is no header map, no free-form field, nothing a new piece of code could leak through
//! by accident. Client addresses never reach a line; with `client_hash` on, only a keyed hash
//! whose key lives in memory and changes with the UTC day.

mod mask;
mod vocabulary;
mod writer;

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode, Version};

pub use mask::mask_path;
use mask::write_masked_path;

use crate::config::{LogSettings, PathLogging};
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

/// One access-log line. Its fields are the whole allow-list.
#[derive(Debug)]
pub struct Record<'a> {
    ts: SystemTime,
    listener: &'static str,
    protocol: &'static str,
    tls: Option<&'static str>,
    method: &'a str,
    route: &'a str,
    path: LoggedPath<'a>,
    status: u16,
    request_bytes: u64,
    response_bytes: u64,
    duration_us: u64,
    upstream: Option<&'a str>,
    request_id: RequestId,
    error: Option<&'static str>,
    client_hash: Option<String>,
}

/// The finished line for `event`, newline included: what the writer thread does per event.
pub fn render(event: &Event, path: PathLogging, client_hash: Option<String>) -> Vec<u8> {
    // Room for a typical line at once: growing from empty took a handful of reallocations per
    // line, on the core that also serves requests.
    let mut line = Vec::with_capacity(LINE_CAPACITY);
    Record::from_event(event, path, client_hash).write_json(&mut line);
    line.push(b'\n');
    line
}

/// Bytes reserved for one rendered line; longer ones grow.
const LINE_CAPACITY: usize = 384;

/// What the logs write of a request's path: masked, or only the prefix of the route that
/// matched; `-` when there is nothing to write.
pub fn logged_path(mode: PathLogging, target: Option<&str>, route: Option<&RouteLabel>) -> String {
    match LoggedPath::new(mode, target, route) {
        LoggedPath::Masked(target) => mask_path(target),
        LoggedPath::AsIs(text) => text.to_owned(),
    }
}

/// [`logged_path`] before it is written.
#[derive(Debug)]
enum LoggedPath<'a> {
    /// A target to mask: masked straight into the line, with no string of its own.
    Masked(&'a str),
    /// A route prefix from the config, or `-`.
    AsIs(&'a str),
}

impl<'a> LoggedPath<'a> {
    fn new(mode: PathLogging, target: Option<&'a str>, route: Option<&'a RouteLabel>) -> Self {
        match (mode, target) {
            (PathLogging::Masked, Some(target)) => Self::Masked(target),
            (PathLogging::Masked, None) => Self::AsIs("-"),
            (PathLogging::Route, _) => Self::AsIs(
                route
                    .map(|r| &*r.prefix)
                    .filter(|prefix| !prefix.is_empty())
                    .unwrap_or("-"),
            ),
        }
    }
}

/// `,"name":` as one constant, so that a field costs one copy for its key.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}

impl<'a> Record<'a> {
    fn from_event(event: &'a Event, path: PathLogging, client_hash: Option<String>) -> Self {
        Self {
            ts: event.time,
            listener: match event.listener {
                Listener::Http => "http",
                Listener::Https => "https",
            },
            protocol: if event.version == Version::HTTP_2 {
                "h2"
            } else {
                "h1"
            },
            tls: event.tls.map(TlsVersion::as_str),
            method: logged_method(&event.method),
            route: event.route.as_ref().map_or("-", |r| &r.name),
            path: LoggedPath::new(path, event.target.as_deref(), event.route.as_deref()),
            status: event.status.as_u16(),
            request_bytes: event.request_bytes,
            response_bytes: event.response_bytes,
            duration_us: u64::try_from(event.duration.as_micros()).unwrap_or(u64::MAX),
            upstream: event.route.as_ref().and_then(|r| r.upstream.as_deref()),
            request_id: event.request_id,
            error: event.error,
            client_hash,
        }
    }

    /// The line as one JSON object, fields in declaration order, `null` for an absent value
    /// (`client_hash` is left out instead). Written field by field rather than through serde:
    /// serde_json escapes every key and routes `Display` values through its escaping writer,
    /// which was more than a quarter of the writer thread's cost per line.
    fn write_json(&self, line: &mut Vec<u8>) {
        // Digits, `-`, `:`, `T`, `.` and `Z`, and a hyphenated hex UUID: nothing to escape.
        line.extend_from_slice(b"{\"ts\":\"");
        write_timestamp(line, self.ts);
        line.push(b'"');
        json_field(line, key!("listener"), Some(self.listener));
        json_field(line, key!("protocol"), Some(self.protocol));
        json_field(line, key!("tls"), self.tls);
        json_field(line, key!("method"), Some(self.method));
        json_field(line, key!("route"), Some(self.route));
        match self.path {
            LoggedPath::Masked(target) => {
                line.extend_from_slice(key!("path"));
                line.push(b'"');
                write_masked_path(target, line);
                line.push(b'"');
            }
            LoggedPath::AsIs(text) => json_field(line, key!("path"), Some(text)),
        }
        json_number(line, key!("status"), self.status.into());
        json_number(line, key!("request_bytes"), self.request_bytes);
        json_number(line, key!("response_bytes"), self.response_bytes);
        json_number(line, key!("duration_us"), self.duration_us);
        json_field(line, key!("upstream"), self.upstream);
        line.extend_from_slice(key!("request_id"));
        line.push(b'"');
        self.request_id.write_to(line);
        line.push(b'"');
        json_field(line, key!("error"), self.error);
        if let Some(hash) = &self.client_hash {
            json_field(line, key!("client_hash"), Some(hash));
        }
        line.push(b'}');
    }
}

/// `time` as RFC 3339 with milliseconds, `2023-11-14T22:13:20.123Z`. Lines come many to a
/// second and in time order, so the part up to the seconds is formatted once a second (per
/// thread: the writer's) and reused.
fn write_timestamp(line: &mut Vec<u8>, time: SystemTime) {
    const SECONDS: usize = "2023-11-14T22:13:20".len();
    thread_local! {
        static LAST_SECOND: Cell<Option<(u64, [u8; SECONDS])>> = const { Cell::new(None) };
    }
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since_epoch.as_secs();
    let up_to_seconds = LAST_SECOND.with(|last| match last.get() {
        Some((cached, text)) if cached == second => text,
        _ => {
            let formatted =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second))
                    .to_string();
            let mut text = [b'0'; SECONDS];
            if let Some(prefix) = formatted.as_bytes().get(..SECONDS) {
                text.copy_from_slice(prefix);
            }
            last.set(Some((second, text)));
            text
        }
    });
    line.extend_from_slice(&up_to_seconds);
    let millis = since_epoch.subsec_millis();
    let digit = |n: u32| b'0' + u8::try_from(n % 10).unwrap_or(0);
    line.extend_from_slice(&[
        b'.',
        digit(millis / 100),
        digit(millis / 10),
        digit(millis),
        b'Z',
    ]);
}

/// `key` then `"value"` or `null`; keys are ours and need no escaping.
fn json_field(line: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    line.extend_from_slice(key);
    match value {
        None => line.extend_from_slice(b"null"),
        // Route names, upstream names and route prefixes come from a config.
        Some(value) if value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') => {
            if serde_json::to_writer(&mut *line, value).is_err() {
                line.extend_from_slice(b"null");
            }
        }
        Some(value) => {
            line.push(b'"');
            line.extend_from_slice(value.as_bytes());
            line.push(b'"');
        }
    }
}

/// `,"key":123`.
fn json_number(line: &mut Vec<u8>, key: &[u8], value: u64) {
    line.extend_from_slice(key);
    line.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Extension methods are whatever a client typed, so only the standard ones are written.
fn logged_method(method: &Method) -> &str {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    if STANDARD.contains(method) {
        method.as_str()
    } else {
        "OTHER"
    }
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
