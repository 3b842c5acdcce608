//! OVH's REST API for zone records (https://eu.api.ovh.com/console/, "domain"): a record is
//! `POST /domain/zone/{zone}/record`, deleted by its id, and each change takes effect on the
//! zone's servers after `POST /domain/zone/{zone}/refresh`. Every call is signed as OVH asks:
//! `$1$` + hex SHA-1 of the application secret, the consumer key, the method, the full URL,
//! the body and the timestamp, joined by `+`; the timestamp is OVH's clock (`GET /auth/time`),
//! so that a skewed local clock does not get every call refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{DnsSetupError, TTL, Writer};
use crate::acme::failure::OrderError;
use crate::config::{AcmeDns, DnsProvider};

/// One API call's limit, answer included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Ovh {
    http: Pooled<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: String,
    zone: String,
    application_key: String,
    application_secret: String,
    consumer_key: String,
    /// OVH's clock minus ours, learnt at the first call.
    skew: Mutex<Option<i64>>,
    /// The ids of the records we added, by name and value.
    ids: Mutex<HashMap<(String, String), u64>>,
}

impl Ovh {
    pub fn new(settings: &AcmeDns) -> Result<Self, DnsSetupError> {
        let DnsProvider::Ovh {
            endpoint,
            application_key,
            application_secret_file,
            consumer_key_file,
            ca_file,
        } = &settings.provider
        else {
            return Err(DnsSetupError("not an OVH provider".into()));
        };
        let secret = |field: &str, file| {
            crate::config::read_api_secret(file).map_err(|e| DnsSetupError(format!("{field}: {e}")))
        };
        let roots = match ca_file {
            Some(ca) => {
                crate::certs::load_roots(ca).map_err(|e| DnsSetupError(format!("ca_file: {e}")))?
            }
            None => crate::acme::https::system_roots(),
        };
        // Validation allows http:// only to loopback (a local fake).
        let https = crate::acme::https::connector(roots, endpoint.starts_with("http://"), None)
            .map_err(|e| DnsSetupError(format!("TLS client: {e}")))?;
        Ok(Self {
            http: Pooled::builder(TokioExecutor::new()).build(https),
            endpoint: endpoint.clone(),
            zone: settings.zone.clone(),
            application_key: application_key.clone(),
            application_secret: secret("application_secret_file", application_secret_file)?,
            consumer_key: secret("consumer_key_file", consumer_key_file)?,
            skew: Mutex::new(None),
            ids: Mutex::new(HashMap::new()),
        })
    }

    /// Sends one request; the body of a 2xx answer.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Bytes, OrderError> {
        let what = format!("OVH {} {}", request.method(), request.uri().path());
        let failed = |why: String| OrderError::failed(format!("{what}: {why}"));
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| failed(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                // OVH's errors are {"message": ...}; nothing secret is in them.
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                return Err(failed(format!("{status} {message}")));
            }
            Ok(body)
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| failed("no answer in time".into()))?
    }

    /// Now, by OVH's clock.
    async fn timestamp(&self) -> Result<i64, OrderError> {
        let local = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        };
        let known = *self.skew.lock().unwrap_or_else(|e| e.into_inner());
        let skew = match known {
            Some(skew) => skew,
            None => {
                let url = format!("{}/auth/time", self.endpoint);
                let request = Request::get(url)
                    .body(Full::default())
                    .map_err(|e| OrderError::failed(e.to_string()))?;
                let body = self.send(request).await?;
                let theirs: i64 = std::str::from_utf8(&body)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or_else(|| OrderError::failed("OVH /auth/time: not a time"))?;
                let skew = theirs - local();
                *self.skew.lock().unwrap_or_else(|e| e.into_inner()) = Some(skew);
                skew
            }
        };
        Ok(local() + skew)
    }

    /// A signed call to `path` under the zone.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Bytes, OrderError> {
        let url = format!("{}/domain/zone/{}/{path}", self.endpoint, self.zone);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let timestamp = self.timestamp().await?.to_string();
        let text = [
            self.application_secret.as_str(),
            &self.consumer_key,
            method.as_str(),
            &url,
            &body,
            &timestamp,
        ]
        .join("+");
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            text.as_bytes(),
        );
        let request = Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .header("x-ovh-application", &self.application_key)
            .header("x-ovh-consumer", &self.consumer_key)
            .header("x-ovh-timestamp", timestamp)
            .header("x-ovh-signature", format!("$1${}", hex::encode(digest)))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| OrderError::failed(format!("OVH request: {e}")))?;
        self.send(request).await
    }

    /// `name` relative to the zone, as OVH's `subDomain`.
    fn sub_domain(&self, name: &str) -> String {
        let name = name.to_ascii_lowercase();
        match name.strip_suffix(&format!(".{}", self.zone)) {
            Some(sub) => sub.to_owned(),
            None => String::new(),
        }
    }
}

#[async_trait]
impl Writer for Ovh {
    async fn add(&self, name: &str, value: &str) -> Result<(), OrderError> {
        let record = serde_json::json!({
            "fieldType": "TXT",
            "subDomain": self.sub_domain(name),
            "target": value,
            "ttl": TTL,
        });
        let body = self.call(Method::POST, "record", Some(record)).await?;
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_u64())
            .ok_or_else(|| OrderError::failed("OVH: the new record has no id"))?;
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((name.to_owned(), value.to_owned()), id);
        self.call(Method::POST, "refresh", None).await.map(drop)
    }

    async fn remove(&self, name: &str, value: &str) -> Result<(), OrderError> {
        let id = self
            .ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(name.to_owned(), value.to_owned()));
        let Some(id) = id else {
            return Ok(());
        };
        self.call(Method::DELETE, &format!("record/{id}"), None)
            .await?;
        self.call(Method::POST, "refresh", None).await.map(drop)
    }
}
