//! An [`Event`] as its JSON line: the [`Record`] whose fields are the allow-list, written by
//! hand into one buffer (no serde map, nothing a new field could slip through).

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use super::mask::{mask_path, write_masked_path};
use super::{Event, Listener, RouteLabel};
use crate::config::PathLogging;
use crate::connection::TlsVersion;
use crate::request_id::RequestId;

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
    retries: u32,
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
            retries: event.retries,
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
        json_number(line, key!("retries"), self.retries.into());
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
