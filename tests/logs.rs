//! Logs that carry no user information. It proves that:
//! - canaries sent in every identifying place (client address from a dedicated loopback alias,
//!   cookie, authorization, API key, query, email and UUID in the path, Referer, User-Agent,
//!   unknown SNI, bodies), and through every error path (400, 404, 413, 421, 431, 502, 504, TLS
//!   failure), appear nowhere in the real binary's output: access files, stdout, stderr;
//!   Canaries also sit in the forms a first masking let through: letters only, mixed case,
//!   `(at)`, `%2540`, `at`/`dot` words, after `reset`/`invite`/`users`, UTF-8, digit suffixes;
//! - `[log] path = "route"` writes the route's prefix and nothing typed after it;
//! - one UUIDv7 request id per request reaches the client, the upstream and the access line,
//!   over h1, h2 and the redirect listener; a client's own `X-Request-Id` is replaced everywhere;
//! - every access line is JSON with allow-listed keys only, the TLS version as negotiated;
//! - files past retention are deleted at start-up; out-of-range retention is refused; a clock
//!   60 days ahead (the real binary under `faketime`) deletes none and is in the audit trail;
//! - lines of finished requests are flushed on shutdown; an unwritable log dir does not stop
//!   the proxy from serving;
//! - the opt-in client hash tells clients apart without naming them.

mod support;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use portcullis::daily::utc_date;
use support::{Client, Setup, WAIT, request, tls_connect, tls_connect_from};
use tokio::io::AsyncWriteExt;

/// The dedicated client address; 127.0.0.0/8 is all loopback on Linux.
const CLIENT_IP: &str = "127.86.75.30";
/// A UUID in a path must be masked; it is fixed because a UUID cannot be made of letters only.
const UUID: &str = "123e4567-e89b-42d3-a456-426614174000";

struct Canaries {
    token: String,
}

impl Canaries {
    fn new() -> Self {
        // Letters only, so that no masking rule for numbers or random-looking strings hides a
        // canary that a missing rule (dropping the query, say) would otherwise have leaked.
        Self {
            token: (0..12).map(|_| fastrand::lowercase()).collect(),
        }
    }

    fn value(&self, place: &str) -> String {
        format!("cnry{place}{}", self.token)
    }

    fn assert_absent(&self, what: &str, output: &str) {
        let lower = output.to_ascii_lowercase();
        assert!(
            !lower.contains(&self.token),
            "a canary leaked into {what}:\n{output}"
        );
        assert!(
            !output.contains(CLIENT_IP),
            "the client address leaked into {what}:\n{output}"
        );
    }
}

/// Every other letter upper case: a mixed-case token of letters only.
fn capitalised(text: &str) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// The real binary, with its stdout and stderr captured.
struct Proxy {
    child: std::process::Child,
    https: SocketAddr,
    http: SocketAddr,
    stderr_path: std::path::PathBuf,
    stdout_path: std::path::PathBuf,
}

/// A failed assertion must not leave the proxy running.
impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(setup: &Setup, extra: &str) -> Self {
        let dir = setup.pki.dir.path();
        let config = dir.join("logs.toml");
        std::fs::write(
            &config,
            setup
                .config()
                .merge(extra)
                .set("log.stdout", true)
                // Tests run as root in CI; the binary refuses that unless told.
                .set("server.allow_root", true)
                .text(),
        )
        .unwrap();
        let stderr_path = dir.join("stderr.txt");
        let stdout_path = dir.join("stdout.txt");
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "-c", config.to_str().unwrap()])
            .env("PORTCULLIS_LOG", "trace")
            .env("RUST_LOG", "trace")
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        let line = loop {
            let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("listening")) {
                break line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "proxy did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let addr = |key: &str| -> SocketAddr {
            let start = line.find(key).unwrap() + key.len();
            let rest: String = line[start..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            rest.parse().unwrap()
        };
        Self {
            https: addr("https"),
            http: addr("http="),
            child,
            stderr_path,
            stdout_path,
        }
    }

    fn stop(mut self) -> (String, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "proxy exited with {status}");
        let mut out = (String::new(), String::new());
        std::fs::File::open(&self.stdout_path)
            .unwrap()
            .read_to_string(&mut out.0)
            .unwrap();
        std::fs::File::open(&self.stderr_path)
            .unwrap()
            .read_to_string(&mut out.1)
            .unwrap();
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_never_reach_any_output() {
    let setup = Setup::new().await;
    let canary = Canaries::new();
    let extra = "[upstreams.down]\nenvironment = \"test\"\naddrs = [\"127.0.0.1:1\"]\n\
        [[routes]]\nhost = \"app.test\"\npath_prefix = \"/down\"\nupstream = \"down\"\n\
        [[routes]]\nhost = \"app.test\"\npath_prefix = \"/small\"\nupstream = \"app\"\nmax_body_bytes = 8\n\
        [limits]\nupstream_response_timeout = \"300ms\"\nmax_header_bytes = 8192\n";
    let proxy = tokio::task::block_in_place(|| Proxy::start(&setup, extra));
    let client_ip: IpAddr = CLIENT_IP.parse().unwrap();
    let paths = [
        format!("/users/{}@example.com/orders", canary.value("mail")),
        format!("/orders/{UUID}"),
        format!(
            "/search?q={}&email={}%40example.com",
            canary.value("query"),
            canary.value("q2")
        ),
        "/a/../../x".to_owned(),
        // Forms a first masking let through: letters only under 32 characters, addresses
        // spelled without `@`, secrets after the word that announces them, names in UTF-8.
        format!("/reset/{}", canary.value("reset")),
        format!("/x/{}", capitalised(&canary.value("caps"))),
        format!("/x/{}(at)example.com", canary.value("at")),
        format!("/x/{}%2540example.com", canary.value("twice")),
        format!("/x/{}-at-example-dot-com", canary.value("dot")),
        format!("/invite/{}/accept", canary.value("invite")),
        format!("/users/{}/settings", canary.value("name")),
        format!("/x/{}%C3%BC", canary.value("utf")),
        format!("/x/{}123", canary.value("digits")),
        "/down".to_owned(),
        "/slow/2000".to_owned(),
    ];
    // Ids of requests the proxy answered itself: its operational log names them.
    let mut answered_ids = Vec::new();
    for h2 in [false, true] {
        let mut client =
            Client::connect_from(Some(client_ip), h2, proxy.https, "app.test", &setup.pki).await;
        for path in &paths {
            let req = request("GET", "app.test", path)
                .header("cookie", format!("session={}", canary.value("cookie")))
                .header("authorization", format!("Bearer {}", canary.value("auth")))
                .header(
                    "proxy-authorization",
                    format!("Basic {}", canary.value("pauth")),
                )
                .header("x-api-key", canary.value("apikey"))
                .header(
                    "referer",
                    format!("https://{}.example/", canary.value("referer")),
                )
                .header("user-agent", canary.value("ua"))
                .header("x-forwarded-for", canary.value("xff"))
                .body(Full::default())
                .unwrap();
            client.send(req).await;
        }
        let body = Bytes::from(canary.value("body"));
        client
            .send(
                request("POST", "app.test", "/echo")
                    .body(Full::new(body.clone()))
                    .unwrap(),
            )
            .await;
        let too_big = client
            .send(
                request("POST", "app.test", "/small")
                    .body(Full::new(body))
                    .unwrap(),
            )
            .await;
        assert_eq!(too_big.status, 413);
        let misdirected = client
            .get(&format!("{}.example", canary.value("host")), "/")
            .await;
        assert_eq!(misdirected.status, 421);
        let unrouted = client
            .get("unrouted.test", &format!("/x?{}", canary.value("404")))
            .await;
        assert_eq!(unrouted.status, 404);
        answered_ids.push(unrouted.header("x-request-id").unwrap().to_owned());
    }
    let big = support::raw_tls(
        proxy.https,
        "app.test",
        &setup.pki,
        format!(
            "GET /?{} HTTP/1.1\r\nHost: app.test\r\nCookie: {}\r\n\r\n",
            canary.value("431"),
            canary.value("x").repeat(600)
        )
        .as_bytes(),
    )
    .await;
    assert!(big.starts_with("HTTP/1.1 431"), "{big}");
    let sni = tls_connect_from(
        Some(client_ip),
        proxy.https,
        &format!("{}.example", canary.value("sni")),
        setup.pki.client(&[b"h2"]),
    )
    .await;
    assert!(sni.is_err());
    let mut plain = support::tcp_from(Some(client_ip), proxy.http)
        .await
        .unwrap();
    plain
        .write_all(
            format!(
                "GET /r?{} HTTP/1.1\r\nHost: localhost\r\nCookie: {}\r\nConnection: close\r\n\r\n",
                canary.value("redirect"),
                canary.value("c")
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    support::read_to_close(&mut plain).await;
    let mut garbage = tls_connect(proxy.https, "app.test", setup.pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    let _ = garbage
        .write_all(format!("GET /{} HTTP/9.9\r\n\r\n", canary.value("bad")).as_bytes())
        .await;
    support::read_to_close(&mut garbage).await;

    let (stdout, stderr) = tokio::task::block_in_place(|| proxy.stop());
    let lines = setup.access_lines();
    assert!(
        lines.len() >= 2 * (paths.len() + 4),
        "expected a line per request, got {}",
        lines.len()
    );
    canary.assert_absent("stdout", &stdout);
    canary.assert_absent("stderr", &stderr);
    for id in &answered_ids {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("proxy answered") && l.contains(id.as_str())),
            "the operational log does not name {id}:\n{stderr}"
        );
    }
    canary.assert_absent("the access log", &lines.join("\n"));
    let statuses: Vec<u64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["status"].as_u64())
        .collect();
    for status in [200, 301, 400, 404, 413, 421, 502, 504] {
        assert!(
            statuses.contains(&status),
            "no line with status {status}: {statuses:?}"
        );
    }
}

#[tokio::test]
async fn access_lines_are_json_with_allow_listed_keys_only() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        client.get("localhost", "/users/42?secret=1").await;
        client.get("evil.example", "/").await;
    }
    assert!(proxy.shutdown().await);
    let lines = setup.access_lines();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let object = value.as_object().unwrap();
        // Written out here, not taken from the crate: a field added to the record must be
        // added to this list by someone who decided it carries no user information.
        const ALLOWED: [&str; 16] = [
            "ts",
            "listener",
            "protocol",
            "tls",
            "method",
            "route",
            "path",
            "status",
            "request_bytes",
            "retries",
            "response_bytes",
            "duration_us",
            "upstream",
            "request_id",
            "error",
            "client_hash",
        ];
        for key in object.keys() {
            assert!(
                ALLOWED.contains(&key.as_str()),
                "unexpected key {key} in {line}"
            );
        }
        assert_eq!(object["listener"], "https");
    }
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["path"], "/users/<id>");
    assert_eq!(first["route"], "localhost/");
    assert_eq!(first["upstream"], "app");
    assert_eq!(first["protocol"], "h1");
    assert_eq!(first["status"], 200);
    let misdirected: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(misdirected["route"], "-");
    assert_eq!(misdirected["error"], "misdirected");
    let h2: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(h2["protocol"], "h2");
}

/// One id per request joins the client's view, the upstream's and the access log; a client's
/// own `X-Request-Id` is replaced, never forwarded, never logged.
#[tokio::test]
async fn one_request_id_reaches_the_client_the_upstream_and_the_log() {
    let setup = Setup::new().await;
    let canary = Canaries::new();
    let proxy = setup.start("").await;
    let mut ids = Vec::new();
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        for _ in 0..2 {
            let answer = client
                .send(
                    request("GET", "localhost", "/echo")
                        .header("x-request-id", canary.value("rid"))
                        .header("connection", "x-request-id")
                        .body(Full::default())
                        .unwrap(),
                )
                .await;
            let id = answer
                .header("x-request-id")
                .expect("x-request-id")
                .to_owned();
            let parsed = uuid::Uuid::parse_str(&id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 7, "{id}");
            assert_eq!(
                support::upstream::seen(&answer.text(), "x-request-id"),
                std::slice::from_ref(&id),
                "the upstream must see our id, once"
            );
            ids.push(id);
        }
    }
    let http = proxy.http_addr.unwrap();
    let redirect = support::raw_tcp(
        http,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let redirect_id = redirect
        .lines()
        .find_map(|l| {
            l.split_once(": ")
                .filter(|(name, _)| name.eq_ignore_ascii_case("x-request-id"))
        })
        .map(|(_, id)| id.trim())
        .expect("a 301 carries an id too")
        .to_owned();
    ids.push(redirect_id);
    assert!(proxy.shutdown().await);
    let lines = setup.access_lines();
    let logged: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids repeat: {ids:?}");
    let mut sorted_logged = logged.clone();
    sorted_logged.sort();
    assert_eq!(sorted_logged, unique, "each request's line has its id");
    canary.assert_absent("the access log", &lines.join("\n"));
}

#[tokio::test]
async fn old_files_are_deleted_at_start_up_within_retention() {
    for (retention, keep_16_days_old) in [(15, false), (30, true)] {
        let setup = Setup::new().await;
        let dir = setup.log_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let days_ago = |d: u64| utc_date(SystemTime::now() - Duration::from_secs(86_400 * d));
        // A file a day for 40 days: the newest `retention_days` files always stay (a clock
        // running ahead must not erase the trail), so only a history longer than that shows
        // what goes by date.
        for d in 1..=40 {
            for kind in ["access", "audit"] {
                std::fs::write(dir.join(format!("{kind}-{}.jsonl", days_ago(d))), "{}\n").unwrap();
            }
        }
        let files = [
            format!("access-{}.jsonl", days_ago(31)),
            format!("audit-{}.jsonl", days_ago(31)),
            format!("access-{}.jsonl", days_ago(16)),
            format!("access-{}.jsonl", days_ago(14)),
            "notes.txt".to_owned(),
        ];
        std::fs::write(dir.join(&files[4]), "{}\n").unwrap();
        let toml = setup.config().set("log.retention_days", retention).text();
        let proxy = support::start_toml(&toml).await;
        let deadline = std::time::Instant::now() + WAIT;
        // The access-log and audit writers each sweep their own files.
        while (dir.join(&files[0]).exists() || dir.join(&files[1]).exists())
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !dir.join(&files[0]).exists(),
            "31 days old, retention {retention}"
        );
        assert!(
            !dir.join(&files[1]).exists(),
            "audit 31 days old, retention {retention}"
        );
        assert_eq!(
            dir.join(&files[2]).exists(),
            keep_16_days_old,
            "16 days old, retention {retention}"
        );
        assert!(
            dir.join(&files[3]).exists(),
            "14 days old is within any retention"
        );
        assert!(dir.join(&files[4]).exists(), "other files are left alone");
        proxy.shutdown().await;
    }
}

/// A wrong NTP answer must not erase the trail: the real binary started with its clock 60 days
/// ahead (`faketime`) deletes no access or audit file, today's included, and says why in the
/// audit trail.
#[tokio::test]
async fn a_clock_60_days_ahead_deletes_no_log_file() {
    let setup = Setup::new().await;
    let dir = setup.log_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let days_ago = |d: u64| utc_date(SystemTime::now() - Duration::from_secs(86_400 * d));
    let files: Vec<String> = (0..20)
        .flat_map(|d| {
            [
                format!("access-{}.jsonl", days_ago(d)),
                format!("audit-{}.jsonl", days_ago(d)),
            ]
        })
        .collect();
    for file in &files {
        std::fs::write(dir.join(file), "{}\n").unwrap();
    }
    let config = setup.pki.dir.path().join("ahead.toml");
    let toml = setup
        .config()
        .set("log.retention_days", 15)
        .set("server.allow_root", true)
        .text();
    std::fs::write(&config, toml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.args(["run", "-c"]).arg(&config);
    if !support::fake_clock(&mut command, "+60d") {
        return;
    }
    let proxy = support::spawn_until_listening(command);
    let held = || {
        setup
            .audit()
            .into_iter()
            .find(|r| r["event"] == "retention_held")
    };
    let deadline = std::time::Instant::now() + WAIT;
    while held().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status();
    drop(proxy);
    let record = held().expect("a retention_held line in the audit trail");
    assert_eq!(record["kind"], "audit", "{record}");
    assert_eq!(record["newest"], format!("audit-{}.jsonl", days_ago(0)));
    let gone: Vec<&String> = files.iter().filter(|f| !dir.join(f).exists()).collect();
    assert!(
        gone.is_empty(),
        "deleted by a clock 60 days ahead: {gone:?}"
    );
}

/// `[log] path = "route"`: the access log has the matched route's prefix and nothing a
/// client typed after it.
#[tokio::test]
async fn route_mode_logs_no_segment_beyond_the_prefix() {
    let setup = Setup::new().await;
    let canary = Canaries::new();
    let extra = "[[routes]]\nhost = \"localhost\"\npath_prefix = \"/api/\"\nupstream = \"app\"\n";
    let toml = setup.config().merge(extra).set("log.path", "route").text();
    let proxy = support::start_toml(&toml).await;
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        for path in [
            format!("/api/orders/{}", canary.value("api")),
            format!("/static/{}.css", canary.value("root")),
            format!("/api/{}", canary.value("short")),
        ] {
            assert_eq!(client.get("localhost", &path).await.status, 200);
        }
        assert_eq!(
            client
                .get("unrouted.test", &format!("/{}", canary.value("unrouted")))
                .await
                .status,
            404
        );
    }
    assert!(proxy.shutdown().await);
    let lines = setup.access_lines();
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let paths: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
        .collect();
    assert_eq!(
        paths,
        ["\"/api/\"", "\"/\"", "\"/api/\"", "\"-\""].repeat(2),
        "{lines:#?}"
    );
    canary.assert_absent("the access log", &lines.join("\n"));
}

/// A name that the masking's word rules keep (short, pronounceable, letters only): only the
/// words before it and the way the path was normalised can mask it.
fn plain_name() -> String {
    (0..3)
        .flat_map(|_| {
            let consonant = b"bdfgklmnprstvz"[fastrand::usize(..14)];
            let vowel = b"aeiou"[fastrand::usize(..5)];
            [char::from(consonant), char::from(vowel)]
        })
        .collect()
}

/// The path logged is the one the request was routed by: escapes, dot segments and doubled
/// slashes that the proxy normalises away cannot smuggle a name past the person words, and the
/// person vocabulary covers home directories, staff and customers and `first.last`.
#[tokio::test]
async fn person_paths_are_masked_as_they_were_routed() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let names: Vec<String> = (0..13).map(|_| plain_name()).collect();
    let paths = [
        format!("/%75sers/{}", names[0]),
        format!("/user%73/{}", names[1]),
        format!("/users/./{}", names[2]),
        format!("/users//{}", names[3]),
        format!("/users/x/../{}", names[4]),
        format!("/~{}/", names[5]),
        format!("/employee/{}", names[6]),
        format!("/customer/{}", names[7]),
        format!("/author/{}", names[8]),
        format!("/owner/{}", names[9]),
        format!("/uid/{}", names[10]),
        format!("/usr/{}", names[11]),
        format!("/team/{}.{}", names[12], names[0]),
    ];
    for h2 in [false, true] {
        let mut client = Client::connect(h2, proxy.https_addr, "localhost", &setup.pki).await;
        for path in &paths {
            let answer = client.get("localhost", path).await;
            assert_eq!(answer.status, 200, "{path}");
        }
    }
    assert!(proxy.shutdown().await);
    let lines = setup.access_lines().join("\n");
    assert_eq!(setup.access_lines().len(), 2 * paths.len(), "{lines}");
    for name in &names {
        assert!(!lines.contains(name.as_str()), "{name} leaked:\n{lines}");
    }
    assert!(lines.contains("/users/<masked>"), "{lines}");
}

#[tokio::test]
async fn log_path_mode_and_buffer_are_checked() {
    let setup = Setup::new().await;
    for lines in [0, 10_000_001] {
        let toml = setup.config().set("log.buffer_lines", lines).text();
        support::assert_refused(&toml, "log.buffer_lines");
    }
    let toml = setup.config().set("log.path", "full").text();
    let error = support::config_from(&toml).unwrap_err().to_string();
    assert!(error.contains("path") && error.contains("route"), "{error}");
    for mode in ["masked", "route"] {
        support::config_from(&setup.config().set("log.path", mode).text()).unwrap();
    }
}

#[tokio::test]
async fn retention_outside_15_to_30_days_is_refused() {
    let setup = Setup::new().await;
    for days in [0, 14, 31, 365] {
        let toml = setup.config().set("log.retention_days", days).text();
        support::assert_refused(&toml, "log.retention_days");
    }
}

#[tokio::test]
async fn lines_are_flushed_on_shutdown() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    let mut client = Client::connect(true, proxy.https_addr, "localhost", &setup.pki).await;
    for _ in 0..50 {
        assert_eq!(client.get("localhost", "/").await.status, 200);
    }
    drop(client);
    assert!(proxy.shutdown().await);
    assert_eq!(setup.access_lines().len(), 50);
}

#[tokio::test]
async fn an_unwritable_log_dir_does_not_stop_serving() {
    let setup = Setup::new().await;
    let blocker = setup.pki.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let toml = setup
        .config()
        .set("log.dir", blocker.join("logs").display().to_string())
        .text();
    let proxy = support::start_toml(&toml).await;
    let mut client = Client::connect(false, proxy.https_addr, "localhost", &setup.pki).await;
    for _ in 0..3 {
        assert_eq!(client.get("localhost", "/").await.status, 200);
    }
}

#[tokio::test]
async fn opt_in_client_hash_counts_clients_without_naming_them() {
    let setup = Setup::new().await;
    let toml = setup.config().set("log.client_hash", true).text();
    let proxy = support::start_toml(&toml).await;
    for client in ["127.86.75.30", "127.86.75.30", "127.86.75.31"] {
        let ip: IpAddr = client.parse().unwrap();
        let mut c =
            Client::connect_from(Some(ip), false, proxy.https_addr, "localhost", &setup.pki).await;
        assert_eq!(c.get("localhost", "/").await.status, 200);
    }
    assert!(proxy.shutdown().await);
    let hashes: Vec<String> = setup
        .access_lines()
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["client_hash"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(hashes.len(), 3);
    assert_eq!(hashes[0], hashes[1], "one client, one hash");
    assert_ne!(hashes[0], hashes[2], "two clients, two hashes");
    for hash in &hashes {
        assert!(
            hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{hash}"
        );
    }
    assert!(!setup.access_lines().join("\n").contains("127.86.75"));
}

#[tokio::test]
async fn the_tls_version_is_logged_as_negotiated() {
    let setup = Setup::new().await;
    let proxy = setup.start("").await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(setup.pki.ca.clone()).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut sender = support::h1_with(proxy.https_addr, "localhost", client.into())
            .await
            .unwrap();
        let request = request("GET", "localhost", "/")
            .body(Full::default())
            .unwrap();
        assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    }
    assert!(proxy.shutdown().await);
    let mut logged: Vec<String> = setup
        .access_lines()
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["tls"].to_string())
        .collect();
    logged.sort();
    assert_eq!(logged, ["\"1.2\"", "\"1.3\""]);
}
