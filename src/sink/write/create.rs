//! Creating the table a load planned as new, when another load (or anyone) may be creating it
//! at the same moment: a scripted backfill of several parts into one new table starts them
//! together, and every part sees the table missing when it plans.
//!
//! PostgreSQL makes the second `CREATE TABLE` of one name wait for the first creator's
//! transaction, then refuse (a unique violation on `pg_type`, or "relation already exists" if
//! the first had committed already). So the statement runs under a savepoint: refused that
//! way, it is rolled back, and the table the other load created is used as an existing one —
//! when it has every column this load loads, with the same types; else the load stops,
//! naming the difference, and the table is left as the other load made it.

use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;

use crate::schema::PgType;
use crate::sink::plan::{CreateTable, LoadPlan};
use crate::sink::{SinkError, qualified};

/// Who made the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Created {
    /// This load, in its transaction.
    Here,
    /// Another session, since this load planned it: the rows go into it as into any table.
    Meanwhile,
}

/// Runs `create` (of `plan`), or finds the table another session created meanwhile.
///
/// # Errors
/// A failing statement, or a table created meanwhile without this load's columns.
pub(super) async fn create_table(
    transaction: &mut Transaction<'_>,
    plan: &LoadPlan,
    create: &CreateTable,
) -> Result<Created, SinkError> {
    let table = &plan.table;
    let failed = |e: tokio_postgres::Error| SinkError::database("CREATE TABLE", table, &e);
    let attempt = transaction
        .savepoint("apitap_create")
        .await
        .map_err(failed)?;
    let started = std::time::Instant::now();
    let refused = match attempt.batch_execute(&create.sql()).await {
        Ok(()) => {
            attempt.commit().await.map_err(failed)?;
            tracing::info!(statement = "CREATE TABLE", table = %table, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
            return Ok(Created::Here);
        }
        Err(e) => e,
    };
    let taken = matches!(
        refused.code(),
        Some(&SqlState::DUPLICATE_TABLE) | Some(&SqlState::UNIQUE_VIOLATION)
    );
    if !taken {
        return Err(failed(refused));
    }
    // ROLLBACK TO leaves the savepoint in place: released, the load goes on in its own
    // transaction, where a table created earlier in it may still be COPYed with FREEZE.
    attempt.rollback().await.map_err(failed)?;
    transaction
        .batch_execute("RELEASE SAVEPOINT apitap_create")
        .await
        .map_err(failed)?;
    let columns = existing_columns(transaction, &create.table)
        .await
        .map_err(failed)?;
    let missing: Vec<String> = create
        .columns
        .iter()
        .filter(|c| !columns.contains(&(c.name.clone(), Some(c.pg_type))))
        .map(|c| format!("{} {}", c.name, c.pg_type))
        .collect();
    if !missing.is_empty() {
        return Err(SinkError::Plan {
            table: table.to_string(),
            reason: format!(
                "another session created the table while this load was starting, without the columns {} this load needs; \
                 load again to load into the table as it is now",
                missing.join(", ")
            ),
        });
    }
    tracing::info!(table = %table, "another session created the table meanwhile; loading into it");
    Ok(Created::Meanwhile)
}

/// The columns of `table` as the catalog has them now: name, and type where apitap loads it.
async fn existing_columns(
    transaction: &Transaction<'_>,
    table: &crate::schema::TableName,
) -> Result<Vec<(String, Option<PgType>)>, tokio_postgres::Error> {
    let rows = transaction
        .query(
            "SELECT a.attname::text, COALESCE(bt.typname, t.typname)::text
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            &[&qualified(table)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), PgType::from_typname(r.get(1))))
        .collect())
}
