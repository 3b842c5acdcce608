//! A small HTTPS server for the fakes of services the proxy calls (an ACME CA, a DNS
//! provider's API): a certificate for 127.0.0.1 from the test CA, HTTP/1.1, each request read
//! whole and answered by the test's own function.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpListener;

use super::Pki;

/// What answers each request.
pub type Handler = Arc<dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync>;

/// Serves `handler` on a free loopback port, until the test ends.
pub async fn serve(pki: &Pki, stem: &str, handler: Handler) -> SocketAddr {
    let (cert, key) = pki.leaf(stem, &["127.0.0.1"]);
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (head, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            Ok::<_, hyper::Error>(handler(Request::from_parts(head, body)))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// A JSON answer.
pub fn json(status: u16, body: impl Into<String>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.into())))
        .unwrap()
}
