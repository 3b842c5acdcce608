//! What does preparing a browser-like request's headers for the upstream cost (hop-by-hop
//! removal, spoofed forwarding headers dropped, X-Forwarded-* set), and a response's?

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use portcullis::proxy::{Vouched, rewrite_request, rewrite_response};

fn browser_request() -> HeaderMap {
    [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("connection", "keep-alive"),
        ("cookie", "session=abc123; theme=dark"),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("x-forwarded-for", "6.6.6.6"),
        ("te", "trailers"),
    ]
    .into_iter()
    .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
    .collect()
}

fn headers(c: &mut Criterion) {
    let authority: Authority = "app.example.com".parse().unwrap();
    let client = HeaderValue::from_static("192.0.2.10");
    let request_id = portcullis::request_id::RequestId::new().header_value();
    c.bench_function("rewrite request headers", |b| {
        b.iter_batched(
            browser_request,
            |mut h| {
                rewrite_request(
                    &mut h,
                    Version::HTTP_11,
                    &Vouched {
                        host: &authority,
                        client: &client,
                        user: None,
                        assertion: None,
                        request_id: Some(&request_id),
                    },
                    &[],
                    None,
                );
                black_box(h)
            },
            BatchSize::SmallInput,
        )
    });
    let response: HeaderMap = [
        ("content-type", "text/html"),
        ("content-length", "64"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("cache-control", "no-cache"),
    ]
    .into_iter()
    .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
    .collect();
    c.bench_function("rewrite response headers", |b| {
        b.iter_batched(
            || response.clone(),
            |mut h| {
                rewrite_response(&mut h, false);
                black_box(h)
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, headers);
criterion_main!(benches);
