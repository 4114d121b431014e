//! How a load's rows go into the table, chosen once before the encode stage starts (it
//! encodes for the path: COPY data or INSERT rows, with merge keys tracked or not) and matched
//! by every segment of the write.

use std::sync::Arc;

use crate::base::options::WriteMethod;
use crate::rejects::RejectFile;
use crate::schema::TableName;
use crate::sink::plan::LoadPlan;
use crate::sink::{SinkError, copy_from_stdin_works};

use super::merge_empty::keys_compare_as_sent;

/// The ways rows are written.
pub(crate) enum RowsPath {
    /// The records have no field to load: the input is read to its end and nothing written.
    Nothing,
    /// Batched INSERTs (`--method insert`, or a server that refuses COPY FROM STDIN); a merge
    /// upserts each batch as it goes, and rows the server refuses are set aside one batch at
    /// a time.
    Insert { rejects: Option<Arc<RejectFile>> },
    /// One binary COPY into the table (or into the new table of a replace's swap).
    Copy,
    /// `--nested tables`, appending or replacing: the root's rows and the child tables' come
    /// in parts, each a temporary file per table, COPYed table by table
    /// ([`super::family::segment`]).
    Family,
    /// Binary COPY chunk by chunk, each under a savepoint, setting aside the rows the server
    /// refuses (`--on-error reject`).
    CopyIsolating { rejects: Arc<RejectFile> },
    /// Binary COPY through the load's connection and these at once (`--copy-streams`).
    Streams {
        streams: Vec<tokio_postgres::Client>,
    },
    /// A merge: COPY into a staging table, then one upsert (rows it refuses are found and set
    /// aside after). With `into_empty`, the encode stage marks the rows whose key may have
    /// come before, and a segment whose table is empty COPYs the others straight into it.
    Merge {
        rejects: Option<Arc<RejectFile>>,
        into_empty: bool,
    },
}

impl RowsPath {
    /// Chooses the path for `plan`: `asked` is the user's method (COPY falls back to INSERT
    /// where the server refuses COPY FROM STDIN), `rejects` the reject file in reject mode,
    /// `streams` the extra connections of `--copy-streams`.
    ///
    /// # Errors
    /// A failing catalog query.
    pub(crate) async fn choose(
        client: &tokio_postgres::Client,
        plan: &LoadPlan,
        asked: WriteMethod,
        rejects: Option<Arc<RejectFile>>,
        streams: Vec<tokio_postgres::Client>,
    ) -> Result<RowsPath, SinkError> {
        if plan.copy_columns == 0 {
            return Ok(RowsPath::Nothing);
        }
        if choose_method(client, asked, &plan.table).await? == WriteMethod::Insert {
            return Ok(RowsPath::Insert { rejects });
        }
        if !plan.merge_keys.is_empty() {
            // Tracking keys is only safe where keys PostgreSQL calls equal are equal as sent.
            let into_empty = rejects.is_none()
                && streams.is_empty()
                && keys_compare_as_sent(client, plan).await?;
            return Ok(RowsPath::Merge {
                rejects,
                into_empty,
            });
        }
        Ok(match rejects {
            // A row the server refuses cannot be set aside alone when child tables hold
            // rows of its record: the load fails instead, naming it (the decoder still sets
            // aside every record it refuses, with all its rows).
            _ if plan.family.is_some() => RowsPath::Family,
            Some(rejects) => RowsPath::CopyIsolating { rejects },
            None if !streams.is_empty() => RowsPath::Streams { streams },
            None => RowsPath::Copy,
        })
    }

    /// Rows are sent as INSERT statements, not COPY data.
    pub(crate) fn inserts(&self) -> bool {
        matches!(self, RowsPath::Insert { .. })
    }

    /// The encode stage marks the chunks whose merge key may have come before.
    pub(crate) fn tracks_merge_keys(&self) -> bool {
        matches!(
            self,
            RowsPath::Merge {
                into_empty: true,
                ..
            }
        )
    }
}

/// Binary COPY unless the user asked for INSERTs, or the server refuses COPY FROM STDIN
/// (some poolers and PostgreSQL-compatible servers do): then the INSERT fallback, with a
/// warning.
async fn choose_method(
    client: &tokio_postgres::Client,
    asked: WriteMethod,
    table: &TableName,
) -> Result<WriteMethod, SinkError> {
    if asked == WriteMethod::Copy && !copy_from_stdin_works(client, table).await? {
        tracing::warn!(table = %table, "the server refuses COPY FROM STDIN; loading with batched INSERTs (--method insert) instead");
        return Ok(WriteMethod::Insert);
    }
    Ok(asked)
}
