//! The statements a load runs before its rows, as the plan decides them: typed values that
//! say what changes, written as SQL only here, when they are run or shown.

use std::fmt;

use crate::schema::{Column, PgType, TableName, quote_ident};
use crate::sink::qualified;

/// `CREATE SCHEMA` of a table the load creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreateSchema {
    pub schema: String,
}

impl CreateSchema {
    /// `CREATE SCHEMA IF NOT EXISTS` alone races: two loads creating one schema at once both
    /// see it missing, and the second fails on the catalog's unique index. A
    /// transaction-scoped lock on the name makes the second wait for the first to commit,
    /// then find the schema there.
    pub(crate) fn sql(&self) -> String {
        format!(
            "SELECT pg_advisory_xact_lock(hashtext('apitap schema {}')); CREATE SCHEMA IF NOT EXISTS {}",
            self.schema.replace('\'', "''"),
            quote_ident(&self.schema)
        )
    }
}

/// `CREATE TABLE` of a table the load creates: the fields as columns, and the merge keys as
/// its primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreateTable {
    /// Where it is created: the target, or the new table of a replace by swap.
    pub table: TableName,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
}

impl CreateTable {
    pub(crate) fn sql(&self) -> String {
        let mut definitions = column_definitions(&self.columns);
        if !self.primary_key.is_empty() {
            let keys: Vec<String> = self.primary_key.iter().map(|k| quote_ident(k)).collect();
            definitions.push(format!("PRIMARY KEY ({})", keys.join(", ")));
        }
        format!(
            "CREATE TABLE {} ({})",
            qualified(&self.table),
            definitions.join(", ")
        )
    }
}

/// A column whose type the sampled values outgrew, and the type it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Widening {
    pub column: String,
    pub from: PgType,
    pub to: PgType,
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} → {}", self.column, self.from, self.to)
    }
}

/// `ALTER TABLE` of an existing table under `--schema evolve`: columns widened for values
/// their types cannot hold, then columns added for new fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlterTable {
    /// The target, or the new table of a replace by swap.
    pub table: TableName,
    pub widen: Vec<Widening>,
    pub add: Vec<Column>,
}

impl AlterTable {
    pub(crate) fn sql(&self) -> String {
        let widen = self.widen.iter().map(|w| {
            format!(
                "ALTER COLUMN {} TYPE {}",
                quote_ident(&w.column),
                w.to.sql_name()
            )
        });
        let add = self.add.iter().map(|c| {
            format!(
                "ADD COLUMN {} {}",
                quote_ident(&c.name),
                c.pg_type.sql_name()
            )
        });
        let changes: Vec<String> = widen.chain(add).collect();
        format!(
            "ALTER TABLE {} {}",
            qualified(&self.table),
            changes.join(", ")
        )
    }
}

/// `"name" type` for each column: the columns of a table a load creates.
pub(crate) fn column_definitions(columns: &[Column]) -> Vec<String> {
    columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.pg_type.sql_name()))
        .collect()
}
