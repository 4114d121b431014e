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

pub(crate) mod copy;
mod create;
mod encoded;
pub(crate) mod family;
pub(crate) mod insert;
pub(crate) mod merge;
pub(crate) mod merge_empty;
mod path;
pub(crate) mod refused;
pub(crate) mod spool;
pub(crate) mod streams;
pub(crate) mod swap;

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::plan::{AlterTable, CreateSchema, LoadPlan};
use super::{SinkError, state};
use crate::base::options::Mode;
use crate::progress::Progress;
use crate::rejects::RejectFile;
use crate::schema::TableName;
use create::{Created, create_table};
pub(crate) use encoded::{CopyChunk, Encoded, Refusable};
use encoded::{SegmentEnd, drain, next_chunk};
pub(crate) use path::RowsPath;
use swap::Swap;

/// What the writer needs besides the plan, the path and the rows.
pub(crate) struct WriteOptions {
    pub mode: Mode,
    /// Let a replace empty the table.
    pub allow_empty: bool,
    /// The load's key in `apitap._state`.
    pub state_key: String,
    /// How long the swap of a replace may try for its moment alone with the table.
    pub lock_timeout: std::time::Duration,
    /// Where records set aside go (`--on-error reject`), sealed before each final COMMIT
    /// and published after it: the decode stage sets records aside too.
    pub rejects: Option<Arc<RejectFile>>,
}

/// What a finished write did.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOutcome {
    pub rows: u64,
    /// This load created the table (not another session meanwhile).
    pub created_table: bool,
    /// The highest cursor value loaded and stored.
    pub cursor: Option<String>,
    /// `--nested tables`: the rows each child table got.
    pub child_rows: Vec<u64>,
}

/// Writes the encoded rows of `rx` as `plan` and `path` say, in one transaction (or one per
/// commit point), with the merge, the swap and the state; commits after [`Encoded::End`].
///
/// # Errors
/// Anything the server refuses (unless set aside in reject mode), a lost connection, or
/// [`SinkError::InputEnded`] when a stage before the writer failed. The transaction in
/// progress is rolled back; commits made at earlier commit points stay.
pub(crate) async fn write(
    client: &mut tokio_postgres::Client,
    plan: &LoadPlan,
    path: RowsPath,
    options: WriteOptions,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
) -> Result<WriteOutcome, SinkError> {
    let written = write_segments(client, plan, &path, &options, rx, progress).await;
    // A replace whose new table the streams filled: that table was committed on its own, so
    // the rollback leaves it. The load's transaction was dropped, its ROLLBACK queued on its
    // connection: one more round trip there makes sure it is done (and its locks on the
    // table's sequences released) before another connection drops the table.
    if written.is_err()
        && let RowsPath::Streams { streams } = &path
        && let Some(stream) = streams.first()
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

/// The transactions of a write: one, or one per commit point of a `--commit-every` load.
async fn write_segments(
    client: &mut tokio_postgres::Client,
    plan: &LoadPlan,
    path: &RowsPath,
    options: &WriteOptions,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
) -> Result<WriteOutcome, SinkError> {
    let table = &plan.table;
    let mut rows = 0;
    let mut child_rows = vec![0; plan.family.as_ref().map_or(0, |f| f.children.len())];
    let mut segment = 0;
    // The plan as it stands once the table is there: another session may have created it.
    let mut meanwhile: Option<LoadPlan> = None;
    let cursor = loop {
        segment += 1;
        let mut transaction = client
            .transaction()
            .await
            .map_err(|e| SinkError::database("starting a transaction", table, &e))?;
        let first = segment == 1;
        let swap = match first {
            true => {
                let (swap, created) =
                    prepare_table(&mut transaction, plan, path, options.mode).await?;
                if created == Some(Created::Meanwhile) {
                    meanwhile = Some(plan.created_meanwhile());
                }
                if let Some(family) = &plan.family {
                    family::prepare_children(&mut transaction, family, options.mode).await?;
                }
                swap
            }
            false => None,
        };
        let plan = meanwhile.as_ref().unwrap_or(plan);
        let (loaded, end) = write_rows(
            &mut transaction,
            plan,
            path,
            rx,
            progress,
            first,
            &mut child_rows,
        )
        .await?;
        rows += loaded;
        let (cursor, resume, children) = match end {
            SegmentEnd::Checkpoint {
                resume,
                cursor,
                children,
            } => (cursor, Some(resume), children),
            SegmentEnd::Done { cursor, children } => (cursor, None, children),
        };
        if let Some(family) = &plan.family {
            let loaded =
                family::write_children(&transaction, plan, family, children, options.mode).await?;
            for (total, rows) in child_rows.iter_mut().zip(loaded) {
                *total += rows;
            }
        }
        if resume.is_none() && rows == 0 && options.mode == Mode::Replace && !options.allow_empty {
            return Err(SinkError::EmptyReplace {
                table: table.clone(),
            });
        }
        if let Some(swap) = swap {
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
        if let Some(rejects) = options.rejects.as_deref().filter(|_| resume.is_none()) {
            // On disk before COMMIT: a load whose commit landed always has its rejects.
            rejects.seal()?;
        }
        commit(transaction, table, progress).await?;
        progress.committed(rows, resume.is_none());
        match resume {
            Some(_) => {
                tracing::info!(table = %table, rows, segment, "committed; the backfill resumes here if it stops")
            }
            None => break cursor,
        }
    };
    if let Some(rejects) = &options.rejects {
        rejects.publish()?;
    }
    Ok(WriteOutcome {
        rows,
        child_rows,
        cursor,
        created_table: plan.create_table.is_some() && meanwhile.is_none(),
    })
}

/// The first transaction's statements before the rows: the schema and table the load
/// creates (distributed on Citus), the new table of a replace's swap, the columns added or
/// widened, a replace's DELETE. Returns the swap under way, and who created a new table.
async fn prepare_table(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    path: &RowsPath,
    mode: Mode,
) -> Result<(Option<Swap>, Option<Created>), SinkError> {
    let table = &plan.table;
    let create_schema = plan.create_schema.as_ref().map(CreateSchema::sql);
    execute(
        transaction,
        create_schema.as_deref(),
        "CREATE SCHEMA",
        table,
    )
    .await?;
    let created = match &plan.create_table {
        Some(create) => Some(create_table(transaction, plan, create).await?),
        None => None,
    };
    // Only the load that created the table distributes it.
    let distribute = plan
        .distribute
        .as_ref()
        .filter(|_| created == Some(Created::Here))
        .map(|d| d.statement(table));
    execute(
        transaction,
        distribute.as_deref(),
        "distributing the new table (Citus)",
        table,
    )
    .await?;
    let swap = match plan.swap_of {
        Some(oid) => {
            // Rows checked chunk by chunk want the table's keys before them, to be refused.
            let keys_first = matches!(path, RowsPath::CopyIsolating { .. });
            let committed_by = match path {
                RowsPath::Streams { streams } => streams
                    .first()
                    .filter(|_| streams::fill_swapped_table(plan)),
                _ => None,
            };
            let citus = plan.citus.as_ref();
            let swap = Swap::begin(transaction, table, oid, keys_first, citus, committed_by);
            Some(swap.await?)
        }
        None => None,
    };
    let alter_table = plan.alter_table.as_ref().map(AlterTable::sql);
    execute(transaction, alter_table.as_deref(), "ALTER TABLE", table).await?;
    let delete = plan.delete_statement().filter(|_| mode == Mode::Replace);
    execute(transaction, delete.as_deref(), "DELETE", table).await?;
    Ok((swap, created))
}

/// One segment's rows, written the way `path` says: up to the input's end or a commit point.
/// `child_rows` adds up the rows each child table got (`--nested tables`).
async fn write_rows(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    path: &RowsPath,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
    first: bool,
    child_rows: &mut [u64],
) -> Result<(u64, SegmentEnd), SinkError> {
    match path {
        RowsPath::Family => {
            let family = plan
                .family
                .as_deref()
                .ok_or(SinkError::Protocol("the family path without a family"))?;
            family::segment(transaction, plan, family, rx, progress, first, child_rows).await
        }
        RowsPath::Nothing => Ok((0, drain(rx).await?)),
        RowsPath::Insert { rejects } => {
            insert::segment(transaction, plan, rx, rejects.as_deref(), progress).await
        }
        RowsPath::CopyIsolating { rejects } => {
            copy::isolating_segment(transaction, plan, rx, rejects, progress).await
        }
        RowsPath::Streams { streams } => {
            streams::segment(transaction, plan, rx, progress, streams).await
        }
        RowsPath::Copy => {
            let statement = plan.copy_statement(first && plan.may_freeze());
            copy::segment(transaction, &statement, &plan.table, rx, progress, None).await
        }
        RowsPath::Merge {
            rejects,
            into_empty,
        } => {
            merge::segment(
                transaction,
                plan,
                rx,
                progress,
                rejects.as_deref(),
                *into_empty,
            )
            .await
        }
    }
}

/// Commits the segment's transaction, telling an ERROR (the server rolled back) from no
/// answer (no one knows).
async fn commit(
    transaction: tokio_postgres::Transaction<'_>,
    table: &TableName,
    progress: &Progress,
) -> Result<(), SinkError> {
    progress.commit_sent();
    let committed = transaction
        .commit()
        .instrument(tracing::info_span!("sql.execute", statement = "COMMIT", table = %table))
        .await;
    let Err(e) = committed else {
        return Ok(());
    };
    // An ERROR (a deferred constraint, a serialization failure) means the server rolled
    // back. Anything else — no answer, or a FATAL as the session is ended — may come after
    // the commit is durable: no one knows.
    let severity = e.as_db_error().and_then(|db| db.parsed_severity());
    if severity == Some(tokio_postgres::error::Severity::Error) {
        progress.commit_refused();
        return Err(SinkError::database("COMMIT", table, &e));
    }
    Err(SinkError::CommitUnknown {
        table: table.to_string(),
        reason: match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => crate::base::error_chain(&e),
        },
    })
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
