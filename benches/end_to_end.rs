//! What does one request through the whole proxy cost, over loopback TLS to a real upstream, on
//! a kept-alive HTTP/1.1 connection and on an HTTP/2 connection? Compare against the direct
//! upstream round trip to see the proxy's share, and the same request with two addresses to pick
//! from and a route limit to count. For comparisons with nginx, see
//! `benches/load/compare.sh`.

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use support::{Client, Setup};

fn end_to_end(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (setup, proxy) = runtime.block_on(async {
        let setup = Setup::new().await;
        let proxy = setup.start("").await;
        (setup, proxy)
    });
    for (name, h2) in [
        ("proxied GET over h1 (TLS)", false),
        ("proxied GET over h2 (TLS)", true),
    ] {
        let mut client = runtime.block_on(Client::connect(
            h2,
            proxy.https_addr,
            "localhost",
            &setup.pki,
        ));
        c.bench_function(name, |b| {
            b.iter(|| runtime.block_on(client.get("localhost", "/bytes/64")))
        });
    }
    // The same request with what issue 35 added on its path: two addresses picked by p2c, and a
    // route limit counted per client (high enough never to refuse).
    let second = runtime.block_on(support::upstream::Upstream::start());
    let guarded = runtime.block_on(async {
        let toml = setup
            .config()
            .set(
                "upstreams.app.addrs",
                support::strings(&[&setup.app.addr.to_string(), &second.addr.to_string()]),
            )
            .set(
                "routes[0].limit",
                toml::Value::Table(
                    toml::from_str("rate = \"1000000/s\"\nburst = 1000000").unwrap(),
                ),
            );
        support::start_toml(&toml.text()).await
    });
    let mut client = runtime.block_on(Client::connect(
        false,
        guarded.https_addr,
        "localhost",
        &setup.pki,
    ));
    c.bench_function(
        "proxied GET over h1 (TLS), two addresses by p2c, route limit",
        |b| b.iter(|| runtime.block_on(client.get("localhost", "/bytes/64"))),
    );
    runtime.block_on(guarded.shutdown());
    let upstream = setup.app.addr;
    let mut direct = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client::H1(sender)
    });
    c.bench_function("direct GET to the upstream (plain h1, baseline)", |b| {
        b.iter(|| runtime.block_on(direct.get("localhost", "/bytes/64")))
    });
    runtime.block_on(proxy.shutdown());
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
