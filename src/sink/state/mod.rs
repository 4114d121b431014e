//! Load state, per state key, kept in `apitap._state` and written in the same transaction as
//! the rows it describes, so a crash can never leave state and data disagreeing:
//!
//! - the highest incremental cursor value loaded, sent back to the API next time;
//! - for a `--commit-every` backfill still under way, the pager's position after the last
//!   committed page, where a rerun resumes.
//!
//! [`lock`] keeps overlapping runs of one load apart while they read and write it.

pub(crate) mod lock;

use tokio_postgres::GenericClient;

use super::SinkError;
use crate::schema::TableName;

/// What a load keeps in `apitap._state`.
#[derive(Debug, Clone)]
pub(crate) struct StateSettings {
    /// The key of this load's state.
    pub key: String,
    /// The key the same load's state had before (a pipeline source's name, before keys
    /// named the module too); its state is taken over when `key` has none.
    pub legacy_key: Option<String>,
    /// Ignore the stored state this time (a cursor, an unfinished backfill); it is still
    /// updated.
    pub full_refresh: bool,
    /// Remember the highest value of a field, and ask the API only for newer records.
    pub incremental: Option<Incremental>,
    /// A `--commit-every` backfill keeps its position at each commit.
    pub resumable: bool,
    /// The highest cursor value the committed pages of an unfinished backfill held, once
    /// read from the state: the running maximum starts there.
    pub resumed_cursor: Option<String>,
}

impl StateSettings {
    /// Whether the load keeps state, and so takes the lock on its key.
    pub(crate) fn kept(&self) -> bool {
        self.incremental.is_some() || self.resumable
    }
}

/// Incremental loading: which field's highest value to remember, and how to send it back.
#[derive(Debug, Clone)]
pub(crate) struct Incremental {
    /// The field (column) whose highest loaded value is stored.
    pub cursor_field: String,
    /// The query parameter the stored value is sent in (HTTP sources).
    pub cursor_param: Option<String>,
}

const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS apitap; \
     CREATE TABLE IF NOT EXISTS apitap._state ( \
       key text PRIMARY KEY, \
       cursor_value text, \
       resume text, \
       updated_at timestamptz NOT NULL DEFAULT now())";

/// A state table made before resumable backfills lacks `resume` and requires a cursor.
const UPGRADE: &str = "ALTER TABLE apitap._state ADD COLUMN IF NOT EXISTS resume text, \
     ALTER COLUMN cursor_value DROP NOT NULL";

/// What is stored for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub cursor: Option<String>,
    /// A backfill's position, while it is unfinished.
    pub resume: Option<String>,
}

/// The state stored for `key` (empty if none). Without a row for `key`, the row of
/// `legacy` (the key the same load had before) is taken over: the next save stores it under
/// `key`, and `legacy`'s row is left for any other load that still reads it.
///
/// # Errors
/// A failing query.
pub(crate) async fn read(
    client: &tokio_postgres::Client,
    key: &str,
    legacy: Option<&str>,
    table: &TableName,
) -> Result<Stored, SinkError> {
    let fail = |e: tokio_postgres::Error| SinkError::database("reading apitap._state", table, &e);
    let columns: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = 'apitap' AND table_name = '_state' AND column_name IN ('cursor_value', 'resume')",
            &[],
        )
        .await
        .map_err(fail)?
        .get(0);
    let query = match columns {
        0 => return Ok(Stored::default()),
        1 => "SELECT cursor_value, NULL::text FROM apitap._state WHERE key = $1",
        _ => "SELECT cursor_value, resume FROM apitap._state WHERE key = $1",
    };
    for candidate in std::iter::once(key).chain(legacy) {
        if let Some(row) = client.query_opt(query, &[&candidate]).await.map_err(fail)? {
            if candidate != key {
                tracing::info!(
                    key,
                    legacy = candidate,
                    "taking over the state stored under the load's former key"
                );
            }
            return Ok(Stored {
                cursor: row.get(0),
                resume: row.get(1),
            });
        }
    }
    Ok(Stored::default())
}

/// Clears `key`'s backfill position, if there is one, inside the caller's transaction: a
/// load that ran to its end leaves nothing to resume, whether or not it was resumed itself
/// or committed along the way (a later `--commit-every` run must start from the beginning).
///
/// # Errors
/// A failing statement.
pub(crate) async fn finish(
    transaction: &impl GenericClient,
    key: &str,
    table: &TableName,
) -> Result<(), SinkError> {
    let fail = |e: tokio_postgres::Error| SinkError::database("writing apitap._state", table, &e);
    let has_positions = has_resume_column(transaction).await.map_err(fail)?;
    if has_positions {
        transaction
            .execute(
                "UPDATE apitap._state SET resume = NULL, updated_at = now() \
                 WHERE key = $1 AND resume IS NOT NULL",
                &[&key],
            )
            .await
            .map_err(fail)?;
    }
    Ok(())
}

/// Whether `apitap._state` has the `resume` column (tables made before backfills resumed
/// lack it until a load that resumes adds it).
async fn has_resume_column(client: &impl GenericClient) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) = 1 FROM information_schema.columns \
             WHERE table_schema = 'apitap' AND table_name = '_state' AND column_name = 'resume'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Records `stored` for `key`, inside the caller's transaction.
///
/// # Errors
/// A failing statement.
pub(crate) async fn save(
    transaction: &impl GenericClient,
    key: &str,
    stored: &Stored,
    table: &TableName,
) -> Result<(), SinkError> {
    let fail = |e: tokio_postgres::Error| SinkError::database("writing apitap._state", table, &e);
    transaction.batch_execute(CREATE).await.map_err(fail)?;
    let current = has_resume_column(transaction).await.map_err(fail)?;
    if !current {
        transaction.batch_execute(UPGRADE).await.map_err(fail)?;
    }
    transaction
        .execute(
            "INSERT INTO apitap._state (key, cursor_value, resume) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET cursor_value = coalesce(EXCLUDED.cursor_value, apitap._state.cursor_value), \
             resume = EXCLUDED.resume, updated_at = now()",
            &[&key, &stored.cursor, &stored.resume],
        )
        .await
        .map_err(fail)?;
    Ok(())
}
