//! What does the access log cost a request? The request path only enqueues an event (target:
//! under 1 microsecond); masking and serialising happen on the writer thread, measured apart.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, StatusCode, Version};
use portcullis::access_log::{AccessLog, Event, Listener, RouteLabel, mask_path, render};
use portcullis::config::{LogSettings, PathLogging};
use portcullis::connection::TlsVersion;

fn event() -> Event {
    Event {
        time: SystemTime::now(),
        listener: Listener::Https,
        version: Version::HTTP_11,
        tls: Some(TlsVersion::Tls13),
        method: Method::GET,
        route: Some(std::sync::Arc::new(RouteLabel {
            name: "app.example.com/api/".into(),
            prefix: "/api/".into(),
            upstream: Some("app".into()),
        })),
        target: Some("/users/42/orders/123e4567-e89b-42d3-a456-426614174000?page=2".into()),
        status: StatusCode::OK,
        request_bytes: 0,
        retries: 0,
        response_bytes: 1234,
        duration: Duration::from_micros(350),
        error: None,
        client: None,
        request_id: portcullis::request_id::RequestId::new(),
    }
}

fn access_log(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = AccessLog::start(LogSettings {
        dir: Some(dir.path().to_owned()),
        ..LogSettings::default()
    })
    .unwrap();
    c.bench_function("request path: enqueue one event", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Batches well under the queue size, drained between batches, so the figure
                // is the cost of a line that is kept, not of one dropped on a full queue.
                let batch = left.min(1_000);
                let events: Vec<Event> = (0..batch).map(|_| event()).collect();
                let start = Instant::now();
                for event in events {
                    log.log(event);
                }
                spent += start.elapsed();
                left -= batch;
                std::thread::sleep(Duration::from_millis(3));
            }
            spent
        })
    });
    assert_eq!(
        log.health().dropped_total(),
        0,
        "the bench measured dropped lines"
    );
    log.close();
    let e = event();
    c.bench_function("writer thread: mask and render one line", |b| {
        b.iter(|| render(black_box(&e), PathLogging::Masked, None))
    });
    c.bench_function("writer thread: mask a path", |b| {
        b.iter(|| {
            mask_path(black_box(
                "/users/42/orders/123e4567-e89b-42d3-a456-426614174000?page=2",
            ))
        })
    });
}

criterion_group!(benches, access_log);
criterion_main!(benches);
