//! A session once both ends are set up: the client's messages go to the database and its
//! answers come back, each read by the [`Flow`] that puts them on their statements. A
//! read-only tunnel's refused statement is replaced, where it stood, by one the database cannot
//! parse; its error, the only answer that statement gets, is replaced by the refusal. So the
//! database's own rules (skip to `Sync`, abort the transaction) hold as if it had refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use super::flow::{Done, Flow, Outcome, Pending};
use super::statements::{Classified, Kind, classify};
use super::wire::{
    Fields, Header, MAX_READ_WHOLE, WireError, error_response, parse, pass_body, query, read_body,
    read_header, sqlstate, without_channel_binding,
};
use crate::audit::{
    AuditRecord, ClosedBy, DbSession, DbSessionNames, DbStatement, StatementOutcome, Timestamp,
    TunnelAudit,
};

/// What the database is sent in place of a refused statement: a syntax error, whatever the
/// database holds.
const REFUSED_SQL: &str = "PORTCULLIS REFUSED THIS STATEMENT";
/// Messages other than a `Query` or `Parse` that are read whole are a few names long.
const MAX_SMALL: usize = 64 << 10;
/// A `Bind` starts with its portal's and statement's names; its parameters are passed on.
const MAX_BIND_NAMES: usize = 2 * 1024;

/// Who the session's lines are for and what it may do.
pub struct Ends<'a> {
    pub audit: &'a TunnelAudit,
    pub names: DbSessionNames,
    pub writable: bool,
    pub log_reads: bool,
}

/// Relays until either side ends; then writes the unanswered changes and the session line.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    ends: Ends<'_>,
    (from_client, to_client): (&mut u64, &mut u64),
) -> ClosedBy
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let flow = Mutex::new(Flow::new(ends.log_reads));
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let (mut client_read, mut client_write) =
        (BufReader::new(client_read), BufWriter::new(client_write));
    let (mut upstream_read, mut upstream_write) = (
        BufReader::new(upstream_read),
        BufWriter::new(upstream_write),
    );
    let up = requests(
        &mut client_read,
        &mut upstream_write,
        &flow,
        &ends,
        from_client,
    );
    let down = answers(
        &mut upstream_read,
        &mut client_write,
        &flow,
        &ends,
        to_client,
    );
    let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
    let closed_by = tokio::select! {
        ended = &mut up => match ended {
            // The client said Terminate or closed: the database closes after it.
            Ok(()) => {
                let _ = down.await;
                ClosedBy::Client
            }
            Err(error) => {
                tracing::info!(tunnel = ends.audit.tunnel(), %error, "database session closed");
                ClosedBy::Malformed
            }
        },
        ended = &mut down => match ended {
            Ok(()) => ClosedBy::Upstream,
            Err(error) => {
                tracing::info!(tunnel = ends.audit.tunnel(), %error, "database session closed");
                ClosedBy::Malformed
            }
        },
    };
    let mut flow = lock(&flow);
    write(&ends, flow.finish());
    ends.audit.record(AuditRecord::DbSession(DbSession {
        ts: Timestamp::now(),
        session: ends.names.clone(),
        reads: flow.reads,
        changes: flow.changes,
        refused: flow.refused,
    }));
    closed_by
}

fn lock(flow: &Mutex<Flow>) -> std::sync::MutexGuard<'_, Flow> {
    flow.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The client's messages, judged and passed on; `Ok` when the client ends the session.
async fn requests(
    client: &mut BufReader<impl AsyncRead + Unpin>,
    upstream: &mut BufWriter<impl AsyncWrite + Unpin>,
    flow: &Mutex<Flow>,
    ends: &Ends<'_>,
    count: &mut u64,
) -> Result<(), WireError> {
    let (writable, keep_reads) = (ends.writable, ends.log_reads);
    // What each prepared statement and bound portal is, by name, as the client made them.
    let mut statements: HashMap<String, Option<Arc<Classified>>> = HashMap::new();
    let mut portals: HashMap<String, Option<Arc<Classified>>> = HashMap::new();
    let refuse =
        |s: &Option<Arc<Classified>>| !writable && s.as_ref().is_some_and(|s| s.kind.changes());
    loop {
        // Pipelined messages go on together; the last of a batch goes at once.
        if client.buffer().is_empty() {
            upstream.flush().await?;
        }
        let Some(header) = read_header(client).await? else {
            return Ok(());
        };
        *count += header.len as u64 + 5;
        match header.tag {
            b'Q' => {
                let body = read_body(client, header, MAX_READ_WHOLE).await?;
                let sql = Fields::new(&body)
                    .cstr()
                    .ok_or(WireError::Malformed("Query"))?;
                let classified: Vec<_> = classify(sql, keep_reads)
                    .into_iter()
                    .map(Arc::new)
                    .collect();
                let refused = !writable && classified.iter().any(|s| s.kind.changes());
                lock(flow).push(Pending::Query {
                    statements: classified,
                    next: 0,
                    refused,
                });
                if refused {
                    upstream.write_all(&query(REFUSED_SQL)).await?;
                } else {
                    send(upstream, header, &body).await?;
                }
            }
            b'P' => {
                let body = read_body(client, header, MAX_READ_WHOLE).await?;
                let mut fields = Fields::new(&body);
                let (Some(name), Some(sql)) = (fields.cstr(), fields.cstr()) else {
                    return Err(WireError::Malformed("Parse"));
                };
                // The database takes one statement in a Parse; were there more, the one that
                // changes something is the one judged.
                let all = classify(sql, keep_reads);
                let judged = all.iter().position(|s| s.kind.changes()).unwrap_or(0);
                let classified = all.into_iter().nth(judged).map(Arc::new);
                if refuse(&classified) {
                    statements.remove(name);
                    lock(flow).push(Pending::Parse(classified));
                    upstream.write_all(&parse(name, REFUSED_SQL)).await?;
                } else {
                    statements.insert(name.to_owned(), classified);
                    lock(flow).push(Pending::Parse(None));
                    send(upstream, header, &body).await?;
                }
            }
            b'B' => {
                let names = bind_names(client, header.len).await?;
                let mut fields = Fields::new(&names);
                let (Some(portal), Some(statement)) = (fields.cstr(), fields.cstr()) else {
                    return Err(WireError::Malformed("Bind"));
                };
                let bound = statements.get(statement).cloned().flatten();
                portals.insert(portal.to_owned(), bound);
                lock(flow).push(Pending::Bind);
                upstream.write_all(&header.bytes()).await?;
                upstream.write_all(&names).await?;
                pass_body(client, upstream, header.len - names.len()).await?;
            }
            b'E' | b'D' | b'C' | b'S' | b'H' => {
                let body = read_body(client, header, MAX_SMALL).await?;
                let pending = match header.tag {
                    b'E' => {
                        let portal = Fields::new(&body)
                            .cstr()
                            .ok_or(WireError::Malformed("Execute"))?;
                        Some(Pending::Execute(portals.get(portal).cloned().flatten()))
                    }
                    b'D' => Some(Pending::Describe),
                    b'C' => Some(Pending::Close),
                    b'S' => Some(Pending::Sync),
                    _ => None,
                };
                if let Some(pending) = pending {
                    lock(flow).push(pending);
                }
                send(upstream, header, &body).await?;
            }
            b'F' => {
                let body = read_body(client, header, MAX_READ_WHOLE).await?;
                let call = Arc::new(Classified {
                    kind: Kind::Unknown,
                    tables: Vec::new(),
                    normalised: None,
                    digest: None,
                });
                if writable {
                    lock(flow).push(Pending::Function(call));
                    send(upstream, header, &body).await?;
                } else {
                    // Refused with a Query in its place, so it is answered as one.
                    lock(flow).push(Pending::Query {
                        statements: vec![call],
                        next: 0,
                        refused: true,
                    });
                    upstream.write_all(&query(REFUSED_SQL)).await?;
                }
            }
            b'X' => {
                upstream.write_all(&header.bytes()).await?;
                pass_body(client, upstream, header.len).await?;
                upstream.flush().await?;
                return Ok(());
            }
            // COPY data, the end or failure of a COPY, authentication answers.
            b'd' | b'c' | b'f' | b'p' => {
                upstream.write_all(&header.bytes()).await?;
                pass_body(client, upstream, header.len).await?;
            }
            other => return Err(WireError::Unexpected(char::from(other))),
        }
    }
}

/// The database's answers, put on their statements and passed on; `Ok` when it closes.
async fn answers(
    upstream: &mut BufReader<impl AsyncRead + Unpin>,
    client: &mut BufWriter<impl AsyncWrite + Unpin>,
    flow: &Mutex<Flow>,
    ends: &Ends<'_>,
    count: &mut u64,
) -> Result<(), WireError> {
    loop {
        if upstream.buffer().is_empty() {
            client.flush().await?;
        }
        let Some(header) = read_header(upstream).await? else {
            return Ok(());
        };
        *count += header.len as u64 + 5;
        let done = match header.tag {
            b'R' => {
                let body = read_body(upstream, header, MAX_SMALL).await?;
                client.write_all(&without_channel_binding(&body)).await?;
                Vec::new()
            }
            b'C' => {
                let body = read_body(upstream, header, MAX_SMALL).await?;
                let tag = Fields::new(&body).cstr().unwrap_or_default();
                let done = lock(flow).on_complete(tag);
                send(client, header, &body).await?;
                done
            }
            b'E' => {
                let body = read_body(upstream, header, MAX_READ_WHOLE).await?;
                let (refusal, done) = lock(flow).on_error(sqlstate(&body));
                match refusal {
                    Some(kind) => {
                        let text = format!(
                            "portcullis: this tunnel is read-only for you: {} refused",
                            kind.name()
                        );
                        client
                            .write_all(&error_response("ERROR", "25006", &text))
                            .await?;
                    }
                    None => send(client, header, &body).await?,
                }
                done
            }
            b'Z' => {
                lock(flow).on_ready();
                client.write_all(&header.bytes()).await?;
                pass_body(upstream, client, header.len).await?;
                Vec::new()
            }
            tag => {
                let done = lock(flow).on_reply(tag);
                client.write_all(&header.bytes()).await?;
                pass_body(upstream, client, header.len).await?;
                done
            }
        };
        write(ends, done);
    }
}

async fn send(
    to: &mut (impl AsyncWrite + Unpin),
    header: Header,
    body: &[u8],
) -> Result<(), WireError> {
    to.write_all(&header.bytes()).await?;
    to.write_all(body).await?;
    Ok(())
}

/// The first bytes of a `Bind` body, through its statement's name.
async fn bind_names(
    client: &mut (impl AsyncRead + Unpin),
    len: usize,
) -> Result<Vec<u8>, WireError> {
    use tokio::io::AsyncReadExt;
    let mut names = Vec::with_capacity(64);
    let mut nuls = 0;
    while nuls < 2 {
        if names.len() >= len.min(MAX_BIND_NAMES) {
            return Err(WireError::Malformed("Bind"));
        }
        let byte = client.read_u8().await?;
        nuls += usize::from(byte == 0);
        names.push(byte);
    }
    Ok(names)
}

/// The audit lines of statements that ended.
fn write(ends: &Ends<'_>, done: Vec<Done>) {
    for Done { statement, outcome } in done {
        let (outcome, rows, sqlstate) = match outcome {
            Outcome::Executed { rows } => (StatementOutcome::Executed, rows, None),
            Outcome::Failed { sqlstate } => (StatementOutcome::Failed, None, sqlstate),
            Outcome::Refused => (StatementOutcome::Refused, None, None),
            Outcome::Unanswered => (StatementOutcome::Unanswered, None, None),
        };
        ends.audit.record(AuditRecord::DbStatement(DbStatement {
            ts: Timestamp::now(),
            session: ends.names.clone(),
            kind: statement.kind.name().to_owned(),
            tables: statement.tables.clone(),
            statement: statement.normalised.clone(),
            digest: statement.digest.clone(),
            outcome,
            rows,
            sqlstate,
        }));
    }
}
