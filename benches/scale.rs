//! Does choosing a route or a certificate cost more as a config grows? The route table and the
//! certificate index at 10, 1,000 and 100,000 entries; each lookup should take the same time at
//! every size (both are hash lookups, then a scan of one host's few prefixes).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use portcullis::certs::{CertEntry, CertStore};
use portcullis::host::HostPattern;
use portcullis::routing::RouteTable;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

const SIZES: [usize; 3] = [10, 1_000, 100_000];
const PREFIXES: [&str; 4] = ["/", "/api", "/api/v2/", "/static"];

/// `routes` routes over `routes / 4` hosts, four prefixes each; every tenth host a wildcard.
fn route_table(routes: usize) -> RouteTable<usize> {
    let entries = (0..routes).map(|i| {
        let h = i / PREFIXES.len();
        let host = if h.is_multiple_of(10) {
            format!("*.tenant{h}.example.com")
        } else {
            format!("app{h}.example.com")
        };
        let host = HostPattern::parse(&host).expect("valid host");
        (host, PREFIXES[i % PREFIXES.len()].to_owned(), i)
    });
    RouteTable::new(entries)
}

/// `count` certificates, one name each (`c<i>.example.com`, every tenth a wildcard
/// `*.w<i>.example.com`), sharing one key: the index is what is measured, not the signatures.
fn cert_store(count: usize) -> CertStore {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["c0.example.com".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).expect("signer");
    let certified = Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signer,
    ));
    let entries = (0..count)
        .map(|i| {
            let name = if i % 10 == 5 {
                format!("*.w{i}.example.com")
            } else {
                format!("c{i}.example.com")
            };
            Arc::new(CertEntry {
                names: Arc::from(vec![HostPattern::parse(&name).expect("valid name")]),
                not_after: SystemTime::now() + Duration::from_secs(86_400),
                key: certified.clone(),
            })
        })
        .collect();
    CertStore::new(entries)
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("route table");
    for size in SIZES {
        let table = route_table(size);
        // A host in the middle of the table, a wildcard one, and one the table lacks.
        let exact = format!("app{}.example.com", size / 8 + 1);
        let wildcard = format!("eu.tenant{}.example.com", (size / 40) * 10);
        group.bench_with_input(BenchmarkId::new("exact host", size), &exact, |b, host| {
            b.iter(|| table.resolve(black_box(host), black_box("/api/v2/users/7")))
        });
        group.bench_with_input(
            BenchmarkId::new("wildcard host", size),
            &wildcard,
            |b, host| b.iter(|| table.resolve(black_box(host), black_box("/static/app.css"))),
        );
        group.bench_with_input(BenchmarkId::new("unknown host", size), &(), |b, ()| {
            b.iter(|| table.resolve(black_box("nowhere.example.org"), black_box("/")))
        });
    }
    group.finish();
}

fn certificates(c: &mut Criterion) {
    let mut group = c.benchmark_group("certificate by SNI");
    for size in SIZES {
        let store = cert_store(size);
        let exact = format!("c{}.example.com", size / 2 + 1);
        let wildcard = format!("api.w{}.example.com", size / 2 / 10 * 10 + 5);
        for (name, sni) in [("exact name", &exact), ("wildcard", &wildcard)] {
            assert!(store.for_sni(Some(sni)).is_some(), "{sni} must be covered");
            group.bench_with_input(BenchmarkId::new(name, size), sni, |b, sni| {
                b.iter(|| store.for_sni(black_box(Some(sni))).map(Arc::as_ptr))
            });
        }
        group.bench_with_input(BenchmarkId::new("unknown name", size), &(), |b, ()| {
            b.iter(|| {
                store
                    .for_sni(black_box(Some("nowhere.example.org")))
                    .is_none()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, routes, certificates);
criterion_main!(benches);
