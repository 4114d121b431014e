//! What the catalog says about the target: its columns and their types, whether it has the
//! unique key a merge needs, and whether the server takes COPY at all.

use crate::schema::{PgType, TableName};
use crate::sink::{SinkError, qualified};

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CatalogColumn {
    pub name: String,
    /// `format_type()` of the column, for messages.
    pub type_name: String,
    /// `None` for a type apitap cannot encode.
    pub pg_type: Option<PgType>,
    /// Has a default, is an identity, or is generated: leaving it out of COPY fills it in.
    pub has_default: bool,
    pub generated: bool,
}

/// How the target's session reads dates and times: in which `TimeZone` a timestamp without
/// an offset is, and whether `+infinity` is a date (PostgreSQL 16 and later take that
/// spelling; 15 refuses it). Asked of the server itself, not guessed from its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionDates {
    pub time_zone: String,
    pub plus_infinity: bool,
}

/// Reads how the session reads dates and times (see [`SessionDates`]).
///
/// # Errors
/// A failing query.
pub(crate) async fn session_dates(
    client: &tokio_postgres::Client,
    table: &TableName,
) -> Result<SessionDates, SinkError> {
    let fail = |e: tokio_postgres::Error| {
        SinkError::database("reading how the session reads dates", table, &e)
    };
    let time_zone: String = client
        .query_one("SELECT current_setting('TimeZone')", &[])
        .await
        .map_err(fail)?
        .get(0);
    // Outside any transaction, a refused cast is just an error answer.
    let plus_infinity = match client.simple_query("SELECT '+infinity'::date").await {
        Ok(_) => true,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_DATETIME_FORMAT) => {
            false
        }
        Err(e) => return Err(fail(e)),
    };
    Ok(SessionDates {
        time_zone,
        plus_infinity,
    })
}

/// What the catalog says about the target.
#[derive(Debug, Clone)]
pub(crate) struct TargetInfo {
    /// The table with its schema resolved (`current_schema()` when none was given).
    pub name: TableName,
    /// How the session reads dates and times.
    pub dates: SessionDates,
    pub schema_exists: bool,
    /// The table's OID, when it exists.
    pub oid: Option<u32>,
    /// `None` when the table does not exist.
    pub columns: Option<Vec<CatalogColumn>>,
    /// How Citus holds the table, when it does.
    pub distribution: Option<crate::sink::plan::citus::Distribution>,
}

/// Looks the target up in the catalog.
///
/// # Errors
/// A failing catalog query.
pub(crate) async fn describe_target(
    client: &tokio_postgres::Client,
    name: &TableName,
) -> Result<TargetInfo, SinkError> {
    let session = client
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(|e| SinkError::database("reading the catalog", name, &e))?;
    let dates = session_dates(client, name).await?;
    let schema = match &name.schema {
        Some(s) => s.clone(),
        None => session
            .get::<_, Option<String>>(0)
            .unwrap_or_else(|| "public".into()),
    };
    let resolved = TableName {
        schema: Some(schema.clone()),
        table: name.table.clone(),
    };
    let fail = |e: tokio_postgres::Error| SinkError::database("reading the catalog", &resolved, &e);
    let schema_exists = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(fail)?
        .is_some();
    let oid: Option<u32> = client
        .query_opt(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name.table],
        )
        .await
        .map_err(fail)?
        .map(|row| row.get(0));
    let columns = if oid.is_some() {
        // Domains are loaded as their base type, which is what their send format is.
        let rows = client
            .query(
                "SELECT a.attname::text,
                        format_type(a.atttypid, a.atttypmod),
                        COALESCE(bt.typname, t.typname)::text,
                        a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
                        a.attgenerated <> ''
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_type t ON t.oid = a.atttypid
                 LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
                &[&schema, &name.table],
            )
            .await
            .map_err(fail)?;
        Some(
            rows.iter()
                .map(|r| CatalogColumn {
                    name: r.get(0),
                    type_name: r.get(1),
                    pg_type: PgType::from_typname(r.get(2)),
                    has_default: r.get(3),
                    generated: r.get(4),
                })
                .collect(),
        )
    } else {
        None
    };
    let distribution = match oid {
        Some(oid) => crate::sink::plan::citus::distribution(client, oid, &resolved).await?,
        None => None,
    };
    Ok(TargetInfo {
        name: resolved,
        dates,
        schema_exists,
        oid,
        columns,
        distribution,
    })
}

/// Whether the server takes binary `COPY … FROM STDIN`, asked before the load's transaction
/// with a COPY into a table that cannot exist: PostgreSQL answers that it is missing (so it
/// would take the COPY), with no side effect; a server or pooler without COPY refuses the
/// statement itself (feature not supported, or a syntax error).
///
/// # Errors
/// A connection that fails.
pub(crate) async fn copy_from_stdin_works(
    client: &tokio_postgres::Client,
    table: &TableName,
) -> Result<bool, SinkError> {
    use tokio_postgres::error::SqlState;
    // The simple-query protocol: its error leaves the connection ready for the next
    // statement (an extended-protocol COPY that fails does not, in tokio-postgres).
    match client
        .batch_execute("COPY pg_temp.apitap_no_such_table FROM STDIN (FORMAT binary)")
        .await
    {
        Err(e) if e.is_closed() => Err(SinkError::database("trying COPY FROM STDIN", table, &e)),
        Err(e) => Ok(e.code() != Some(&SqlState::FEATURE_NOT_SUPPORTED)
            && e.code() != Some(&SqlState::SYNTAX_ERROR)),
        // Not reached: the session made no temporary table.
        Ok(()) => Ok(true),
    }
}

/// Whether `table` has a unique index (or primary key) on exactly `keys`, which ON CONFLICT
/// needs. Checked before any data moves, so a missing one costs nothing.
///
/// # Errors
/// A failing catalog query.
/// The columns of `table`'s primary key, in key order; none when the table has no primary
/// key or does not exist.
pub(crate) async fn primary_key(
    client: &tokio_postgres::Client,
    table: &TableName,
) -> Result<Vec<String>, SinkError> {
    client
        .query(
            "SELECT a.attname::text FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&qualified(table)],
        )
        .await
        .map(|rows| rows.iter().map(|row| row.get(0)).collect())
        .map_err(|e| SinkError::database("reading the catalog", table, &e))
}

pub(crate) async fn has_unique_key(
    client: &tokio_postgres::Client,
    table: &TableName,
    keys: &[String],
) -> Result<bool, SinkError> {
    client
        .query_one(
            "SELECT EXISTS (
               SELECT 1 FROM pg_index i
               WHERE i.indrelid = $1::text::regclass AND i.indisunique
                 AND i.indpred IS NULL AND i.indexprs IS NULL
                 AND i.indnkeyatts = cardinality($2::text[])
                 AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
                      FROM pg_attribute a
                      WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey[0:i.indnkeyatts - 1]))
                   = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) k))",
            &[&qualified(table), &keys],
        )
        .await
        .map(|row| row.get(0))
        .map_err(|e| SinkError::database("reading the catalog", table, &e))
}
