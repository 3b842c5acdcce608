//! How long does choosing a route take with 1,000 hosts (exact and wildcard), and what does
//! path normalisation cost on a clean path and on one that needs work?

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::host::HostPattern;
use portcullis::path::normalize_path;
use portcullis::routing::RouteTable;

fn table() -> RouteTable<usize> {
    let mut entries = Vec::new();
    for i in 0..1_000 {
        let host = if i % 10 == 0 {
            format!("*.tenant{i}.example.com")
        } else {
            format!("app{i}.example.com")
        };
        let host = HostPattern::parse(&host).unwrap();
        for (j, prefix) in ["/", "/api", "/api/v2/", "/static"].iter().enumerate() {
            entries.push((host.clone(), (*prefix).to_owned(), i * 4 + j));
        }
    }
    RouteTable::new(entries)
}

fn routing(c: &mut Criterion) {
    let table = table();
    c.bench_function("resolve exact host, longest prefix", |b| {
        b.iter(|| {
            table.resolve(
                black_box("app517.example.com"),
                black_box("/api/v2/users/7"),
            )
        })
    });
    c.bench_function("resolve wildcard host", |b| {
        b.iter(|| {
            table.resolve(
                black_box("eu.tenant510.example.com"),
                black_box("/static/app.css"),
            )
        })
    });
    c.bench_function("resolve unknown host", |b| {
        b.iter(|| table.resolve(black_box("nowhere.example.org"), black_box("/")))
    });
    c.bench_function("normalize clean path", |b| {
        b.iter(|| normalize_path(black_box("/api/v2/users/7/orders")).map(|p| p.len()))
    });
    c.bench_function("normalize dirty path", |b| {
        b.iter(|| normalize_path(black_box("/api//v2/./users/%37/../7/orders")).map(|p| p.len()))
    });
}

criterion_group!(benches, routing);
criterion_main!(benches);
