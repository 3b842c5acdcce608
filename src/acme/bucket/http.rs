//! object_store's HTTP client, on the stack the proxy already has: hyper-util's pooled client
//! over rustls (aws-lc-rs). Its default would be reqwest, a second HTTP client with its own
//! TLS roots and verifier crates, for the five kinds of request the shared store makes.
//!
//! The connector and its roots are `acme::https`'s: the system's bundle, or the public roots.

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use object_store::client::{
    HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse,
    HttpResponseBody, HttpService,
};
use object_store::{ClientConfigKey, ClientOptions};

/// object_store's own default when `ClientOptions` names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the bucket's client from object_store's options.
#[derive(Debug, Default)]
pub struct Connector;

impl object_store::client::HttpConnector for Connector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let option = |key| options.get_config_value(&key);
        let duration = |key| option(key).and_then(|v| humantime::parse_duration(&v).ok());
        let allow_http = option(ClientConfigKey::AllowHttp).is_some_and(|v| v == "true");
        let connect_timeout = duration(ClientConfigKey::ConnectTimeout);
        let roots = crate::acme::https::system_roots();
        let https =
            crate::acme::https::connector(roots, allow_http, connect_timeout).map_err(|e| {
                object_store::Error::Generic {
                    store: "S3",
                    source: e.into(),
                }
            })?;
        Ok(HttpClient::new(Client {
            pooled: Pooled::builder(TokioExecutor::new()).build(https),
            timeout: duration(ClientConfigKey::Timeout).unwrap_or(DEFAULT_TIMEOUT),
        }))
    }
}

#[derive(Debug)]
struct Client {
    pooled: Pooled<HttpsConnector<HttpConnector>, HttpRequestBody>,
    /// For the whole exchange: the objects are small and read whole.
    timeout: Duration,
}

#[async_trait]
impl HttpService for Client {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let exchange = async {
            let response = self.pooled.request(request).await.map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e))?
                .to_bytes();
            Ok(HttpResponse::from_parts(
                parts,
                HttpResponseBody::from(bytes),
            ))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|elapsed| HttpError::new(HttpErrorKind::Timeout, elapsed))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::client::HttpConnector as _;

    /// Whether a request through a client made from `options` reaches a plain listener.
    async fn reaches_plain_listener(options: &ClientOptions) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/bucket/key", listener.local_addr().unwrap());
        let client = Connector.connect(options).unwrap();
        let request = http::Request::get(url)
            .body(HttpRequestBody::empty())
            .unwrap();
        let sent = tokio::spawn(async move { client.execute(request).await.map(drop) });
        let accepted = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
        sent.abort();
        accepted.is_ok()
    }

    #[tokio::test]
    async fn plain_http_is_used_only_where_the_options_allow_it() {
        // Signed requests and the account key travel here: never in clear by default.
        assert!(!reaches_plain_listener(&ClientOptions::new()).await);
        assert!(reaches_plain_listener(&ClientOptions::new().with_allow_http(true)).await);
    }
}
