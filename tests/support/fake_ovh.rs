//! A fake of the few OVH API endpoints DNS-01 uses, as OVH documents them
//! (https://eu.api.ovh.com/console/, "domain" and "auth"): `GET /auth/time`, `POST
//! /domain/zone/{zone}/record`, `POST /domain/zone/{zone}/refresh` and `DELETE
//! /domain/zone/{zone}/record/{id}`. Every call but the time must carry OVH's signature
//! (`$1$` + SHA-1 of secret, consumer key, method, URL, body and timestamp, joined by `+`)
//! or is refused with 403 as OVH refuses it. Records go into a real BIND zone, so that Pebble
//! resolves what the proxy wrote through the API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};

use super::Pki;
use super::bind::Bind;
use super::tls_server::{json, serve};

pub const APPLICATION_KEY: &str = "test-application-key";
pub const APPLICATION_SECRET: &str = "test-application-secret-0123456789";
pub const CONSUMER_KEY: &str = "test-consumer-key-0123456789abcdef";

#[derive(Default)]
struct Zone {
    /// Live records by id: the name and value written to BIND.
    records: HashMap<u64, (String, String)>,
    next_id: u64,
    /// Every call answered, as `METHOD path status`.
    calls: Vec<String>,
}

pub struct FakeOvh {
    pub endpoint: String,
    zone: Arc<Mutex<Zone>>,
}

impl FakeOvh {
    pub async fn start(pki: &Pki, bind: Arc<Bind>) -> Self {
        let zone = Arc::new(Mutex::new(Zone {
            next_id: 1_000,
            ..Zone::default()
        }));
        let endpoint = Arc::new(Mutex::new(String::new()));
        let (state, known) = (zone.clone(), endpoint.clone());
        let handler = Arc::new(move |request: Request<Bytes>| {
            let endpoint = known.lock().unwrap().clone();
            let response = answer(&endpoint, &bind, &state, &request);
            let call = format!(
                "{} {} {}",
                request.method(),
                request.uri().path(),
                response.status().as_u16()
            );
            state.lock().unwrap().calls.push(call);
            response
        });
        let addr: SocketAddr = serve(pki, "fake-ovh", handler).await;
        let url = format!("https://{addr}/1.0");
        *endpoint.lock().unwrap() = url.clone();
        Self {
            endpoint: url,
            zone,
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.zone.lock().unwrap().calls.clone()
    }

    pub fn live_records(&self) -> usize {
        self.zone.lock().unwrap().records.len()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn header<'a>(request: &'a Request<Bytes>, name: &str) -> &'a str {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// OVH's signature check.
fn signed(endpoint: &str, request: &Request<Bytes>) -> bool {
    let timestamp = header(request, "x-ovh-timestamp");
    let fresh = timestamp
        .parse::<u64>()
        .is_ok_and(|t| t.abs_diff(now()) < 30);
    let url = format!(
        "{endpoint}{}",
        request
            .uri()
            .path_and_query()
            .unwrap()
            .as_str()
            .trim_start_matches("/1.0")
    );
    let body = String::from_utf8_lossy(request.body());
    let text = format!(
        "{APPLICATION_SECRET}+{CONSUMER_KEY}+{}+{url}+{body}+{timestamp}",
        request.method()
    );
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        text.as_bytes(),
    );
    let expected = format!("$1${}", hex::encode(digest.as_ref()));
    fresh
        && header(request, "x-ovh-application") == APPLICATION_KEY
        && header(request, "x-ovh-consumer") == CONSUMER_KEY
        && header(request, "x-ovh-signature") == expected
}

fn answer(
    endpoint: &str,
    bind: &Bind,
    zone: &Mutex<Zone>,
    request: &Request<Bytes>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let method = request.method().as_str();
    if (method, path) == ("GET", "/1.0/auth/time") {
        return json(200, now().to_string());
    }
    if !signed(endpoint, request) {
        return json(
            403,
            r#"{"errorCode":"INVALID_SIGNATURE","httpCode":"400 Bad Request","message":"Invalid signature"}"#,
        );
    }
    let prefix = format!("/1.0/domain/zone/{}/", bind.zone);
    let Some(rest) = path.strip_prefix(&prefix) else {
        return json(404, r#"{"message":"This service does not exist"}"#);
    };
    match (method, rest) {
        ("POST", "refresh") => json(200, "null"),
        ("POST", "record") => {
            let record: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
            assert_eq!(record["fieldType"], "TXT", "{record}");
            let sub = record["subDomain"].as_str().unwrap().to_owned();
            let target = record["target"].as_str().unwrap().to_owned();
            let name = format!("{sub}.{}.", bind.zone);
            bind.nsupdate(&format!("update add {name} 60 TXT \"{target}\""));
            let mut zone = zone.lock().unwrap();
            zone.next_id += 1;
            let id = zone.next_id;
            zone.records.insert(id, (name, target.clone()));
            let body = serde_json::json!({"id": id, "zone": bind.zone, "fieldType": "TXT", "subDomain": sub, "target": target, "ttl": record["ttl"]});
            json(200, body.to_string())
        }
        ("DELETE", rest) if rest.starts_with("record/") => {
            let id = rest
                .trim_start_matches("record/")
                .parse::<u64>()
                .unwrap_or(0);
            let Some((name, target)) = zone.lock().unwrap().records.remove(&id) else {
                return json(404, r#"{"message":"The requested object does not exist"}"#);
            };
            bind.nsupdate(&format!("update delete {name} TXT \"{target}\""));
            json(200, "null")
        }
        _ => json(404, r#"{"message":"This service does not exist"}"#),
    }
}
