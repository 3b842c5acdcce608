use super::*;

fn kinds(sql: &str) -> Vec<Kind> {
    classify(sql, true).into_iter().map(|c| c.kind).collect()
}

#[test]
fn reads_and_changes_are_told_apart() {
    use Kind::*;
    for (sql, expected) in [
        ("SELECT a, count(*) FROM t WHERE b = 'x' GROUP BY a", Read),
        ("SHOW search_path", Read),
        ("BEGIN", Read),
        ("COMMIT", Read),
        ("SET statement_timeout = 5", Read),
        ("EXPLAIN DELETE FROM t", Read),
        ("EXPLAIN ANALYZE DELETE FROM t", Delete),
        ("COPY t TO STDOUT", Read),
        ("COPY t TO '/tmp/out'", CopyOut),
        ("COPY t FROM STDIN", CopyFrom),
        ("INSERT INTO t VALUES (1)", Insert),
        ("UPDATE t SET a = 1", Update),
        ("DELETE FROM t", Delete),
        ("TRUNCATE t", Truncate),
        ("CREATE TABLE u (a int)", Create),
        ("CREATE INDEX i ON t (a)", Create),
        ("ALTER TABLE t ADD COLUMN c int", Alter),
        ("DROP TABLE t", Drop),
        ("GRANT SELECT ON t TO bob", Grant),
        ("REVOKE SELECT ON t FROM bob", Revoke),
        (
            "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone",
            Delete,
        ),
        ("SELECT * INTO copy_of_t FROM t", Create),
        ("SELECT nextval('s')", Unknown),
        ("SELECT set_config('a', 'b', false)", Unknown),
        ("SELECT * FROM dblink_exec('x')", Unknown),
        ("CALL cleanup()", Unknown),
        ("EXECUTE stmt(1)", Unknown),
        ("VACUUM t", Other),
        ("DO $$ BEGIN DELETE FROM t; END $$", Unknown),
        ("THIS IS NOT SQL", Unparsed),
    ] {
        assert_eq!(kinds(sql), vec![expected], "{sql}");
    }
    assert_eq!(
        kinds("do language plpgsql $x$ BEGIN END $x$"),
        vec![Unknown]
    );
}

#[test]
fn tables_and_shapes_are_kept_without_values() {
    let all = classify(
        "UPDATE public.users SET email = 'canary@x' WHERE id = 7; DELETE FROM t",
        true,
    );
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].tables, vec!["public.users".to_owned()]);
    let normal = all[0].normalised.as_deref().unwrap();
    assert!(
        !normal.contains("canary") && !normal.contains('7'),
        "{normal}"
    );
    assert_eq!(all[1].kind, Kind::Delete);
    let unparsed = &classify("UPDATE t SET a = 'canary' WHERE", true)[0];
    assert_eq!(unparsed.kind, Kind::Unparsed);
    assert_eq!(unparsed.normalised, None);
    assert!(unparsed.digest.is_some());
}

#[test]
fn what_a_setting_could_make_mean_otherwise_is_not_judged() {
    use Kind::*;
    // With standard_conforming_strings = off the server reads a DELETE here.
    assert_eq!(
        kinds("SELECT 'a\\', ' ; DELETE FROM t; -- '"),
        vec![Unparsed]
    );
    assert_eq!(kinds("SELECT E'a\\'' || 'b'"), vec![Read]);
    // `$` inside an identifier does not open a dollar quote.
    assert!(
        kinds("SELECT 1 AS a$b$; DELETE FROM t; SELECT $b$ x $b$")
            .iter()
            .any(|k| k.changes()),
    );
    for sql in [
        "SET default_transaction_read_only = off",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "BEGIN READ WRITE",
        "RESET ALL",
        "RESET default_transaction_read_only",
    ] {
        assert!(kinds(sql)[0].changes(), "{sql}");
    }
    assert_eq!(kinds("BEGIN"), vec![Read]);
}

#[test]
fn reads_keep_their_shape_only_when_asked() {
    let read = &classify("SELECT a FROM t WHERE b = 'x'", false)[0];
    assert_eq!((read.kind, read.normalised.as_deref()), (Kind::Read, None));
    let change = &classify("DELETE FROM t WHERE b = 'x'", false)[0];
    assert_eq!(
        change.normalised.as_deref(),
        Some("DELETE FROM t WHERE b = $1")
    );
}

/// Hostile nestings just under the token cap are unparsed, on a thread of tokio's default
/// stack size, in a debug build: never a stack overflow. Long flat statements still parse.
#[test]
fn deep_nesting_is_unparsed_not_a_stack_overflow() {
    let deep = crate::postgres::guard::MAX_TOKENS / 2 - 10;
    let on_small_stack = |sql: String| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                classify(&sql, true)
                    .into_iter()
                    .map(|c| c.kind)
                    .collect::<Vec<_>>()
            })
            .unwrap()
            .join()
            .unwrap()
    };
    for sql in [
        format!("SELECT {}1{}", "(".repeat(deep), ")".repeat(deep)),
        format!("SELECT {}1", "- ".repeat(deep)),
        format!("SELECT {}true", "NOT ".repeat(deep)),
        format!(
            "SELECT {}1{}",
            "abs(".repeat(deep / 2),
            ")".repeat(deep / 2)
        ),
        format!("SELECT CAST(1 AS int{})", "[]".repeat(deep)),
        format!("SELECT 1{}", "::int".repeat(deep / 2)),
        format!(
            "SELECT {}1{}",
            "(SELECT ".repeat(deep / 2),
            ")".repeat(deep / 2)
        ),
        format!(
            "SELECT {}1{}",
            "ARRAY[".repeat(deep / 2),
            "]".repeat(deep / 2)
        ),
        format!(
            "SELECT {} 1 {}",
            "CASE WHEN 1 THEN".repeat(deep / 4),
            "END ".repeat(deep / 4)
        ),
        format!("SELECT 1{}", " + 1".repeat(deep)),
        format!("SELECT 1 WHERE a = 1{}", " OR a = 1".repeat(deep / 4)),
        format!("SELECT {}1", "INTERVAL ".repeat(deep)),
    ] {
        let head: String = sql.chars().take(40).collect();
        assert_eq!(on_small_stack(sql), vec![Kind::Unparsed], "{head}");
    }
    // What people write: a long IN list, a long OR of conditions, a wide multi-row insert.
    let params: Vec<String> = (1..=1000).map(|i| format!("${i}")).collect();
    for (sql, kind) in [
        (
            format!("SELECT * FROM t WHERE id IN ({})", params.join(", ")),
            Kind::Read,
        ),
        (
            format!("SELECT * FROM t WHERE a = 1{}", " OR a = 2".repeat(500)),
            Kind::Read,
        ),
        // The longest chain taken: the stack is grown to it.
        (
            format!("DELETE FROM t WHERE a = 1{}", " OR a = 2".repeat(511)),
            Kind::Delete,
        ),
        (
            format!("INSERT INTO t VALUES (1, 'x'){}", ", (2, 'y')".repeat(2000)),
            Kind::Insert,
        ),
    ] {
        assert_eq!(on_small_stack(sql), vec![kind]);
    }
}
