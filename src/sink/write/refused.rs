//! Finding the rows the server refuses, so reject mode can set them aside and load the rest.
//!
//! PostgreSQL refuses a whole statement for one bad row (a key that exists, a CHECK, a value
//! out of range) and says which row only in words. So a refused group of rows is tried
//! again in halves, each under a savepoint, until every refused row stands alone: a group of
//! n rows with one bad row costs about 2·log2(n) extra statements, and every good row still
//! loads, in order. The COPY path, the INSERT fallback and the merge share this one loop;
//! each says how to write a range of its rows and how to set one row aside.

use std::ops::Range;

use tokio_postgres::Transaction;

use crate::schema::TableName;
use crate::sink::{SinkError, refusal};

/// Writes rows `0..rows` with `attempt` (`action`, for messages) (given a savepoint and a range of rows), halving
/// every range the server refuses; a refused single row goes to `set_aside` (the savepoint's
/// transaction, the row, and the server's reason). Ranges go in order, so rows land in their
/// input order. Returns what `attempt` reported as written.
///
/// # Errors
/// A failure that is not the server refusing rows (a lost connection), or whatever
/// `set_aside` returns (a reject file that cannot be written, too many rejects).
pub(super) async fn isolate(
    transaction: &mut Transaction<'_>,
    rows: usize,
    table: &TableName,
    action: &'static str,
    mut attempt: impl AsyncFnMut(&Transaction<'_>, Range<usize>) -> Result<u64, tokio_postgres::Error>,
    mut set_aside: impl AsyncFnMut(&Transaction<'_>, usize, &str) -> Result<(), SinkError>,
) -> Result<u64, SinkError> {
    let mut written = 0;
    let mut pending = Vec::new();
    pending.push(0..rows);
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        let savepoint = transaction
            .savepoint("apitap_rows")
            .await
            .map_err(|e| SinkError::database("SAVEPOINT", table, &e))?;
        match attempt(&savepoint, range.clone()).await {
            Ok(n) => {
                savepoint
                    .commit()
                    .await
                    .map_err(|e| SinkError::database("RELEASE SAVEPOINT", table, &e))?;
                written += n;
            }
            Err(e) if e.as_db_error().is_some() => {
                savepoint
                    .rollback()
                    .await
                    .map_err(|e| SinkError::database("ROLLBACK TO SAVEPOINT", table, &e))?;
                if range.len() == 1 {
                    let reason = format!("PostgreSQL refused the row: {}", refusal(&e));
                    set_aside(transaction, range.start, &reason).await?;
                } else {
                    // Last in, first out: the first half is tried first, keeping row order.
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
            }
            Err(e) => return Err(SinkError::database(action, table, &e)),
        }
    }
    Ok(written)
}
