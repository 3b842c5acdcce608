//! Database tunnels (`protocol = "postgres"`) against a real PostgreSQL with TLS on, reached
//! through `portcullis connect --listen` by `psql` (the simple protocol) and by `tokio-postgres`
//! (the extended protocol: Parse, Bind, Execute, with bind parameters). It proves that:
//! - each INSERT, UPDATE, DELETE and CREATE is one audit line with the employee, the database
//!   role and database, the kind, the tables, the text with its values replaced, a digest and
//!   the rows; a failed statement carries its SQLSTATE; the lines join the tunnel's by id;
//! - a canary in every literal and bind parameter reaches the database and comes back to the
//!   client, and is in no audit line, access-log line or the proxy's own output;
//! - a read-only tunnel refuses an UPDATE (simple and extended) before the database sees it:
//!   the row is unchanged, the session goes on, and `allow_write` lets its group write;
//! - a database whose certificate the tunnel's CA does not vouch for is refused;
//! - a malformed startup or an oversized message closes the tunnel, and the next one works;
//! - `connect --listen` takes loopback addresses only;
//! - a reload that takes write away ends the sessions that had it, and no other.

mod support;

use support::employees::{Employees, gateway_toml};
use support::postgres::{GATEWAY, Rig, USER, driver, psql, psql_ok, sqlstate};
use support::{Setup, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CANARY: &str = "CANARY5f3a9e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_audited_by_shape_and_no_value_is_written_anywhere() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (_alice, port, alice_said) = rig.listen("alice", "pg1:5432");
    psql_ok(
        port,
        "CREATE TABLE people (id int PRIMARY KEY, email text UNIQUE, note text)",
    );
    psql_ok(
        port,
        &format!(
            "INSERT INTO people VALUES (1, 'a-{CANARY}@example.com', 'n-{CANARY}'), (2, 'b-{CANARY}', '')"
        ),
    );
    psql_ok(
        port,
        &format!("UPDATE people SET note = 'u-{CANARY}' /* c-{CANARY} */ WHERE id = 1"),
    );
    // The values go to the database and come back: only the audit trail does without them.
    let read = psql_ok(port, "SELECT note FROM people WHERE id = 1");
    assert_eq!(read, format!("u-{CANARY}"));
    let duplicate = psql(
        port,
        &format!("INSERT INTO people VALUES (3, 'a-{CANARY}@example.com', '')"),
    );
    assert!(!duplicate.status.success());
    let error = String::from_utf8_lossy(&duplicate.stderr);
    assert!(error.contains("duplicate key"), "{error}");
    psql_ok(
        port,
        &format!("DELETE FROM people WHERE email = 'b-{CANARY}'"),
    );

    let client = driver(port).await;
    let note = format!("bind-{CANARY}");
    let updated = client
        .execute("UPDATE people SET note = $1 WHERE id = $2", &[&note, &1i32])
        .await
        .unwrap();
    assert_eq!(updated, 1);
    let row = client
        .query_one("SELECT note FROM people WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), note);
    let email = format!("a-{CANARY}@example.com");
    let failed = client
        .execute(
            "INSERT INTO people VALUES ($1, $2, $3)",
            &[&4i32, &email, &note],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&failed), "23505");
    drop(client);

    // Every session's last line first: its statements' lines are written before it.
    let sessions = rig.audit_lines("db_session", 7).await;
    assert_eq!(sessions.len(), 7, "{:#?}", rig.setup.audit());
    let lines = rig.audit_lines("db_statement", 7).await;
    let summary: Vec<(String, String, Option<u64>, String)> = lines
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap_or_default().to_owned(),
                l["outcome"].as_str().unwrap_or_default().to_owned(),
                l["rows"].as_u64(),
                l["sqlstate"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("create", "executed", None, ""),
        ("insert", "executed", Some(2), ""),
        ("update", "executed", Some(1), ""),
        ("insert", "failed", None, "23505"),
        ("delete", "executed", Some(1), ""),
        ("update", "executed", Some(1), ""),
        ("insert", "failed", None, "23505"),
    ]
    .map(|(k, o, r, s)| (k.to_owned(), o.to_owned(), r, s.to_owned()));
    assert_eq!(summary, expected);
    let opened = rig.audit_lines("tunnel_opened", 7).await;
    for line in &lines {
        assert_eq!(line["user"], "alice", "{line}");
        assert_eq!(line["db_user"], USER);
        assert_eq!(line["database"], "postgres");
        assert_eq!(line["tables"], serde_json::json!(["people"]), "{line}");
        assert_eq!(line["digest"].as_str().map(str::len), Some(16), "{line}");
        assert!(opened.iter().any(|o| o["id"] == line["id"]), "{line}");
    }
    assert_eq!(
        lines[2]["statement"],
        "UPDATE people SET note = $1 WHERE id = $2"
    );
    assert_eq!(
        lines[5]["statement"],
        "UPDATE people SET note = $1 WHERE id = $2"
    );
    // Two SELECTs were counted, not written.
    let reads: u64 = sessions.iter().filter_map(|s| s["reads"].as_u64()).sum();
    assert_eq!(reads, 2, "{sessions:?}");

    // The review: per tunnel and employee, which kinds of change how often.
    let config = rig.config.to_str().unwrap();
    let review = support::portcullis_ok(&["access-report", "-c", config, "--since", "1d"]);
    let pg1 = review
        .find("gw.corp.test CONNECT pg1:5432\n")
        .expect(&review);
    assert!(
        review[pg1..].contains(
            "  alice: create 1, delete 1, insert 1, update 2; failed 2, refused 0, unanswered 0; 7 sessions, 2 reads"
        ),
        "{review}"
    );
    let written = rig.everything_written(&[&alice_said]);
    assert!(written.contains("db_statement"), "the trail was read");
    assert!(!written.contains(CANARY), "a value was written: {written}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_tunnel_refuses_changes_before_they_reach_the_database() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    // bob is in ops, which allow_write names.
    let (_bob, bob_port, _) = rig.listen("bob", "pg1:5433");
    psql_ok(
        bob_port,
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text)",
    );
    psql_ok(bob_port, "INSERT INTO accounts VALUES (1, 'before')");
    let (_alice, port, _) = rig.listen("alice", "pg1:5433");
    let refused = psql(port, "UPDATE accounts SET owner = 'after' WHERE id = 1");
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("read-only for you: update refused"),
        "{error}"
    );
    // A write the gateway's reading misses (a function named like a read-only built-in) is
    // refused by the database itself: the session's transactions are read-only there too, and
    // turning that off is a change.
    psql_ok(
        bob_port,
        "CREATE FUNCTION public.lower(int) RETURNS int LANGUAGE sql \
         AS $$ UPDATE accounts SET owner = 'sneaky' RETURNING 1 $$",
    );
    let sneaky = psql(port, "SELECT lower(1)");
    let error = String::from_utf8_lossy(&sneaky.stderr);
    assert!(error.contains("read-only transaction"), "{error}");
    let unlocked = psql(port, "SET default_transaction_read_only = off");
    let error = String::from_utf8_lossy(&unlocked.stderr);
    assert!(
        error.contains("read-only for you: other refused"),
        "{error}"
    );
    assert_eq!(
        psql_ok(port, "SELECT owner FROM accounts WHERE id = 1"),
        "before"
    );

    // The extended protocol: refused with read_only_sql_transaction, and the session goes on.
    let client = driver(port).await;
    let refused = client
        .execute("DELETE FROM accounts WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "25006");
    let row = client
        .query_one("SELECT owner FROM accounts WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "before");
    drop(client);

    // Three changes of bob's, three refusals, and (log_reads) alice's three reads.
    let lines = rig.audit_lines("db_statement", 9).await;
    let refusals: Vec<_> = lines.iter().filter(|l| l["outcome"] == "refused").collect();
    assert_eq!(refusals.len(), 3, "{lines:?}");
    for (line, kind) in refusals.iter().zip(["update", "other", "delete"]) {
        assert_eq!(line["user"], "alice");
        assert_eq!(line["kind"], kind);
    }
    assert!(
        lines
            .iter()
            .any(|l| l["user"] == "bob" && l["kind"] == "insert" && l["outcome"] == "executed")
    );
    // With log_reads each read is a line too, by shape; the one whose function tried to write
    // failed in the database with read_only_sql_transaction.
    let reads: Vec<_> = lines.iter().filter(|l| l["kind"] == "read").collect();
    assert_eq!(reads.len(), 3, "{lines:?}");
    assert!(reads.iter().all(|l| l["user"] == "alice"));
    assert!(reads.iter().any(
        |l| l["statement"] == "SELECT owner FROM accounts WHERE id = $1"
            && l["outcome"] == "executed"
    ));
    assert!(
        reads
            .iter()
            .any(|l| l["outcome"] == "failed" && l["sqlstate"] == "25006"),
        "{reads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_database_and_malformed_messages_close_the_tunnel_and_nothing_else() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    // pg2's CA is not the one that signed the database's certificate.
    let (_wrong, wrong_port, _) = rig.listen("alice", "pg2:5432");
    let refused = psql(wrong_port, "SELECT 1");
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("could not connect securely to the database"),
        "{error}"
    );

    let (_alice, port, _) = rig.listen("alice", "pg1:5432");
    let mut startup = Vec::new();
    startup.extend_from_slice(&0u32.to_be_bytes());
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(format!("user\0{USER}\0\0").as_bytes());
    let len = u32::try_from(startup.len()).unwrap().to_be_bytes();
    startup[..4].copy_from_slice(&len);
    for attack in [
        // A startup packet longer than PostgreSQL allows.
        vec![0x00, 0x10, 0x00, 0x00, 0, 3, 0, 0],
        // A Query that claims 2 GiB, right after the startup.
        [startup.clone(), vec![b'Q', 0x7f, 0xff, 0xff, 0xff, b'S']].concat(),
        // A length under its own four bytes.
        [startup.clone(), vec![b'Q', 0, 0, 0, 2]].concat(),
    ] {
        let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        raw.write_all(&attack).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WAIT, raw.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the tunnel stayed open after {attack:?}");
    }
    let closes = rig.audit_lines("tunnel_closed", 4).await;
    let malformed = closes
        .iter()
        .filter(|c| c["closed_by"] == "malformed")
        .count();
    assert!(malformed >= 2, "{closes:?}");
    assert!(
        closes.iter().any(|c| c["closed_by"] == "upstream_failed"),
        "{closes:?}"
    );
    // Nesting that would run the parser's stack out is not parsed (the database judges it).
    for hostile in [
        format!("SELECT {}true", "NOT ".repeat(9000)),
        format!("SELECT CAST(1 AS int{})", "[]".repeat(9000)),
        format!("SELECT 1{}", " + 1".repeat(9000)),
    ] {
        let _ = psql(port, &hostile);
    }
    // The proxy and the listener are still there.
    assert_eq!(psql_ok(port, "SELECT 40 + 2"), "42");

    let out = support::portcullis(&["connect", "--listen", "0.0.0.0:15432", "pg1:5432"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a loopback address"));
}

#[tokio::test]
async fn database_keys_are_refused_by_key_where_they_mean_nothing_or_too_little() {
    let setup = Setup::new().await;
    let employees = Employees::new();
    let base = setup
        .config()
        .merge(&gateway_toml(&setup, &employees, 666))
        .merge(&format!(
            "[upstreams.pg]\nenvironment = \"test\"\naddrs = [\"127.0.0.1:5432\"]\n\
         [[tunnels]]\nhost = \"{GATEWAY}\"\ntarget = \"pg1\"\nport = 5432\nupstream = \"pg\"\n\
         allow = [\"alice\"]\nprotocol = \"postgres\"\ntls_ca = \"{ca}\"\n",
            ca = setup.pki.ca_pem.display(),
        ));
    let read_only = base
        .clone()
        .set("tunnels[0].read_only", true)
        .set("tunnels[0].allow_write", support::strings(&["group:ops"]));
    let described = portcullis::config::describe(&support::config_from(&read_only.text()).unwrap());
    assert!(
        described.contains("postgres over TLS to pg1 (CA ")
            && described.contains("read-only but for group:ops"),
        "{described}"
    );
    let missing = setup.pki.dir.path().join("missing-ca.pem");
    for (toml, key, reason) in [
        (
            base.clone().set("tunnels[0].protocol", "tcp"),
            "tunnels[0].tls_ca",
            "only with protocol = \"postgres\"",
        ),
        (
            base.clone().set("tunnels[0].protocol", "mysql"),
            "tunnels[0].protocol",
            "expected one of: tcp, postgres",
        ),
        (
            base.clone()
                .set("tunnels[0].allow_write", support::strings(&["group:ops"])),
            "tunnels[0].allow_write",
            "without read_only = true",
        ),
        (
            base.clone().set("tunnels[0].read_only", true).set(
                "tunnels[0].allow_write",
                support::strings(&["group:nobody"]),
            ),
            "tunnels[0].allow_write[0]",
            "nobody",
        ),
        (
            base.clone().set("tunnels[0].server_name", "not a name!"),
            "tunnels[0].server_name",
            "not a DNS name",
        ),
        (
            base.clone()
                .set("tunnels[0].tls_ca", missing.display().to_string()),
            "tunnels[0].tls_ca",
            "missing-ca.pem",
        ),
    ] {
        support::assert_refused_with(&toml.text(), key, reason);
    }
    let mut no_ca = support::ConfigToml::parse(&base.text().replace(
        &format!("tls_ca = \"{}\"\n", setup.pki.ca_pem.display()),
        "",
    ));
    no_ca = no_ca.set("tunnels[0].port", 5432);
    support::assert_refused_with(&no_ca.text(), "tunnels[0].tls_ca", "needs tls_ca");
}

/// A reload that makes a tunnel read-only ends the sessions that could write on it; one whose
/// rules did not change goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_takes_write_away_ends_the_writing_sessions() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let (_rw, rw_port, _) = rig.listen("alice", "pg1:5432");
    let (_ro, ro_port, _) = rig.listen("alice", "pg1:5433");
    let (writer, reader) = (driver(rw_port).await, driver(ro_port).await);
    writer.simple_query("CREATE TABLE t (a int)").await.unwrap();
    reader.simple_query("SELECT 1").await.unwrap();
    let text = std::fs::read_to_string(&rig.config).unwrap();
    let read_only = support::ConfigToml::parse(&text).set("tunnels[0].read_only", true);
    std::fs::write(&rig.config, read_only.text()).unwrap();
    let reloaded = std::process::Command::new("kill")
        .args(["-HUP", &rig.proxy.0.id().to_string()])
        .status()
        .unwrap();
    assert!(reloaded.success());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !writer.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writing session outlived the reload"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    reader.simple_query("SELECT 2").await.unwrap();
    let closes = rig.audit_lines("tunnel_closed", 1).await;
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0]["closed_by"], "reconfigured");
    assert_eq!(closes[0]["tunnel"], "gw.corp.test CONNECT pg1:5432");
}
