//! `--mode merge` through COPY: the rows are COPYed into a temporary staging table, then one
//! `INSERT … SELECT … ON CONFLICT (keys) DO UPDATE` applies them; the last record of a key
//! repeated in the input wins. A record that holds exactly what its row holds leaves the row
//! untouched.

use tokio::sync::mpsc;

use super::encoded::{Encoded, SegmentEnd};
use super::{copy, execute, merge_empty, refused};
use crate::metrics::Statement;
use crate::progress::Progress;
use crate::rejects::RejectFile;
use crate::schema::{PgType, quote_ident};
use crate::sink::plan::{LoadPlan, STAGING, STAGING_ROW, StagedRows};
use crate::sink::{SinkError, qualified};

impl LoadPlan {
    /// `ON CONFLICT (keys) DO UPDATE SET …` for a merge: every loaded column but the keys
    /// takes the new value, unless none would change.
    ///
    /// Rewriting a row that stays the same costs PostgreSQL as much as a real change — a new
    /// row version, new index entries, WAL, a dead row for VACUUM — and fires UPDATE
    /// triggers; reruns over overlapping windows deliver mostly such rows (a million of them:
    /// 7.5 s rewritten, 2.8 s left alone). Values are compared as stored, not with `=`, which
    /// calls `1.0` and `1.00`, `0` and `-0`, or two spellings of a JSON number equal, and
    /// would keep the old spelling (see [`as_stored`]). Citus runs the same statement on
    /// its shards (tests/it/citus.rs checks the row versions there).
    pub(super) fn on_conflict(&self) -> Option<String> {
        if self.merge_keys.is_empty() {
            return None;
        }
        let keys: Vec<String> = self.merge_keys.iter().map(|k| quote_ident(k)).collect();
        let target = qualified(&self.table);
        let (updates, changed): (Vec<String>, Vec<String>) = self.decode.columns
            [..self.copy_columns]
            .iter()
            .filter(|c| !self.merge_keys.contains(&c.name))
            .map(|c| {
                let name = quote_ident(&c.name);
                let now = as_stored(&format!("{target}.{name}"), c.pg_type);
                let new = as_stored(&format!("EXCLUDED.{name}"), c.pg_type);
                (
                    format!("{name} = EXCLUDED.{name}"),
                    format!("{now} IS DISTINCT FROM {new}"),
                )
            })
            .unzip();
        Some(if updates.is_empty() {
            format!("ON CONFLICT ({}) DO NOTHING", keys.join(", "))
        } else {
            format!(
                "ON CONFLICT ({}) DO UPDATE SET {} WHERE {}",
                keys.join(", "),
                updates.join(", "),
                changed.join(" OR ")
            )
        })
    }

    /// Creates the staging table: the loaded columns with the target's exact types.
    /// Temporary (no WAL, private to the load) and dropped at commit. Filled by COPY alone,
    /// its rows' physical order (`ctid`) is their arrival order, which is what lets the last
    /// record of a key win without numbering the rows.
    pub(crate) fn staging_statement(&self) -> Option<String> {
        (!self.merge_keys.is_empty()).then(|| {
            // temp_buffers must grow before the session's first temporary table; the 8 MB
            // default would push a large staging table through disk.
            format!(
                "SET LOCAL temp_buffers = '512MB'; \
                 CREATE TEMP TABLE {staging} ON COMMIT DROP AS SELECT {cols} FROM {target} WITH NO DATA",
                staging = quote_ident(STAGING),
                cols = self.quoted_copy_names().join(", "),
                target = qualified(&self.table),
            )
        })
    }

    /// `ANALYZE` of the staging table, so the merge gets a sensible plan.
    pub(crate) fn analyze_staging_statement(&self) -> String {
        format!("ANALYZE {}", quote_ident(STAGING))
    }

    /// Upserts the staged rows: all of them, or when keys repeat the last record of each
    /// (a row is kept only if no later row has its key, which PostgreSQL answers with a hash
    /// anti-join on the key rather than a sort of whole rows, so ON CONFLICT never meets a
    /// key twice; without repeats the plain INSERT … SELECT is a third faster), or the rows
    /// numbered `$1` to `$2` by [`LoadPlan::number_staging_statement`], again keeping the
    /// last record of a key.
    pub(crate) fn merge_statement(&self, rows: StagedRows) -> Option<String> {
        let conflict = self.on_conflict()?;
        let staging = quote_ident(STAGING);
        let cols = self.quoted_copy_names().join(", ");
        let same_key: Vec<String> = self
            .merge_keys
            .iter()
            .map(|k| format!("later.{0} = staged.{0}", quote_ident(k)))
            .collect();
        let latest_only = |order: &str| {
            format!(
                "NOT EXISTS (SELECT 1 FROM {staging} AS later WHERE {} AND later.{order} > staged.{order})",
                same_key.join(" AND ")
            )
        };
        let filter = match rows {
            StagedRows::All => String::new(),
            StagedRows::LastOfEachKey => format!("WHERE {}", latest_only("ctid")),
            StagedRows::Numbered => format!(
                "WHERE staged.{STAGING_ROW} BETWEEN $1 AND $2 AND {}",
                latest_only(STAGING_ROW)
            ),
        };
        let staged_cols: Vec<String> = self
            .quoted_copy_names()
            .iter()
            .map(|c| format!("staged.{c}"))
            .collect();
        Some(format!(
            "INSERT INTO {target} ({cols}) \
             SELECT {staged_cols} FROM {staging} AS staged {filter} {conflict}",
            target = qualified(&self.table),
            staged_cols = staged_cols.join(", "),
        ))
    }

    /// Inserts every staged row, with no ON CONFLICT: the merge into an empty table.
    pub(crate) fn insert_staged_statement(&self) -> String {
        let cols = self.quoted_copy_names().join(", ");
        format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {}",
            qualified(&self.table),
            quote_ident(STAGING)
        )
    }

    /// Whether the target has no row (as this transaction sees it) and no deferrable
    /// constraint, which a plain INSERT would check only at COMMIT (and ON CONFLICT refuses):
    /// `$1` is the table's qualified name.
    pub(crate) fn target_empty_statement(&self) -> String {
        format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {}) AND NOT EXISTS              (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND condeferrable)",
            qualified(&self.table)
        )
    }

    /// Numbers the staged rows in arrival order (a rewrite of the staging table reads it in
    /// physical order, which is arrival order), for a merge that goes range by range.
    pub(crate) fn number_staging_statement(&self) -> String {
        let staging = quote_ident(STAGING);
        format!(
            "ALTER TABLE {staging} ADD COLUMN {STAGING_ROW} bigint GENERATED ALWAYS AS IDENTITY; \
             CREATE INDEX ON {staging} ({STAGING_ROW}); ANALYZE {staging}"
        )
    }

    /// The staged row numbered `$1`, as JSON, for the reject file.
    pub(crate) fn staged_row_statement(&self) -> String {
        format!(
            "SELECT row_to_json(r)::text FROM (SELECT {} FROM {} WHERE {STAGING_ROW} = $1) r",
            self.quoted_copy_names().join(", "),
            quote_ident(STAGING)
        )
    }
}

/// One segment of a merge: the rows are COPYed into the staging table (with `into_empty`,
/// those whose key is new go straight into a target that is empty and locked; see
/// [`merge_empty`]), then applied in one upsert. With `rejects`, each staged row's record
/// number is kept, so that a row the upsert refuses can be set aside.
pub(super) async fn segment(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
    rejects: Option<&RejectFile>,
    into_empty: bool,
) -> Result<(u64, SegmentEnd), SinkError> {
    let table = &plan.table;
    let staging = plan.staging_statement();
    execute(transaction, staging.as_deref(), "CREATE TEMP TABLE", table).await?;
    let mut records = Vec::new();
    let into_target = into_empty && merge_empty::target_takes_copy(transaction, plan).await?;
    let (loaded, staged, end) = if into_target {
        let (copied, end) = merge_empty::segment(transaction, plan, rx, progress).await?;
        (copied.into_target + copied.staged, copied.staged, end)
    } else {
        let statement = plan.copy_statement(false);
        let kept = rejects.map(|_| &mut records);
        let (loaded, end) =
            copy::segment(transaction, &statement, table, rx, progress, kept).await?;
        (loaded, loaded, end)
    };
    if staged > 0 {
        apply_staged(transaction, plan, rejects.map(|r| (r, records.as_slice()))).await?;
        progress.round_trip(Statement::Merge);
    }
    Ok((loaded, end))
}

/// Applies the staged rows to the table with one INSERT … ON CONFLICT DO UPDATE.
///
/// Optimistic: most loads repeat no key, so the plain upsert runs first, under a savepoint.
/// A repeated key makes PostgreSQL refuse it (ON CONFLICT may not touch a row twice,
/// SQLSTATE 21000); only then is it rolled back and run again keeping the last record of
/// each key. Checking for repeats first would cost a scan of every staged key on every load.
///
/// With a reject file (`refused`: it, and each staged row's record number), a row the
/// server refuses (a CHECK, NOT NULL or foreign key) is set aside instead of failing the load.
async fn apply_staged(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    refused: Option<(&RejectFile, &[u64])>,
) -> Result<(), SinkError> {
    let table = &plan.table;
    let started = std::time::Instant::now();
    let merge_failed = |e: tokio_postgres::Error| {
        SinkError::database("the merge (INSERT … ON CONFLICT)", table, &e)
    };
    let merge = |rows: StagedRows| plan.merge_statement(rows).unwrap_or_default();
    if refused.is_none() && insert_into_empty(transaction, plan).await? {
        tracing::info!(statement = "MERGE", table = %table, into_empty = true, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
        return Ok(());
    }
    let attempt = transaction
        .savepoint("apitap_merge")
        .await
        .map_err(merge_failed)?;
    let (merged, repeated) = match attempt.execute(merge(StagedRows::All).as_str(), &[]).await {
        Ok(merged) => {
            attempt.commit().await.map_err(merge_failed)?;
            (merged, false)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::CARDINALITY_VIOLATION) => {
            attempt.rollback().await.map_err(merge_failed)?;
            // The anti-join is hash tables over the staged keys; temporary tables get no
            // statistics unless analyzed.
            transaction
                .batch_execute(&format!(
                    "SET LOCAL work_mem = '256MB'; {}",
                    plan.analyze_staging_statement()
                ))
                .await
                .map_err(merge_failed)?;
            let merged = transaction
                .execute(merge(StagedRows::LastOfEachKey).as_str(), &[])
                .await
                .map_err(merge_failed)?;
            (merged, true)
        }
        Err(e) => match refused {
            Some((rejects, records)) if e.as_db_error().is_some() => {
                attempt.rollback().await.map_err(merge_failed)?;
                let merged = apply_isolating(transaction, plan, rejects, records).await?;
                (merged, true)
            }
            _ => return Err(merge_failed(e)),
        },
    };
    tracing::info!(statement = "MERGE", table = %table, repeated_keys = repeated, rows_affected = merged, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    Ok(())
}

/// The merge into an empty table, which has nothing to conflict with: a plain INSERT of the
/// staged rows, without ON CONFLICT's speculative insertion (1M rows into a table with a
/// primary key: 2.7 s against 4.5 s). Not for a table with deferrable constraints, whose
/// violations would surface only at COMMIT. Optimistic, under a savepoint: a key repeated in the
/// input, or a row another session inserted meanwhile, makes it fail with a unique
/// violation, and then it is rolled back and the upsert runs as it would have (as it does
/// after any refusal, so that the upsert reports it as before). Returns whether it merged.
async fn insert_into_empty(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
) -> Result<bool, SinkError> {
    let failed =
        |e: tokio_postgres::Error| SinkError::database("the merge (INSERT)", &plan.table, &e);
    let name = qualified(&plan.table);
    let empty: bool = transaction
        .query_one(plan.target_empty_statement().as_str(), &[&name])
        .await
        .map_err(failed)?
        .get(0);
    if !empty {
        return Ok(false);
    }
    let attempt = transaction
        .savepoint("apitap_insert")
        .await
        .map_err(failed)?;
    match attempt
        .execute(plan.insert_staged_statement().as_str(), &[])
        .await
    {
        Ok(_) => {
            attempt.commit().await.map_err(failed)?;
            Ok(true)
        }
        Err(e) if e.as_db_error().is_some() => {
            attempt.rollback().await.map_err(failed)?;
            Ok(false)
        }
        Err(e) => Err(failed(e)),
    }
}

/// A merge the server refused: the staged rows are numbered in arrival order and merged range
/// by range ([`refused::isolate`]), each refused row set aside. Ranges go in order and each
/// keeps the last record of a key, so the last record still wins.
async fn apply_isolating(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    rejects: &RejectFile,
    records: &[u64],
) -> Result<u64, SinkError> {
    let table = &plan.table;
    let action = "the merge (INSERT … ON CONFLICT)";
    let failed = |e: tokio_postgres::Error| SinkError::database(action, table, &e);
    transaction
        .batch_execute(&plan.number_staging_statement())
        .await
        .map_err(failed)?;
    let merge = plan
        .merge_statement(StagedRows::Numbered)
        .unwrap_or_default();
    let row_json = plan.staged_row_statement();
    // Staged rows are numbered from 1.
    let number = |row: usize| row as i64 + 1;
    refused::isolate(
        transaction,
        records.len(),
        table,
        action,
        async |savepoint, range| {
            let (first, last) = (number(range.start), number(range.end - 1));
            savepoint.execute(merge.as_str(), &[&first, &last]).await
        },
        async |transaction, row, reason| {
            let text: String = transaction
                .query_one(row_json.as_str(), &[&number(row)])
                .await
                .map_err(failed)?
                .get(0);
            rejects.add(records[row], None, reason, &text)?;
            Ok(())
        },
    )
    .await
}

/// `value` in a form two of which are equal exactly when PostgreSQL stores the same thing:
/// itself where `=` says that ([`PgType::equal_means_identical`]), else its binary send form
/// (numeric, floats) or its text, compared byte for byte (JSON; text, which may be citext or
/// under a nondeterministic collation).
pub(super) fn as_stored(value: &str, pg_type: PgType) -> String {
    match pg_type {
        _ if pg_type.equal_means_identical() => value.to_string(),
        PgType::Float4 => format!("float4send({value})"),
        PgType::Float8 => format!("float8send({value})"),
        PgType::Numeric => format!("numeric_send({value})"),
        PgType::Json | PgType::Jsonb => format!("{value}::text"),
        _ => format!("{value}::text COLLATE \"C\""),
    }
}
