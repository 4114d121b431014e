//! The INSERT fallback (`--method insert`, or chosen by itself where the server refuses
//! COPY FROM STDIN): batches of rows as one `INSERT … SELECT … FROM unnest($1::text[], …)`
//! each, one text-array parameter per column, so the 65,535-parameter limit never applies;
//! PostgreSQL casts each value from text to its column's type. With merge keys each batch is
//! an `INSERT … ON CONFLICT DO UPDATE` keeping the last record of a key repeated within it.

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tracing::Instrument;

use super::refused;
use crate::metrics::Statement;
use crate::progress::{Progress, SentWith};
use crate::rejects::RejectFile;
use crate::sink::plan::{LoadPlan, STAGING_SEQ};
use crate::sink::write::{Encoded, SegmentEnd};
use crate::sink::{SinkError, qualified};

impl LoadPlan {
    /// `INSERT … SELECT … FROM unnest($1::text[], …)` for the INSERT fallback: one text-array
    /// parameter per column, each value cast to its column's type by PostgreSQL.
    pub(crate) fn insert_statement(&self) -> String {
        let aliases: Vec<String> = (1..=self.copy_columns).map(|i| format!("a{i}")).collect();
        let arrays: Vec<String> = (1..=self.copy_columns)
            .map(|i| format!("${i}::text[]"))
            .collect();
        let types = self.copy_types();
        let casts: Vec<String> = types
            .iter()
            .zip(&aliases)
            .map(|(t, a)| format!("u.{a}::{}", t.sql_name()))
            .collect();
        let Some(conflict) = self.on_conflict() else {
            return format!(
                "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u({})",
                qualified(&self.written_table()),
                self.quoted_copy_names().join(", "),
                casts.join(", "),
                arrays.join(", "),
                aliases.join(", ")
            );
        };
        let rows = format!(
            "unnest({}) WITH ORDINALITY AS u({}, {STAGING_SEQ})",
            arrays.join(", "),
            aliases.join(", ")
        );
        // ON CONFLICT may touch a row once per statement, so a key repeated within the batch
        // keeps only its last record (later statements override earlier ones in turn).
        let names = self.copy_names();
        let keys: Vec<String> = self
            .merge_keys
            .iter()
            .filter_map(|k| names.iter().position(|n| n == k))
            .map(|i| casts[i].clone())
            .collect();
        format!(
            "INSERT INTO {} ({}) SELECT DISTINCT ON ({keys}) {} FROM {rows} ORDER BY {keys}, u.{STAGING_SEQ} DESC {conflict}",
            qualified(&self.table),
            self.quoted_copy_names().join(", "),
            casts.join(", "),
            keys = keys.join(", "),
        )
    }
}

/// Runs the INSERT fallback until the input or a commit point ends. With a reject file, a
/// statement the server refuses is split until each refused row stands alone and is set
/// aside; the rest of the rows still load, in order.
pub(super) async fn segment(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    rx: &mut mpsc::Receiver<Encoded>,
    rejects: Option<&RejectFile>,
    progress: &Progress,
) -> Result<(u64, SegmentEnd), SinkError> {
    let table = &plan.table;
    let insert_failed = |e: tokio_postgres::Error| SinkError::database("INSERT", table, &e);
    let statement = transaction
        .prepare(&plan.insert_statement())
        .await
        .map_err(insert_failed)?;
    let mut loaded = 0;
    loop {
        let (columns, rows, refusable) = match rx.recv().await {
            Some(Encoded::Rows {
                columns,
                rows,
                refusable,
            }) => (columns, rows, refusable),
            Some(Encoded::Copy(_) | Encoded::Part(_)) => {
                return Err(SinkError::Protocol("COPY data on the INSERT path"));
            }
            Some(end) => {
                let end = Option::<SegmentEnd>::from(end)
                    .ok_or(SinkError::Protocol("a segment that does not end"))?;
                return Ok((loaded, end));
            }
            None => return Err(SinkError::InputEnded),
        };
        let insert = async |client: &tokio_postgres::Transaction<'_>,
                            range: std::ops::Range<usize>| {
            let slices: Vec<&[Option<String>]> =
                columns.iter().map(|c| &c[range.clone()]).collect();
            let params: Vec<&(dyn ToSql + Sync)> =
                slices.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            client
                .execute(&statement, &params)
                .instrument(
                    tracing::info_span!("sql.execute", statement = "INSERT", table = %table),
                )
                .await
        };
        let count = columns.first().map_or(0, Vec::len);
        loaded += match (rejects, refusable) {
            (Some(rejects), Some(refusable)) => {
                refused::isolate(
                    transaction,
                    count,
                    table,
                    "INSERT",
                    insert,
                    async |_, row, reason| {
                        rejects.add(
                            refusable.records[row],
                            None,
                            reason,
                            &crate::rejects::row_json(&refusable.batch, row),
                        )?;
                        Ok(())
                    },
                )
                .await?
            }
            _ => insert(&*transaction, 0..count)
                .await
                .map_err(insert_failed)?,
        };
        progress.add_rows(rows, SentWith::Insert);
        progress.round_trip(Statement::Insert);
    }
}
