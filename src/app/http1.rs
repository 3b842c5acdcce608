//! The HTTP/1.1 settings a configuration serves new connections with. HTTP/2's are per
//! connection (`server`): its executor counts the connection's streams.

use http::header::STRICT_TRANSPORT_SECURITY;
use http::{HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;

use crate::config::Limits;

/// Request headers per message, h1; beyond this hyper answers 431.
const MAX_HEADERS: usize = 128;

/// One configuration's HTTP/1.1 builders.
#[derive(Debug)]
pub struct Http1 {
    /// The HTTPS listener's: hyper's own answers to unparsable heads carry HSTS too.
    pub tls: http1::Builder,
    /// The redirect listener's: plain HTTP, where HSTS means nothing (RFC 6797 8.1).
    pub plain: http1::Builder,
}

impl Http1 {
    /// Both builders from the configuration's limits and HSTS value.
    pub fn new(limits: &Limits, hsts: &HeaderValue) -> Self {
        let mut tls = builder(limits);
        let mut headers = HeaderMap::new();
        headers.insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
        tls.error_response_headers(headers);
        Self {
            tls,
            plain: builder(limits),
        }
    }
}

fn builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
}
