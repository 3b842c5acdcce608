//! An idle connection holds no buffer (issue 37). Each of the patched behaviours of `vendor/` it
//! relies on is seen from outside: real TLS clients (Python's ssl, in another process) open
//! connections, make one request each and go quiet, and the proxy, running in this process,
//! must then hold no buffer-sized allocation (4 KiB or more) per connection. Live allocations
//! are counted by this test binary's own global allocator. It proves that:
//! - an idle HTTP/1.1 connection keeps neither hyper's read nor its write buffer (8 KiB each,
//!   `vendor/hyper-1.12.0`), nor rustls's deframer buffer (4 KiB, `vendor/rustls-0.23.46`);
//! - an idle HTTP/2 connection keeps neither h2's read buffer (8 KiB) nor its write buffer
//!   (16 KiB), nor its HPACK decoder's Huffman scratch buffer (4 KiB), and its HPACK tables keep
//!   copies, not slices of a read buffer: the client sends its fields as raw literals with
//!   incremental indexing, which a decoder that kept slices would hold in its table, and with
//!   them the whole read buffer they came in (`vendor/h2-0.4.21`); the upstream's response
//!   fields go into the encoder's table the same way, and must not hold the upstream
//!   connection's read buffer either.
//!
//! Each was red with its change reverted: N or 2N live buffers for N idle connections (run
//! with 200 connections then: 201 to 205 buffers, against 3 to 11 with every change in).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Stdio;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use support::Setup;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The smallest buffer the patches give back: rustls's deframer and h2's Huffman scratch.
const BUFFER: usize = 4096;

/// Live allocations of at least `BUFFER` bytes, and their bytes.
static LIVE_BUFFERS: AtomicIsize = AtomicIsize::new(0);
static LIVE_BUFFER_BYTES: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are the system allocator's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && layout.size() >= BUFFER {
            LIVE_BUFFERS.fetch_add(1, Ordering::Relaxed);
            LIVE_BUFFER_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= BUFFER {
            LIVE_BUFFERS.fetch_sub(1, Ordering::Relaxed);
            LIVE_BUFFER_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Idle connections each test holds: enough that one buffer each stands far above what the
/// process keeps whatever the number of connections (below).
const CONNECTIONS: usize = 600;

/// The counters are the process's: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn live() -> (isize, isize) {
    (
        LIVE_BUFFERS.load(Ordering::Relaxed),
        LIVE_BUFFER_BYTES.load(Ordering::Relaxed),
    )
}

/// Opens `CONNECTIONS` connections that each make one request and then stay quiet, and returns
/// the live buffers they added to this process once all are open, with the client's summary.
async fn buffers_held_by_idle_connections(h2: bool) -> (isize, isize, String) {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let client = |count: usize| {
        let mut command = tokio::process::Command::new("python3");
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/benches/load/idle_conns.py"
            ))
            .args(["--host", "127.0.0.1", "--name", "app.test", "--path", "/"])
            .args(["--port", &proxy.https_addr.port().to_string()])
            .args(["--count", &count.to_string(), "--parallel", "20"])
            .args(["--open-timeout", "60", "--hold", "60"])
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if h2 {
            command.arg("--h2");
        }
        command.spawn().expect("python3 runs the idle client")
    };
    // A first client warms up what every connection shares (the upstream pool, the log
    // writer, the session caches), so that it is not counted per connection.
    let mut warm = client(20);
    let first = first_line(&mut warm).await;
    assert!(first.starts_with("READY"), "warm-up: {first}");
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = live();
    let mut held = client(CONNECTIONS);
    let ready = first_line(&mut held).await;
    assert!(ready.starts_with("READY"), "{ready}");
    // Let the proxy finish what it does after the last response (it then waits on every
    // connection) before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = live();
    drop(held);
    (after.0 - before.0, after.1 - before.1, ready)
}

async fn first_line(child: &mut tokio::process::Child) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    let read = reader.read_line(&mut line);
    tokio::time::timeout(Duration::from_secs(90), read)
        .await
        .expect("the client said nothing in 90 s")
        .unwrap();
    line
}

fn assert_no_buffer_per_connection(what: &str, (buffers, bytes, client): (isize, isize, String)) {
    eprintln!("{CONNECTIONS} idle {what} connections: {buffers} more live buffers, {bytes} bytes");
    // A buffer per connection would be CONNECTIONS (or twice that). A third leaves room for
    // what grows with the process but not with connections: rustls's pool of quiet buffers
    // (at most 64 per thread, two workers here), a slab, a map.
    assert!(
        buffers < (CONNECTIONS / 3) as isize,
        "{CONNECTIONS} idle {what} connections hold {buffers} more buffers of {BUFFER} bytes or \
         more ({bytes} bytes, {} per connection); client: {client}",
        bytes / CONNECTIONS as isize
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_holds_no_buffer() {
    let held = buffers_held_by_idle_connections(false).await;
    assert_no_buffer_per_connection("HTTP/1.1", held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_holds_no_buffer_and_its_tables_pin_none() {
    let held = buffers_held_by_idle_connections(true).await;
    assert_no_buffer_per_connection("HTTP/2", held);
}
