//! One load's writes: the transaction (or, with `--commit-every`, one per group of pages)
//! in which the encoded rows go in, with the DDL, the merge, the swap and the state.
//!
//! The encode stage feeds [`Encoded`] items through a bounded channel. The writer may finish
//! a COPY and commit only after [`Encoded::End`], which the pipeline sends once every stage
//! before the writer ended cleanly: a channel that closes without it means a stage failed,
//! and the writer stops with [`SinkError::InputEnded`], leaving the COPY unfinished (so
//! aborted) and the transaction rolled back.
//!
//! The rows go in by [`copy`] (binary COPY, and COPY that sets refused rows aside),
//! [`insert`] (the INSERT fallback), [`merge`] (staging + `INSERT … ON CONFLICT`;
//! [`merge_empty`] COPYs into an empty table), [`streams`] (`--copy-streams`) or into the new
//! table a [`swap`] puts in place; [`refused`] finds the rows the server refuses.

pub mod copy;
pub mod insert;
pub mod merge;
pub mod merge_empty;
pub mod refused;
pub mod streams;
pub mod swap;

use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::plan::LoadPlan;
use super::{SinkError, state};
use crate::base::options::{Mode, WriteMethod};
use crate::progress::Progress;
use crate::rejects::RejectFile;
use crate::schema::TableName;
use swap::Swap;

/// What the encode stage hands to the writer, in order.
pub enum Encoded {
    /// Binary COPY data of whole rows.
    Copy(CopyChunk),
    /// One INSERT's worth of rows: each column's values as PostgreSQL text, and in reject
    /// mode what is needed to set a refused row aside.
    Rows {
        columns: Vec<Vec<Option<String>>>,
        rows: u64,
        refusable: Option<Box<Refusable>>,
    },
    /// A commit point (`--commit-every`): where to resume, and the highest cursor so far.
    Checkpoint {
        resume: String,
        cursor: Option<String>,
    },
    /// Every row was sent and every stage before the writer ended cleanly; the highest
    /// cursor value. Only now may the load commit.
    End { cursor: Option<String> },
}

/// The rows of one chunk, kept in reject mode so that a row the server refuses can be set
/// aside with its record number and values.
pub struct Refusable {
    /// Where each row ends in the chunk's COPY data (see
    /// [`crate::encode::CopyEncoder::row_ends`]); empty for INSERT rows.
    pub ends: Vec<usize>,
    /// Each row's record number in the load.
    pub records: Vec<u64>,
    /// The rows' values, to write a refused row to the reject file.
    pub batch: RecordBatch,
}

/// How a group of rows ended.
pub(super) enum SegmentEnd {
    /// The input ended cleanly ([`Encoded::End`]); the highest cursor value.
    Done(Option<String>),
    /// A commit point: where to resume, and the highest cursor value so far.
    Checkpoint {
        resume: String,
        cursor: Option<String>,
    },
}

/// Binary COPY data of `rows` whole rows, and in reject mode what is needed to find a row
/// the server refuses in it.
pub struct CopyChunk {
    pub bytes: Bytes,
    pub rows: u64,
    pub refusable: Option<Box<Refusable>>,
    /// Each row's merge key may have come before in the load (see
    /// [`crate::encode::repeats`]). False when the keys are not tracked.
    pub repeats: bool,
}

/// The next COPY chunk of a segment, or how the segment ends: the input's end or a commit
/// point. A channel that closes without [`Encoded::End`] is [`SinkError::InputEnded`].
pub(super) async fn next_chunk(
    rx: &mut mpsc::Receiver<Encoded>,
) -> Result<std::ops::ControlFlow<SegmentEnd, CopyChunk>, SinkError> {
    use std::ops::ControlFlow::{Break, Continue};
    match rx.recv().await {
        Some(Encoded::Copy(chunk)) => Ok(Continue(chunk)),
        Some(Encoded::Checkpoint { resume, cursor }) => {
            Ok(Break(SegmentEnd::Checkpoint { resume, cursor }))
        }
        Some(Encoded::End { cursor }) => Ok(Break(SegmentEnd::Done(cursor))),
        Some(Encoded::Rows { .. }) => Err(SinkError::Protocol("INSERT rows on the COPY path")),
        None => Err(SinkError::InputEnded),
    }
}

/// What the writer needs besides the plan and the rows.
pub struct WriteOptions {
    pub mode: Mode,
    /// Already chosen: see [`choose_method`].
    pub method: WriteMethod,
    /// Let a replace empty the table.
    pub allow_empty: bool,
    /// The load's key in `apitap._state`.
    pub state_key: String,
    /// How long the swap of a replace may try for its moment alone with the table.
    pub lock_timeout: std::time::Duration,
    /// Where rows set aside go (`--on-error reject`).
    pub rejects: Option<Arc<RejectFile>>,
    /// More connections, for `--copy-streams`.
    pub streams: Vec<tokio_postgres::Client>,
    /// The encode stage marks the chunks whose merge keys may repeat (`Encoded::Copy`'s
    /// `repeats`), so a merge into an empty table may COPY the others into it.
    pub merge_keys_tracked: bool,
}

/// What a finished write did.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub rows: u64,
    /// The highest cursor value loaded and stored.
    pub cursor: Option<String>,
}

/// Binary COPY unless the user asked for INSERTs, or the server refuses COPY FROM STDIN
/// (some poolers and PostgreSQL-compatible servers do): then the INSERT fallback, with a
/// warning.
///
/// # Errors
/// A connection that fails.
pub async fn choose_method(
    client: &tokio_postgres::Client,
    asked: WriteMethod,
    table: &TableName,
) -> Result<WriteMethod, SinkError> {
    if asked == WriteMethod::Copy && !super::copy_from_stdin_works(client, table).await? {
        tracing::warn!(table = %table, "the server refuses COPY FROM STDIN; loading with batched INSERTs (--method insert) instead");
        return Ok(WriteMethod::Insert);
    }
    Ok(asked)
}

/// Writes the encoded rows of `rx` as `plan` says, in one transaction (or one per commit
/// point), with the merge, the swap and the state; commits after [`Encoded::End`].
///
/// # Errors
/// Anything the server refuses (unless set aside in reject mode), a lost connection, or
/// [`SinkError::InputEnded`] when a stage before the writer failed. The transaction in
/// progress is rolled back; commits made at earlier commit points stay.
pub async fn write(
    client: &mut tokio_postgres::Client,
    plan: &LoadPlan,
    options: WriteOptions,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
) -> Result<Written, SinkError> {
    let written = write_segments(client, plan, &options, rx, progress).await;
    // A replace whose new table the streams filled: that table was committed on its own, so
    // the rollback leaves it. The load's transaction was dropped, its ROLLBACK queued on its
    // connection: one more round trip there makes sure it is done (and its locks on the
    // table's sequences released) before another connection drops the table.
    if written.is_err()
        && let Some(stream) = options.streams.first()
        && streams::fill_swapped_table(plan)
    {
        let _ = client.batch_execute("").await;
        let _ = stream
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {}",
                super::qualified(&plan.written_table())
            ))
            .await;
    }
    written
}

async fn write_segments(
    client: &mut tokio_postgres::Client,
    plan: &LoadPlan,
    options: &WriteOptions,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
) -> Result<Written, SinkError> {
    let table = &plan.table;
    let rejects = options.rejects.as_deref();
    // Chunk by chunk for appends and replaces; a merge COPYs into staging, where nothing is
    // refused, and finds the rows its one statement refuses afterwards.
    let isolate_refused = rejects.filter(|_| plan.merge_keys.is_empty());
    // A merge COPYs into a staging table and applies it in one statement; the INSERT
    // fallback merges each batch as it goes (ON CONFLICT in the INSERT itself).
    let staged = !plan.merge_keys.is_empty() && options.method == WriteMethod::Copy;
    let merge_rejects = rejects.filter(|_| staged);
    let mut rows = 0;
    let mut segment = 0;
    let mut swap = None;
    let cursor = loop {
        segment += 1;
        let mut transaction = client
            .transaction()
            .await
            .map_err(|e| SinkError::database("starting a transaction", table, &e))?;
        let first = segment == 1;
        let mut staged_records = Vec::new();
        if first {
            execute(
                &transaction,
                plan.create_schema.as_deref(),
                "CREATE SCHEMA",
                table,
            )
            .await?;
            execute(
                &transaction,
                plan.create_table.as_deref(),
                "CREATE TABLE",
                table,
            )
            .await?;
            execute(
                &transaction,
                plan.distribute.as_deref(),
                "distributing the new table (Citus)",
                table,
            )
            .await?;
            if let Some(oid) = plan.swap_of {
                let keys_first = isolate_refused.is_some();
                swap = Some(
                    Swap::begin(
                        &transaction,
                        table,
                        oid,
                        keys_first,
                        plan.citus.as_ref(),
                        options
                            .streams
                            .first()
                            .filter(|_| streams::fill_swapped_table(plan)),
                    )
                    .await?,
                );
            }
            execute(
                &transaction,
                plan.alter_table.as_deref(),
                "ALTER TABLE",
                table,
            )
            .await?;
            let delete = plan
                .delete_statement()
                .filter(|_| options.mode == Mode::Replace);
            execute(&transaction, delete.as_deref(), "DELETE", table).await?;
        }
        let staging = plan.staging_statement().filter(|_| staged);
        execute(&transaction, staging.as_deref(), "CREATE TEMP TABLE", table).await?;
        let into_target = staged
            && options.merge_keys_tracked
            && merge_rejects.is_none()
            && options.streams.is_empty()
            && merge_empty::target_takes_copy(&mut transaction, plan).await?;
        let mut staged_rows = None;
        let (loaded, end) = if plan.copy_columns == 0 {
            (0, drain(rx).await?)
        } else if options.method == WriteMethod::Insert {
            insert::segment(&mut transaction, plan, rx, rejects, progress).await?
        } else if let Some(rejects) = isolate_refused {
            copy::isolating_segment(&mut transaction, plan, rx, rejects, progress).await?
        } else if into_target {
            let (copied, end) = merge_empty::segment(&transaction, plan, rx, progress).await?;
            staged_rows = Some(copied.staged);
            (copied.into_target + copied.staged, end)
        } else if !options.streams.is_empty() {
            streams::segment(&transaction, plan, rx, progress, &options.streams).await?
        } else {
            let statement = plan.copy_statement(first && plan.may_freeze());
            let records = merge_rejects.map(|_| &mut staged_records);
            copy::segment(&transaction, &statement, table, rx, progress, records).await?
        };
        rows += loaded;
        let (cursor, resume) = match end {
            SegmentEnd::Checkpoint { resume, cursor } => (cursor, Some(resume)),
            SegmentEnd::Done(cursor) => (cursor, None),
        };
        if resume.is_none() && rows == 0 && options.mode == Mode::Replace && !options.allow_empty {
            return Err(SinkError::EmptyReplace {
                table: table.clone(),
            });
        }
        if staged && staged_rows.unwrap_or(loaded) > 0 {
            let refused = merge_rejects.map(|r| (r, staged_records.as_slice()));
            merge::apply_staged(&mut transaction, plan, refused).await?;
            progress.round_trip(crate::metrics::Statement::Merge);
        }
        if let Some(swap) = swap.take() {
            swap.finish(&transaction, options.lock_timeout).await?;
        }
        // The state moves with the rows: same transaction, so a crash loses both or neither.
        if cursor.is_some() || resume.is_some() {
            let stored = state::Stored {
                cursor: cursor.clone(),
                resume: resume.clone(),
            };
            state::save(&transaction, &options.state_key, &stored, table).await?;
        } else {
            state::finish(&transaction, &options.state_key, table).await?;
        }
        if let Some(rejects) = rejects.filter(|_| resume.is_none()) {
            // On disk before COMMIT: a load whose commit landed always has its rejects.
            rejects.seal()?;
        }
        progress.commit_sent();
        let committed = transaction
            .commit()
            .instrument(tracing::info_span!("sql.execute", statement = "COMMIT", table = %table))
            .await;
        if let Err(e) = committed {
            // An ERROR (a deferred constraint, a serialization failure) means the server rolled
            // back. Anything else — no answer, or a FATAL as the session is ended — may come
            // after the commit is durable: no one knows.
            let severity = e.as_db_error().and_then(|db| db.parsed_severity());
            if severity == Some(tokio_postgres::error::Severity::Error) {
                progress.commit_refused();
                return Err(SinkError::database("COMMIT", table, &e));
            }
            return Err(SinkError::CommitUnknown {
                table: table.to_string(),
                reason: match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => crate::base::error_chain(&e),
                },
            });
        }
        progress.committed(rows, resume.is_none());
        match resume {
            Some(_) => {
                tracing::info!(table = %table, rows, segment, "committed; the backfill resumes here if it stops")
            }
            None => break cursor,
        }
    };
    if let Some(rejects) = rejects {
        rejects.publish()?;
    }
    Ok(Written { rows, cursor })
}

/// Waits for the end of an input that has nothing to load (no columns).
async fn drain(rx: &mut mpsc::Receiver<Encoded>) -> Result<SegmentEnd, SinkError> {
    while let Some(item) = rx.recv().await {
        match item {
            Encoded::End { cursor } => return Ok(SegmentEnd::Done(cursor)),
            Encoded::Checkpoint { resume, cursor } => {
                return Ok(SegmentEnd::Checkpoint { resume, cursor });
            }
            Encoded::Copy(_) | Encoded::Rows { .. } => {}
        }
    }
    Err(SinkError::InputEnded)
}

/// Runs one statement of the plan, if there is one, logging how long it took.
pub(super) async fn execute(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: Option<&str>,
    action: &'static str,
    table: &TableName,
) -> Result<(), SinkError> {
    let Some(sql) = statement else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    transaction
        .batch_execute(sql)
        .instrument(tracing::info_span!("sql.execute", statement = action, table = %table))
        .await
        .map_err(|e| SinkError::database(action, table, &e))?;
    tracing::info!(statement = action, table = %table, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    Ok(())
}
