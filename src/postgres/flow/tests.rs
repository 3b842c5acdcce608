use super::*;
use crate::postgres::statements::classify;

fn statement(sql: &str) -> Arc<Classified> {
    Arc::new(classify(sql, true).remove(0))
}

fn outcomes(done: &[Done]) -> Vec<(Kind, Outcome)> {
    done.iter()
        .map(|d| (d.statement.kind, d.outcome.clone()))
        .collect()
}

#[test]
fn a_pipeline_puts_each_answer_on_its_statement_and_an_error_on_the_one_it_stopped() {
    let mut flow = Flow::new(false);
    let update = statement("UPDATE t SET a = 1");
    let delete = statement("DELETE FROM t");
    let insert = statement("INSERT INTO t VALUES (1)");
    for pending in [
        Pending::Parse(None),
        Pending::Bind,
        Pending::Execute(Some(update.clone())),
        Pending::Parse(None),
        Pending::Bind,
        Pending::Execute(Some(delete.clone())),
        Pending::Execute(Some(insert.clone())),
        Pending::Sync,
    ] {
        flow.push(pending);
    }
    assert!(flow.on_reply(b'1').is_empty());
    assert!(flow.on_reply(b'2').is_empty());
    let done = flow.on_complete("UPDATE 3");
    assert_eq!(
        outcomes(&done),
        vec![(Kind::Update, Outcome::Executed { rows: Some(3) })]
    );
    // The second Parse fails: the DELETE it was for failed with its code, the INSERT after it
    // never ran and has no line.
    let (refusal, done) = flow.on_error(Some("42P01".into()));
    assert_eq!(refusal, None);
    assert_eq!(
        outcomes(&done),
        vec![(
            Kind::Delete,
            Outcome::Failed {
                sqlstate: Some("42P01".into())
            }
        )]
    );
    flow.on_ready();
    assert!(flow.finish().is_empty());
    assert_eq!((flow.changes, flow.reads), (2, 0));
}

#[test]
fn a_refused_query_is_answered_as_refused_and_reads_are_only_counted() {
    let mut flow = Flow::new(false);
    flow.push(Pending::Query {
        statements: vec![statement("SELECT 1"), statement("UPDATE t SET a = 2")],
        next: 0,
        refused: true,
    });
    let (refusal, done) = flow.on_error(Some("42601".into()));
    assert_eq!(refusal, Some(Kind::Update));
    assert_eq!(outcomes(&done), vec![(Kind::Update, Outcome::Refused)]);
    flow.on_ready();
    flow.push(Pending::Query {
        statements: vec![statement("SELECT 1"), statement("SELECT 2")],
        next: 0,
        refused: false,
    });
    assert!(flow.on_complete("SELECT 1").is_empty());
    assert!(flow.on_complete("SELECT 1").is_empty());
    flow.on_ready();
    assert_eq!((flow.reads, flow.refused, flow.changes), (2, 1, 0));
}

#[test]
fn changes_sent_and_never_answered_are_written_at_the_end() {
    let mut flow = Flow::new(true);
    flow.push(Pending::Execute(Some(statement("DELETE FROM t"))));
    flow.push(Pending::Sync);
    assert_eq!(
        outcomes(&flow.finish()),
        vec![(Kind::Delete, Outcome::Unanswered)]
    );
}

#[test]
fn command_tags_give_rows_where_they_have_them() {
    assert_eq!(rows("INSERT 0 5"), Some(5));
    assert_eq!(rows("UPDATE 3"), Some(3));
    assert_eq!(rows("CREATE TABLE"), None);
    assert_eq!(rows("DELETE x"), None);
}
