//! What a configuration sets up for serving: the app, the TLS settings and the HTTP builders
//! every new connection is served with.

use std::sync::Arc;

use http::HeaderMap;
use http::header::STRICT_TRANSPORT_SECURITY;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;

use super::StreamExecutor;
use crate::app::App;
use crate::config::Limits;
use crate::tls::TlsConfigs;

/// Request headers per message, h1; beyond this hyper answers 431.
const MAX_HEADERS: usize = 128;

/// One configuration's worth of serving state. A reload installs a new generation: new
/// connections get its TLS settings and limits, and every request, on old connections too, is
/// routed and judged by its app.
#[derive(Debug)]
pub struct Generation {
    pub(super) app: Arc<App>,
    pub(super) tls: TlsConfigs,
    /// The HTTPS listener's: hyper's own answers to unparsable heads carry HSTS too.
    pub(super) h1: http1::Builder,
    /// The redirect listener's: plain HTTP, where HSTS means nothing (RFC 6797 8.1).
    pub(super) h1_plain: http1::Builder,
}

impl Generation {
    /// Prepares the HTTP/1.1 builder from the app's limits (HTTP/2's is per connection: its
    /// executor counts the connection's streams).
    pub fn new(app: Arc<App>, tls: TlsConfigs) -> Self {
        let mut h1 = h1_builder(&app.limits);
        let mut hsts = HeaderMap::new();
        hsts.insert(STRICT_TRANSPORT_SECURITY, app.hsts.clone());
        h1.error_response_headers(hsts);
        Self {
            h1,
            h1_plain: h1_builder(&app.limits),
            tls,
            app,
        }
    }
}

fn h1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
}

pub(super) fn h2_builder(
    limits: &Limits,
    executor: StreamExecutor,
) -> http2::Builder<StreamExecutor> {
    let mut builder = http2::Builder::new(executor);
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}
