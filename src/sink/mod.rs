//! The PostgreSQL side: every statement apitap sends and every byte of COPY data, with the
//! connection, catalog lookups and the load plan. Nothing outside this module talks to the
//! server, and all SQL text is built here, with every identifier quoted.
//!
//! By concern, each a folder:
//! - [`connect`]: which server and how, read as libpq reads it (conninfo, service file, `PG*`,
//!   `.pgpass`, TLS);
//! - [`plan`]: how records map onto the table, from the catalog (and Citus's view of it): the
//!   load plan and its DDL;
//! - [`write`]: one load's transaction(s), fed by the encode stage: COPY, the INSERT fallback,
//!   the merge, the replace's swap, `--copy-streams`, and the rows the server refuses;
//! - [`state`]: `apitap._state` and the advisory locks that keep overlapping runs apart.

pub(crate) mod connect;
pub(crate) mod plan;
pub(crate) mod state;
pub(crate) mod write;

pub(crate) use connect::ConnectOptions;
pub(crate) use plan::catalog::{
    copy_from_stdin_works, describe_target, has_unique_key, primary_key,
};
pub(crate) use plan::{LoadPlan, PlanOptions};

use std::time::Duration;

use tokio_postgres::error::DbError;

use crate::base::error_chain;
use crate::base::options::{Mode, ReplaceWith, SchemaPolicy, WriteMethod};
use crate::schema::{TableName, quote_ident};
use plan::citus::DistributeAs;

/// What the sink needs of a load: the table and how rows go into it.
#[derive(Debug, Clone)]
pub(crate) struct WriteSettings {
    pub table: TableName,
    pub mode: Mode,
    /// How `--mode replace` replaces an existing table's rows.
    pub replace_with: ReplaceWith,
    /// Key columns of `--mode merge` (empty otherwise).
    pub merge_keys: Vec<String>,
    /// `--nested tables`: the root's key columns (`--key`), which child rows link to; empty:
    /// the table's primary key, or else an id generated per record.
    pub link_keys: Vec<String>,
    /// COPY, or batched INSERTs.
    pub method: WriteMethod,
    /// Rows per INSERT statement with `--method insert`.
    pub insert_batch: usize,
    /// COPY through this many connections at once; 1 is a single direct COPY.
    pub copy_streams: usize,
    /// Let `--mode replace` empty the table when the source has no records.
    pub allow_empty: bool,
    /// Fields without a column: add columns, fail, or drop them.
    pub schema: SchemaPolicy,
    /// Under `--schema evolve`, make a column text when it refuses a sampled value.
    pub widen_to_text: bool,
    /// Citus: how a table the load creates is distributed.
    pub distribute: Option<DistributeAs>,
    /// How long to wait for another run holding this load's state key or table, and how
    /// long a replace's swap may try for its moment alone with the table.
    pub lock_timeout: Duration,
}

/// A failure on the PostgreSQL side.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SinkError {
    /// Connection settings that cannot be used.
    #[error(transparent)]
    Settings(#[from] connect::ConnectError),
    #[error("could not connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("PostgreSQL rejected {action} on {table}: {message}")]
    Database {
        action: &'static str,
        table: String,
        message: String,
    },
    #[error(
        "lost the connection to PostgreSQL during {action} on {table}: the server ended the session or the network failed (the server log says which)"
    )]
    ConnectionLost { action: &'static str, table: String },
    /// Another run holds a lock this load needs (see [`lock`]).
    #[error(
        "another run is loading {what}: it is held by {holder}, and did not come free in {} s; \
         wait for that run to end (or end it with SELECT pg_terminate_backend(pid)), or wait longer \
         with --lock-timeout (YAML lock_timeout_secs)",
        .waited.as_secs_f64()
    )]
    Locked {
        what: String,
        holder: String,
        waited: std::time::Duration,
    },
    /// The swap of `--mode replace` never got its moment with the table to itself.
    #[error(
        "could not swap the new rows into {table}: it stayed in use for {} s by {sessions}; \
         readers never waited behind the swap more than a second. Load again once they are done, \
         wait longer with --lock-timeout (YAML lock_timeout_secs), or replace the rows in place \
         with --replace-with delete",
        .waited.as_secs_f64()
    )]
    SwapLocked {
        table: String,
        sessions: String,
        waited: std::time::Duration,
    },
    /// The session ended while COMMIT was under way.
    #[error("the connection to PostgreSQL ended during COMMIT on {table}: {reason}")]
    CommitUnknown { table: String, reason: String },
    #[error("cannot load {table}: {reason}")]
    Plan { table: String, reason: String },
    /// The temporary file holding a child table's rows (`--nested tables`) failed.
    #[error("could not hold the rows of {table} in a temporary file (TMPDIR): {error}")]
    Spool {
        table: String,
        #[source]
        error: std::io::Error,
    },
    #[error(
        "refusing to replace the rows of {table} with nothing: the source had no records (pass --allow-empty to empty the table)"
    )]
    EmptyReplace { table: TableName },
    /// A reject file that cannot be written, or more rejects than allowed.
    #[error(transparent)]
    Rejects(#[from] crate::rejects::RejectError),
    /// The input stopped before its end: a stage before the writer failed and reports why.
    #[error("the input ended before its end was reached")]
    InputEnded,
    /// A stage sent the writer something it cannot take (a bug, reported as one).
    #[error("internal error: {0}")]
    Protocol(&'static str),
}

impl SinkError {
    /// Wraps a tokio-postgres error with what apitap was doing and on which table.
    pub(crate) fn database(
        action: &'static str,
        table: &TableName,
        error: &tokio_postgres::Error,
    ) -> Self {
        if error.is_closed() {
            return SinkError::ConnectionLost {
                action,
                table: table.to_string(),
            };
        }
        let message = match error.as_db_error() {
            Some(db) => describe_db_error(db, true),
            None => error_chain(error),
        };
        SinkError::Database {
            action,
            table: table.to_string(),
            message,
        }
    }
}

/// Why the server refused a single row, for the reject file: its message, column, detail and
/// hint (the COPY context would only say "line 1").
pub(crate) fn refusal(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => describe_db_error(db, false),
        None => error_chain(error),
    }
}

/// The server's message with its detail, the column and, with `context`, the COPY context,
/// which for COPY names the failing row ("COPY items, line 42").
fn describe_db_error(db: &DbError, context: bool) -> String {
    let mut text = db.message().to_string();
    if let Some(column) = db.column() {
        text.push_str(&format!(" (column {column:?})"));
    }
    if let Some(detail) = db.detail() {
        text.push_str(&format!("; {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; hint: {hint}"));
    }
    if let Some(context) = db.where_().filter(|_| context) {
        text.push_str(&format!(" [{}]", context.replace('\n', "; ")));
    }
    text
}

/// `"schema"."table"`.
pub(crate) fn qualified(table: &TableName) -> String {
    match &table.schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&table.table)),
        None => quote_ident(&table.table),
    }
}
