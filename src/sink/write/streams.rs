//! `--copy-streams N`: one load's COPY spread over N connections.
//!
//! PostgreSQL runs each COPY on one backend, one core. With cores to spare, N connections
//! each COPY part of the rows into one shared UNLOGGED staging table (no WAL); the load's own
//! transaction then moves them into the target with one `INSERT … SELECT` and drops the
//! staging table, so the target still changes all at once or not at all. The staging table
//! lives in schema `apitap`, commented with the server pid of the connection that made it;
//! a load killed before its cleanup leaves it behind, and the next `--copy-streams` load
//! drops every staging table whose connection is gone.
//!
//! Into a table the load creates there is no second pass: the streams fill a table of the
//! new table's columns, created (and committed) beside it under a name of apitap's, and the
//! load's transaction drops the empty new table and renames the filled one into its place.
//! Readers see no table, then the whole table; a load killed before publishing leaves the
//! filled table behind for the next `--copy-streams` load to drop, as a staging table. The
//! rows are not frozen as a single COPY into a new table freezes them (PostgreSQL allows that
//! only in the transaction that created the table), so VACUUM will pass over them once.
//!
//! Rows reach the target in no particular order, so merges (last record wins) do not use
//! this path.

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;

use crate::encode::{COPY_HEADER, COPY_TRAILER};
use crate::metrics::Statement;
use crate::progress::{Progress, SentWith};
use crate::schema::quote_ident;
use crate::sink::plan::LoadPlan;
use crate::sink::write::copy::send_copy_data;
use crate::sink::write::{CopyChunk, Encoded, SegmentEnd};
use crate::sink::{SinkError, qualified};

/// The table the streams fill: the new table's columns, logged (it becomes the table); or
/// an UNLOGGED staging table of the loaded columns with the target's types.
fn create_stage(plan: &LoadPlan, stage: &Stage) -> Option<String> {
    Some(match stage {
        Stage::Swapped { .. } => return None,
        Stage::Becomes { .. } => format!(
            "CREATE TABLE {} ({})",
            stage.qualified(),
            crate::sink::plan::ddl::column_definitions(&plan.decode.columns).join(", ")
        ),
        Stage::Staging { .. } => {
            let columns: Vec<String> = plan
                .copy_names()
                .iter()
                .zip(plan.copy_types())
                .map(|(name, pg_type)| format!("{} {}", quote_ident(name), pg_type))
                .collect();
            format!(
                "SELECT pg_advisory_xact_lock(hashtext('apitap schema apitap')); \
                 CREATE SCHEMA IF NOT EXISTS apitap; \
                 CREATE UNLOGGED TABLE {} ({})",
                stage.qualified(),
                columns.join(", ")
            )
        }
    })
}

/// Where the streams COPY: into a table that becomes the one the load creates, into the new
/// table of a replace by swap, or into a staging table whose rows are then inserted.
enum Stage {
    /// The table that takes the new table's place: `schema.name`, the name already quoted.
    Becomes {
        schema: String,
        name: String,
    },
    /// The replace's new table, created and committed by [`crate::sink::write::swap::Swap::begin`].
    Swapped {
        qualified: String,
    },
    Staging {
        name: String,
    },
}

impl Stage {
    fn qualified(&self) -> String {
        match self {
            Stage::Becomes { schema, name } => format!("{schema}.{name}"),
            Stage::Swapped { qualified } => qualified.clone(),
            Stage::Staging { name } => format!("apitap.{name}"),
        }
    }
}

/// Whether the streams can fill a replace's new table themselves (see
/// [`crate::sink::write::swap::Swap::begin`]): not on Citus, and not when the load alters the new table
/// (its transaction would hold the lock the streams' COPY needs).
pub(super) fn fill_swapped_table(plan: &LoadPlan) -> bool {
    plan.swap_of.is_some()
        && plan.citus.is_none()
        && plan.alter_table.is_none()
        && plan.merge_keys.is_empty()
}

/// Whether the streams can fill the table the load creates itself: a plain new table (not
/// distributed, not swapped in) in a schema that exists already.
fn fills_new_table(plan: &LoadPlan) -> bool {
    plan.create_table.is_some()
        && plan.create_schema.is_none()
        && plan.swap_of.is_none()
        && plan.distribute.is_none()
        && plan.citus.is_none()
        && plan.merge_keys.is_empty()
}

/// Like the single-connection COPY segment, through `streams`.
pub(super) async fn segment(
    transaction: &tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
    streams: &[tokio_postgres::Client],
) -> Result<(u64, SegmentEnd), SinkError> {
    let table = &plan.table;
    let failed = |action: &'static str| {
        move |e: tokio_postgres::Error| SinkError::database(action, table, &e)
    };
    let unique = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let stage = if fill_swapped_table(plan) {
        Stage::Swapped {
            qualified: qualified(&plan.written_table()),
        }
    } else if fills_new_table(plan) {
        // The new table's schema as the load's transaction resolved it (the name may be
        // unqualified), so that the filled table is created there, with that schema's
        // default privileges, like the table it replaces.
        let schema: String = transaction
            .query_one(
                "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = $1::text::regclass",
                &[&qualified(&plan.table)],
            )
            .await
            .map_err(failed("CREATE TABLE (filled by the streams)"))?
            .get(0);
        Stage::Becomes {
            schema,
            name: quote_ident(&format!("apitap_stage_{unique}")),
        }
    } else {
        Stage::Staging {
            name: quote_ident(&format!("stage_{unique}")),
        }
    };
    let names = plan
        .copy_names()
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ");
    sweep_stale_stages(&streams[0])
        .await
        .map_err(failed("DROP TABLE (stale staging)"))?;
    let pid: i32 = streams[0]
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(failed("CREATE UNLOGGED TABLE (staging)"))?
        .get(0);
    if let Some(create) = create_stage(plan, &stage) {
        streams[0]
            .batch_execute(&format!(
                "BEGIN; {create}; COMMENT ON TABLE {} IS '{pid}'; COMMIT",
                stage.qualified()
            ))
            .await
            .map_err(failed("CREATE TABLE (staging)"))?;
    }
    let result = fill_and_publish(transaction, plan, rx, progress, streams, &stage, &names).await;
    // The replace's new table is dropped by the writer once the load's transaction is gone
    // (it may hold locks on the table's sequences).
    if result.is_err() && !matches!(stage, Stage::Swapped { .. }) {
        // The load's transaction will roll back; the staging table is not part of it.
        let _ = streams[0]
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", stage.qualified()))
            .await;
    }
    result
}

/// Drops the staging tables of loads whose connection no longer exists (killed before they
/// could clean up).
pub(super) async fn sweep_stale_stages(
    client: &impl tokio_postgres::GenericClient,
) -> Result<(), tokio_postgres::Error> {
    // Only tables marked with a connection's pid: a replace's new table (`apitap_replace_*`)
    // is committed, and marked, only when the streams fill it.
    let stale = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' \
               AND ((n.nspname = 'apitap' AND c.relname LIKE 'stage\\_%') \
                    OR c.relname LIKE 'apitap\\_stage\\_%' \
                    OR c.relname LIKE 'apitap\\_replace\\_%') \
               AND obj_description(c.oid, 'pg_class') ~ '^[0-9]+$' \
               AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a \
                               WHERE a.pid::text = obj_description(c.oid, 'pg_class'))",
            &[],
        )
        .await?;
    for row in stale {
        let name: String = row.get(0);
        tracing::info!(table = %name, "dropping the staging table of a load that was killed");
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
            .await?;
    }
    Ok(())
}

/// Puts the `copied` rows of the filled `stage` where the load's transaction commits them:
/// the swap takes a replace's new table as it is; a new table the streams filled takes the
/// target's name; a staging table's rows are inserted into the target. Returns the rows.
async fn publish(
    transaction: &tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    stage: &Stage,
    names: &str,
    copied: u64,
    progress: &Progress,
) -> Result<u64, SinkError> {
    let table = &plan.table;
    match stage {
        // The swap, at the end of the load's transaction, puts it in the old table's place.
        Stage::Swapped { .. } => Ok(copied),
        Stage::Becomes { schema, name } => {
            // The new table is empty and the load's alone: the filled table takes its name.
            let publish = format!(
                "DROP TABLE {target}; ALTER TABLE {schema}.{name} RENAME TO {new_name}; \
                 COMMENT ON TABLE {target} IS NULL",
                target = qualified(&plan.table),
                new_name = quote_ident(&plan.table.table),
            );
            transaction
                .batch_execute(&publish)
                .await
                .map_err(|e| SinkError::database("publishing the filled table", table, &e))?;
            Ok(copied)
        }
        Stage::Staging { .. } => {
            let rows = transaction
                .execute(
                    &format!(
                        "INSERT INTO {} ({names}) SELECT {names} FROM {}",
                        qualified(&plan.written_table()),
                        stage.qualified()
                    ),
                    &[],
                )
                .await
                .map_err(|e| SinkError::database("INSERT (from staging)", table, &e))?;
            progress.round_trip(Statement::Insert);
            transaction
                .batch_execute(&format!("DROP TABLE {}", stage.qualified()))
                .await
                .map_err(|e| SinkError::database("DROP TABLE (staging)", table, &e))?;
            Ok(rows)
        }
    }
}

/// Spreads the chunks over the streams' COPYs into the staging table, then moves the rows
/// into the target in the load's transaction.
async fn fill_and_publish(
    transaction: &tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
    streams: &[tokio_postgres::Client],
    stage: &Stage,
    names: &str,
) -> Result<(u64, SegmentEnd), SinkError> {
    let table = &plan.table;
    let copy_failed = |e: tokio_postgres::Error| SinkError::database("COPY (staging)", table, &e);
    let statement = format!(
        "COPY {} ({names}) FROM STDIN (FORMAT binary)",
        stage.qualified()
    );
    let started = std::time::Instant::now();
    let mut senders = Vec::with_capacity(streams.len());
    let mut copies = Vec::with_capacity(streams.len());
    for client in streams {
        let (tx, mut rx) = mpsc::channel::<Bytes>(2);
        senders.push(tx);
        let statement = statement.as_str();
        copies.push(async move {
            let sink = client.copy_in::<_, Bytes>(statement).await?;
            futures_util::pin_mut!(sink);
            sink.send(Bytes::from_static(COPY_HEADER)).await?;
            while let Some(bytes) = rx.recv().await {
                send_copy_data(&mut sink, bytes).await?;
            }
            sink.send(Bytes::from_static(COPY_TRAILER)).await?;
            sink.finish().await
        });
    }
    // Owns the senders: however it ends, the streams then see the end of their input.
    let dispatch = async move {
        let mut next = 0;
        loop {
            match rx.recv().await {
                Some(Encoded::Copy(CopyChunk { bytes, rows, .. })) => {
                    if senders[next % senders.len()].send(bytes).await.is_err() {
                        // That stream's COPY failed; its own error is the one reported.
                        return Err(SinkError::Protocol("a COPY stream stopped"));
                    }
                    next += 1;
                    progress.add_rows(rows, SentWith::Copy);
                }
                // Only a clean end of every stage may let the rows be published.
                Some(Encoded::End { cursor, .. }) => return Ok(cursor),
                Some(Encoded::Rows { .. } | Encoded::Checkpoint { .. } | Encoded::Part(_)) => {
                    return Err(SinkError::Protocol("--copy-streams takes COPY chunks only"));
                }
                None => return Err(SinkError::InputEnded),
            }
        }
    };
    let (checked, copied) = tokio::join!(dispatch, futures_util::future::join_all(copies));
    // A stage that failed explains a stopped stream better than the stream does.
    if let Err(SinkError::InputEnded) = checked {
        return checked.map(|_| {
            let end = SegmentEnd::Done {
                cursor: None,
                children: None,
            };
            (0, end)
        });
    }
    let mut copied_rows = 0;
    for copy in copied {
        copied_rows += copy.map_err(copy_failed)?;
        progress.round_trip(Statement::Copy);
    }
    let cursor = checked?;
    let rows = publish(transaction, plan, stage, names, copied_rows, progress).await?;
    tracing::info!(statement = "COPY", streams = streams.len(), table = %table, rows_affected = rows, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    let end = SegmentEnd::Done {
        cursor,
        children: None,
    };
    Ok((rows, end))
}
