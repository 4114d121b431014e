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
//! Rows reach the target in no particular order, so merges (last record wins) do not use
//! this path.

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;

use super::copy::send_copy_data;
use super::plan::LoadPlan;
use super::write::{Encoded, SegmentEnd};
use super::{SinkError, qualified};
use crate::encode::{COPY_HEADER, COPY_TRAILER};
use crate::metrics::Statement;
use crate::progress::{Progress, Written};
use crate::schema::quote_ident;

/// Staging table columns: the loaded columns with the target's types.
fn create_stage(plan: &LoadPlan, stage: &str) -> String {
    let columns: Vec<String> = plan
        .copy_names()
        .iter()
        .zip(plan.copy_types())
        .map(|(name, pg_type)| format!("{} {}", quote_ident(name), pg_type))
        .collect();
    format!(
        "SELECT pg_advisory_xact_lock(hashtext('apitap schema apitap')); \
         CREATE SCHEMA IF NOT EXISTS apitap; \
         CREATE UNLOGGED TABLE apitap.{stage} ({})",
        columns.join(", ")
    )
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
    let stage = quote_ident(&format!(
        "stage_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
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
    streams[0]
        .batch_execute(&format!(
            "BEGIN; {}; COMMENT ON TABLE apitap.{stage} IS '{pid}'; COMMIT",
            create_stage(plan, &stage)
        ))
        .await
        .map_err(failed("CREATE UNLOGGED TABLE (staging)"))?;
    let result = fill_and_publish(transaction, plan, rx, progress, streams, &stage, &names).await;
    if result.is_err() {
        // The load's transaction will roll back; the staging table is not part of it.
        let _ = streams[0]
            .batch_execute(&format!("DROP TABLE IF EXISTS apitap.{stage}"))
            .await;
    }
    result
}

/// Drops the staging tables of loads whose connection no longer exists (killed before they
/// could clean up).
async fn sweep_stale_stages(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let stale = client
        .query(
            "SELECT format('apitap.%I', c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'apitap' AND c.relkind = 'r' AND c.relname LIKE 'stage\\_%' \
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

/// Spreads the chunks over the streams' COPYs into the staging table, then moves the rows
/// into the target in the load's transaction.
async fn fill_and_publish(
    transaction: &tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
    streams: &[tokio_postgres::Client],
    stage: &str,
    names: &str,
) -> Result<(u64, SegmentEnd), SinkError> {
    let table = &plan.table;
    let copy_failed = |e: tokio_postgres::Error| SinkError::database("COPY (staging)", table, &e);
    let statement = format!("COPY apitap.{stage} ({names}) FROM STDIN (FORMAT binary)");
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
                Some(Encoded::Copy { bytes, rows, .. }) => {
                    if senders[next % senders.len()].send(bytes).await.is_err() {
                        // That stream's COPY failed; its own error is the one reported.
                        return Err(SinkError::Protocol("a COPY stream stopped"));
                    }
                    next += 1;
                    progress.add_rows(rows, Written::Copy);
                }
                // Only a clean end of every stage may let the rows be published.
                Some(Encoded::End { cursor }) => return Ok(cursor),
                Some(Encoded::Rows { .. } | Encoded::Checkpoint { .. }) => {
                    return Err(SinkError::Protocol("--copy-streams takes COPY chunks only"));
                }
                None => return Err(SinkError::InputEnded),
            }
        }
    };
    let (checked, copied) = tokio::join!(dispatch, futures_util::future::join_all(copies));
    // A stage that failed explains a stopped stream better than the stream does.
    if let Err(SinkError::InputEnded) = checked {
        return checked.map(|_| (0, SegmentEnd::Done(None)));
    }
    for copy in copied {
        copy.map_err(copy_failed)?;
        progress.round_trip(Statement::Copy);
    }
    let cursor = checked?;
    let rows = transaction
        .execute(
            &format!(
                "INSERT INTO {} ({names}) SELECT {names} FROM apitap.{stage}",
                qualified(&plan.written_table())
            ),
            &[],
        )
        .await
        .map_err(|e| SinkError::database("INSERT (from staging)", table, &e))?;
    progress.round_trip(Statement::Insert);
    transaction
        .batch_execute(&format!("DROP TABLE apitap.{stage}"))
        .await
        .map_err(|e| SinkError::database("DROP TABLE (staging)", table, &e))?;
    tracing::info!(statement = "COPY", streams = streams.len(), table = %table, rows_affected = rows, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    Ok((rows, SegmentEnd::Done(cursor)))
}
