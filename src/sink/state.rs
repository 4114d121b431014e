//! Incremental state: the highest cursor value loaded, per state key, kept in
//! `apitap._state` and written in the same transaction as the rows it describes, so a crash
//! can never leave state and data disagreeing.

use tokio_postgres::GenericClient;

use super::SinkError;
use crate::schema::TableName;

const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS apitap; \
     CREATE TABLE IF NOT EXISTS apitap._state ( \
       key text PRIMARY KEY, \
       cursor_value text NOT NULL, \
       updated_at timestamptz NOT NULL DEFAULT now())";

/// The cursor value stored for `key`, if any.
///
/// # Errors
/// A failing query.
pub async fn read(
    client: &tokio_postgres::Client,
    key: &str,
    table: &TableName,
) -> Result<Option<String>, SinkError> {
    let fail = |e: tokio_postgres::Error| SinkError::database("reading apitap._state", table, &e);
    let exists: bool = client
        .query_one("SELECT to_regclass('apitap._state') IS NOT NULL", &[])
        .await
        .map_err(fail)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_opt(
            "SELECT cursor_value FROM apitap._state WHERE key = $1",
            &[&key],
        )
        .await
        .map_err(fail)?
        .map(|row| row.get(0)))
}

/// Records `value` for `key`, inside the caller's transaction.
///
/// # Errors
/// A failing statement.
pub async fn save(
    transaction: &impl GenericClient,
    key: &str,
    value: &str,
    table: &TableName,
) -> Result<(), SinkError> {
    let fail = |e: tokio_postgres::Error| SinkError::database("writing apitap._state", table, &e);
    transaction.batch_execute(CREATE).await.map_err(fail)?;
    transaction
        .execute(
            "INSERT INTO apitap._state (key, cursor_value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET cursor_value = EXCLUDED.cursor_value, updated_at = now()",
            &[&key, &value],
        )
        .await
        .map_err(fail)?;
    Ok(())
}
