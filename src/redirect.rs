//! The plain-HTTP listener's only answer: `301` to the same host, path and query on HTTPS,
//! but for the HTTP-01 validations of an ACME order in progress, which RFC 8555 8.3 requires
//! over plain HTTP.
//!
//! Only hosts we route are redirected, so the listener cannot be used as an open redirector
//! toward a host we do not serve. No HSTS here: RFC 6797 7.2 forbids it over plain HTTP.

use http::header::LOCATION;
use http::{HeaderValue, Request, Response, StatusCode};

use crate::app::App;
use crate::body::ResponseBody;
use crate::error::status_response;
use crate::host::request_host;

/// Where HTTP-01 validations look (RFC 8555 8.3).
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// The response to one plain-HTTP request; the body is never read.
pub fn redirect<B>(app: &App, request: &Request<B>) -> Response<ResponseBody> {
    let Ok(host) = request_host(request.version(), request.uri(), request.headers()) else {
        return status_response(StatusCode::BAD_REQUEST);
    };
    if let Some(answer) = acme_challenge(app, &host.name, request) {
        return answer;
    }
    if !app.routes.serves_host(&host.name) {
        return status_response(StatusCode::NOT_FOUND);
    }
    let Some(target) = request
        .uri()
        .path_and_query()
        .filter(|pq| pq.as_str().starts_with('/'))
    else {
        return status_response(StatusCode::BAD_REQUEST);
    };
    let location = location(&host.url_host(), app.public_https_port, target.as_str());
    // hyper already refused control bytes in the target; this refuses anything else a header
    // value cannot carry rather than trusting that.
    let Ok(location) = HeaderValue::try_from(location) else {
        return status_response(StatusCode::BAD_REQUEST);
    };
    let mut response = status_response(StatusCode::MOVED_PERMANENTLY);
    response.headers_mut().insert(LOCATION, location);
    response
}

/// The one exception to redirecting: an HTTP-01 validation of a name we order, for a token
/// of an order in progress, answered with its key authorization. Any other path under the
/// challenge directory is redirected like the rest (or 404 for a host we do not serve).
fn acme_challenge<B>(
    app: &App,
    host: &str,
    request: &Request<B>,
) -> Option<Response<ResponseBody>> {
    let token = request.uri().path().strip_prefix(ACME_CHALLENGE)?;
    if !matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
        return None;
    }
    let answer = app.process.acme.as_ref()?.http_challenge(host, token)?;
    let mut response = Response::new(ResponseBody::full(bytes::Bytes::copy_from_slice(
        answer.as_bytes(),
    )));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(response)
}

/// `https://host[:port]/target`, built in one allocation: this is most of the plain
/// listener's own work per request.
fn location(host: &str, port: u16, target: &str) -> String {
    let mut port_digits = itoa::Buffer::new();
    let port = match port {
        443 => "",
        port => port_digits.format(port),
    };
    let mut location =
        String::with_capacity("https://:".len() + host.len() + port.len() + target.len());
    location.push_str("https://");
    location.push_str(host);
    if !port.is_empty() {
        location.push(':');
        location.push_str(port);
    }
    location.push_str(target);
    location
}
