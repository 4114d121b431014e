//! Citus: tables spread over worker nodes. A distributed table's rows live in shards on the
//! workers, placed by the hash of its distribution column; a reference table is copied whole
//! to every node. The coordinator takes COPY into either and routes each row.
//!
//! What apitap must never do is turn such a table into a plain table on the coordinator. A
//! replace by swap therefore makes its new table distributed like the old one — same column,
//! colocated with it, so the same shard count and placement — or a reference table, before
//! any row goes in; kinds of Citus table it cannot recreate are refused before anything
//! moves. Tables apitap creates can be made distributed or reference tables on request
//! (`--distribute-by`, `--reference-table`).

use tokio_postgres::GenericClient;

use crate::schema::TableName;
use crate::sink::{SinkError, qualified};

/// How Citus holds an existing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Distribution {
    /// Hash-distributed on `column`, in `shards` shards, colocated with the tables of
    /// colocation group `colocation_id`.
    Distributed {
        column: String,
        colocation_id: i32,
        shards: i64,
    },
    /// A copy on every node.
    Reference,
    /// Any other kind (a Citus local table, a single-shard or append-distributed table),
    /// described for messages.
    Other(String),
}

impl Distribution {
    /// The distribution column, which every unique key must include.
    pub(crate) fn column(&self) -> Option<&str> {
        match self {
            Distribution::Distributed { column, .. } => Some(column),
            _ => None,
        }
    }
}

/// How a table apitap creates is to be distributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DistributeAs {
    /// `create_distributed_table(table, column, …)`.
    Hash {
        column: String,
        /// A table to colocate with (same shard count and placement).
        colocate_with: Option<String>,
        shard_count: Option<u32>,
    },
    /// `create_reference_table(table)`.
    Reference,
}

impl DistributeAs {
    /// The call that distributes `table` (just created, still empty), as SQL text.
    pub(crate) fn statement(&self, table: &TableName) -> String {
        let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
        let table = literal(&qualified(table));
        match self {
            DistributeAs::Hash {
                column,
                colocate_with,
                shard_count,
            } => {
                let mut call = format!(
                    "SELECT create_distributed_table({table}, {}",
                    literal(column)
                );
                if let Some(other) = colocate_with {
                    call.push_str(&format!(", colocate_with => {}", literal(other)));
                }
                if let Some(count) = shard_count {
                    call.push_str(&format!(", shard_count => {count}"));
                }
                call.push(')');
                call
            }
            DistributeAs::Reference => format!("SELECT create_reference_table({table})"),
        }
    }

    /// Whether an existing table already is what was asked for.
    pub(crate) fn matches(&self, existing: Option<&Distribution>) -> bool {
        match (self, existing) {
            (
                DistributeAs::Hash { column, .. },
                Some(Distribution::Distributed { column: c, .. }),
            ) => c == column,
            (DistributeAs::Reference, Some(Distribution::Reference)) => true,
            _ => false,
        }
    }
}

/// How Citus holds the table `oid`: `None` for a plain table, or on a server without Citus.
///
/// # Errors
/// A failing catalog query.
pub(crate) async fn distribution(
    client: &impl GenericClient,
    oid: u32,
    table: &TableName,
) -> Result<Option<Distribution>, SinkError> {
    let fail = |e: tokio_postgres::Error| SinkError::database("reading Citus's catalog", table, &e);
    let citus: bool = client
        .query_one(
            "SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
            &[],
        )
        .await
        .map_err(fail)?
        .get(0);
    if !citus {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT p.partmethod::text, p.repmodel::text, p.colocationid,
                    CASE WHEN p.partmethod = 'h'
                         THEN column_to_column_name(p.logicalrelid, p.partkey) END,
                    (SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid)
             FROM pg_dist_partition p WHERE p.logicalrelid = $1::int8::oid",
            &[&i64::from(oid)],
        )
        .await
        .map_err(fail)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (method, model, colocation_id): (String, String, i32) =
        (row.get(0), row.get(1), row.get(2));
    Ok(Some(match (method.as_str(), model.as_str()) {
        ("h", _) => Distribution::Distributed {
            column: row.get::<_, Option<String>>(3).unwrap_or_default(),
            colocation_id,
            shards: row.get(4),
        },
        ("n", "t") => Distribution::Reference,
        ("n", _) if colocation_id == 0 => Distribution::Other("a Citus local table".into()),
        ("n", _) => Distribution::Other("a distributed table without a distribution column".into()),
        ("a", _) => Distribution::Other("an append-distributed table".into()),
        ("r", _) => Distribution::Other("a range-distributed table".into()),
        (other, _) => Distribution::Other(format!("a Citus table of kind {other:?}")),
    }))
}

/// The call that makes `new` (just created like `old`, still empty) held as `old` is: hash-
/// distributed on the same column and colocated with `old`, so it gets the same shard count
/// and placement, or a reference table.
///
/// # Errors
/// A kind of Citus table a swap cannot recreate: the message says to replace in place.
pub(crate) fn recreate(
    distribution: &Distribution,
    old: &TableName,
    new: &TableName,
) -> Result<String, SinkError> {
    match distribution {
        Distribution::Distributed { column, .. } => Ok(DistributeAs::Hash {
            column: column.clone(),
            colocate_with: Some(qualified(old)),
            shard_count: None,
        }
        .statement(new)),
        Distribution::Reference => Ok(DistributeAs::Reference.statement(new)),
        Distribution::Other(kind) => Err(SinkError::Plan {
            table: old.to_string(),
            reason: format!(
                "it is {kind}, which a replace by swap cannot recreate; pass --replace-with delete \
                 (YAML: replace_with: delete) to replace its rows in place"
            ),
        }),
    }
}
