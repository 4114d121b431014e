//! `--mode merge` into an empty table, COPYing straight into it.
//!
//! A merge stages every row and applies them with one `INSERT … SELECT`: two passes on the
//! server, the second after the last row arrived. Into an empty table most rows cannot
//! conflict with anything — only a key the input repeats can — so the encode stage marks the
//! rows whose key may have come before ([`crate::encode::repeats`]), and this writer COPYs the
//! others straight into the table while the marked ones go to the staging table, applied
//! after them with `ON CONFLICT` ([`crate::sink::write::merge::apply_staged`]). Each key's first record is
//! never marked and every later one always is, so the last record still wins. A million
//! rows with a primary key: as fast as appending them.
//!
//! Only where COPY gives what the upsert would:
//! - the table is empty, and stays so for other sessions' writes until the load commits: it
//!   is locked `SHARE ROW EXCLUSIVE` (readers go on; writers wait for the load), or if
//!   another session holds a conflicting lock right now, the merge stages as usual;
//! - every key is of a type whose equal values are identical as sent, or text/varchar under
//!   a deterministic collation (not citext, char(n) or numeric, where the upsert would see
//!   two records' keys as one though their bytes differ);
//! - no deferrable constraint (COPY would check it at COMMIT, where ON CONFLICT refuses it),
//!   no rule (COPY ignores rules; ON CONFLICT refuses them) and no trigger of the user's
//!   (ON CONFLICT DO UPDATE also fires UPDATE statement triggers);
//! - not Citus, not in reject mode (whose merge finds refused rows in the staging table).
//!
//! Into a table the load creates, the COPY freezes its rows, as an append's does.

use std::ops::ControlFlow;

use bytes::BytesMut;
use tokio::sync::mpsc;

use crate::metrics::Statement;
use crate::progress::{Progress, SentWith};
use crate::schema::PgType;
use crate::sink::plan::LoadPlan;
use crate::sink::write::copy::{CopyIn, copy_all};
use crate::sink::write::{Encoded, SegmentEnd, next_chunk};
use crate::sink::{SinkError, qualified};

/// Rows whose key may repeat wait in memory until this many bytes, then go to the staging
/// table (ending the COPY into the table and starting another): few loads repeat keys at
/// all, and this bounds the memory of those that repeat many.
const PENDING_BYTES: usize = 8 << 20;

impl LoadPlan {
    /// The merge keys' positions among the loaded columns and their types, for the encode
    /// stage to track, when the merge may COPY into an empty target: not a Citus table.
    pub(crate) fn merge_key_columns(&self) -> Option<(Vec<usize>, Vec<PgType>)> {
        if self.merge_keys.is_empty() || self.citus.is_some() || self.distribute.is_some() {
            return None;
        }
        let loaded = &self.decode.columns[..self.copy_columns];
        self.merge_keys
            .iter()
            .map(|key| {
                let at = loaded.iter().position(|c| &c.name == key)?;
                Some((at, loaded[at].pg_type))
            })
            .collect::<Option<Vec<_>>>()
            .map(|keys| keys.into_iter().unzip())
    }

    /// Whether the target is empty, with no deferrable constraint, rule or trigger of the
    /// user's, and every merge key (`$2`) still of a type that compares as sent: `$1` is the
    /// table's qualified name.
    fn takes_copy_statement(&self) -> String {
        format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {table}) \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND condeferrable) \
             AND NOT EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = $1::text::regclass) \
             AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::text::regclass AND NOT tgisinternal) \
             AND ({keys})",
            table = qualified(&self.table),
            keys = keys_compare_as_sent_statement(),
        )
    }

    /// `COPY` into the target itself; into a table the load created (in this transaction, so
    /// PostgreSQL allows it) with FREEZE, sparing VACUUM a pass over the rows, as an append
    /// into a new table does.
    fn copy_into_target_statement(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary{})",
            qualified(&self.table),
            self.quoted_copy_names().join(", "),
            if self.create_table.is_some() {
                ", FREEZE"
            } else {
                ""
            }
        )
    }
}

/// Whether every merge key `a.attname = ANY($2)` of table `$1` is of a type whose equal values
/// are sent the same (see [`PgType::equal_means_identical`]), or text or varchar under a
/// deterministic collation.
fn keys_compare_as_sent_statement() -> &'static str {
    "SELECT count(*) = cardinality($2::text[]) FROM pg_attribute a \
     LEFT JOIN pg_collation c ON c.oid = a.attcollation \
     WHERE a.attrelid = $1::text::regclass AND a.attname = ANY($2::text[]) \
     AND (a.atttypid = ANY ('{int2,int4,int8,bool,date,time,timestamp,timestamptz,uuid,bytea}'::regtype[]) \
          OR (a.atttypid = ANY ('{text,varchar}'::regtype[]) AND coalesce(c.collisdeterministic, false)))"
}

/// Whether the merge keys compare as the encode stage sees them, so that it may track them
/// ([`crate::encode::repeats`]): in the catalog, or for a table the load creates, by the
/// types it gives them (text takes the database's collation, which is deterministic).
///
/// # Errors
/// A failing catalog query.
pub(crate) async fn keys_compare_as_sent(
    client: &tokio_postgres::Client,
    plan: &LoadPlan,
) -> Result<bool, SinkError> {
    let Some((_, types)) = plan.merge_key_columns() else {
        return Ok(false);
    };
    if plan.create_table.is_some() {
        return Ok(types
            .iter()
            .all(|t| t.equal_means_identical() || *t == PgType::Text));
    }
    client
        .query_one(
            keys_compare_as_sent_statement(),
            &[&qualified(&plan.table), &plan.merge_keys],
        )
        .await
        .map(|row| row.get(0))
        .map_err(|e| SinkError::database("reading the catalog", &plan.table, &e))
}

/// Whether this merge may COPY into its target (see the module's rules), taking the lock that
/// keeps the target empty for other sessions if it may.
pub(super) async fn target_takes_copy(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
) -> Result<bool, SinkError> {
    let failed = |e: tokio_postgres::Error| {
        SinkError::database("checking the merge's target is empty", &plan.table, &e)
    };
    let table = qualified(&plan.table);
    // A table this load creates is seen by no one else until it commits.
    if plan.create_table.is_none() {
        let attempt = transaction.savepoint("apitap_lock").await.map_err(failed)?;
        let locked = attempt
            .batch_execute(&format!(
                "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE NOWAIT"
            ))
            .await;
        match locked {
            Ok(()) => attempt.commit().await.map_err(failed)?,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                attempt.rollback().await.map_err(failed)?;
                tracing::info!(table = %plan.table, "another session is using the table: the merge stages every row");
                return Ok(false);
            }
            Err(e) => return Err(failed(e)),
        }
    }
    let row = transaction
        .query_one(
            plan.takes_copy_statement().as_str(),
            &[&table, &plan.merge_keys],
        )
        .await
        .map_err(failed)?;
    Ok(row.get(0))
}

/// Rows COPYed into the target and rows staged, by [`segment`].
pub(super) struct Copied {
    pub into_target: u64,
    pub staged: u64,
}

/// One segment of a merge into an empty target: chunks of keys met for the first time are
/// COPYed into the target, the others into the staging table (they wait in memory, up to
/// [`PENDING_BYTES`], so that the COPY into the target is rarely interrupted). As
/// [`crate::sink::write::copy::segment`], only [`Encoded::End`] lets a COPY finish.
pub(super) async fn segment(
    transaction: &tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
) -> Result<(Copied, SegmentEnd), SinkError> {
    let table = &plan.table;
    let copy_failed = |e: tokio_postgres::Error| SinkError::database("COPY", table, &e);
    let staging_failed = |e: tokio_postgres::Error| {
        SinkError::database("COPY (into the merge's staging table)", table, &e)
    };
    let started = std::time::Instant::now();
    let into_target = plan.copy_into_target_statement();
    let into_staging = plan.copy_statement(false);
    let mut copied = Copied {
        into_target: 0,
        staged: 0,
    };
    let mut copy = CopyIn::open(transaction, &into_target)
        .await
        .map_err(copy_failed)?;
    // Copied out of their chunks, whose buffers the encode stage reuses: a chunk of a few
    // repeated rows would otherwise hold a buffer of a whole batch.
    let mut pending = BytesMut::new();
    let end = loop {
        let chunk = match next_chunk(rx).await? {
            ControlFlow::Continue(chunk) => chunk,
            ControlFlow::Break(end) => break end,
        };
        progress.add_rows(chunk.rows, SentWith::Copy);
        if !chunk.repeats {
            copy.send(chunk.bytes).await.map_err(copy_failed)?;
            continue;
        }
        pending.extend_from_slice(&chunk.bytes);
        if pending.len() >= PENDING_BYTES {
            copied.into_target += copy.finish().await.map_err(copy_failed)?;
            copied.staged += copy_all(transaction, &into_staging, [pending.split().freeze()])
                .await
                .map_err(staging_failed)?;
            progress.round_trip(Statement::Copy);
            copy = CopyIn::open(transaction, &into_target)
                .await
                .map_err(copy_failed)?;
        }
    };
    copied.into_target += copy.finish().await.map_err(copy_failed)?;
    if !pending.is_empty() {
        copied.staged += copy_all(transaction, &into_staging, [pending.freeze()])
            .await
            .map_err(staging_failed)?;
    }
    progress.round_trip(Statement::Copy);
    tracing::info!(statement = "COPY", table = %table, into_target = copied.into_target, staged = copied.staged, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    Ok((copied, end))
}
