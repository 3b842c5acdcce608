//! A small ACME server of the test's own, over TLS from the test CA, for what Debian's Pebble
//! (2.4) does not serve: RFC 9773's `renewalInfo` (a window the test sets, `Retry-After`, each
//! question counted) and profiles (`meta.profiles`, and every newOrder request recorded, then
//! refused). Its directory can also be another CA's with `renewalInfo` added, so that Pebble
//! issues and this server says when to renew.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};

use super::Pki;
use super::tls_server::{json, serve};

/// What the server answers and what it was asked.
#[derive(Debug, Default)]
pub struct State {
    /// `suggestedWindow` start and end (RFC 3339).
    pub window: (String, String),
    /// `Retry-After` in seconds.
    pub retry_after: u64,
    /// The paths of every renewalInfo question.
    pub asks: Vec<String>,
    /// The payload of every newOrder request, decoded.
    pub orders: Vec<serde_json::Value>,
    /// A directory to serve instead of this server's own, `renewalInfo` added.
    pub directory: Option<serde_json::Value>,
}

pub struct FakeAcme {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl FakeAcme {
    pub async fn start(pki: &Pki) -> Self {
        let state = Arc::new(Mutex::new(State {
            retry_after: 21_600,
            ..State::default()
        }));
        let shared = state.clone();
        let base = Arc::new(Mutex::new(String::new()));
        let known = base.clone();
        let handler = Arc::new(move |request: Request<Bytes>| {
            let base = known.lock().unwrap().clone();
            answer(&base, &shared, request)
        });
        let addr = serve(pki, "fake-acme", handler).await;
        *base.lock().unwrap() = format!("https://{addr}");
        Self { addr, state }
    }

    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.addr)
    }

    pub fn set_window(&self, start: &str, end: &str, retry_after: u64) {
        let mut state = self.state.lock().unwrap();
        state.window = (start.to_owned(), end.to_owned());
        state.retry_after = retry_after;
    }

    pub fn asks(&self) -> Vec<String> {
        self.state.lock().unwrap().asks.clone()
    }

    pub fn orders(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().orders.clone()
    }
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = json(status, body);
    let nonce = format!("nonce-{}", fastrand::u64(..)).parse().unwrap();
    response.headers_mut().insert("replay-nonce", nonce);
    response
}

fn answer(base: &str, state: &Mutex<State>, request: Request<Bytes>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let body = request.into_body();
    if path == "/dir" {
        let own = serde_json::json!({
            "newNonce": format!("{base}/nonce"),
            "newAccount": format!("{base}/account"),
            "newOrder": format!("{base}/order"),
            "meta": {"profiles": {"classic": "90 days", "shortlived": "about 6 days"}},
        });
        let mut directory = state.lock().unwrap().directory.clone().unwrap_or(own);
        directory["renewalInfo"] = format!("{base}/ari").into();
        return reply(200, directory.to_string());
    }
    if path == "/nonce" {
        return reply(200, String::new());
    }
    if path == "/account" {
        let mut response = reply(201, r#"{"status":"valid"}"#.into());
        let location = format!("{base}/account/1").parse().unwrap();
        response.headers_mut().insert("location", location);
        return response;
    }
    if path == "/order" {
        let jws: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let payload = URL_SAFE_NO_PAD
            .decode(jws["payload"].as_str().unwrap())
            .unwrap();
        let payload = serde_json::from_slice(&payload).unwrap();
        state.lock().unwrap().orders.push(payload);
        let problem = r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"recorded by the test"}"#;
        return reply(403, problem.into());
    }
    if path.starts_with("/ari/") {
        let mut state = state.lock().unwrap();
        state.asks.push(path);
        let (start, end) = state.window.clone();
        let mut response = reply(
            200,
            serde_json::json!({"suggestedWindow": {"start": start, "end": end}}).to_string(),
        );
        let retry = state.retry_after.to_string().parse().unwrap();
        response.headers_mut().insert("retry-after", retry);
        return response;
    }
    reply(404, String::new())
}
