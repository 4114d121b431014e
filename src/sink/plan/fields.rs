//! What the plan knows of the records' fields: the column each field goes to, and what a
//! field it did not know means when a record has one.

use super::SinkError;
use crate::schema::{Column, TableName, TableSchema, column_name};

/// Which fields the plan knew of, and so what a field it did not know means: the reason the
/// decoder gives for a record that has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldsKnown {
    /// A new table's columns were inferred from the first `sample` records.
    NewTable { sample: usize, table: TableName },
    /// An existing table's columns were fitted to the first `sample` records; `frozen`
    /// (`--schema freeze`) adds no column.
    Existing {
        sample: usize,
        table: TableName,
        frozen: bool,
    },
    /// The first `sample` records of a module's source, decoded for its SQL.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    Source { sample: usize, source: String },
}

impl FieldsKnown {
    /// Completes "field "x" …" for a field without a column: why, and what to do.
    pub(crate) fn unknown_field_hint(&self) -> String {
        match self {
            FieldsKnown::NewTable { sample, table } => format!(
                "first appears after the {sample} records the columns of the new table {table} were inferred from; \
                 re-run with a larger --sample, or pass --schema discard to drop such fields"
            ),
            FieldsKnown::Existing {
                table,
                frozen: true,
                ..
            } => format!(
                "is not a column of {table}, and --schema freeze adds none; add the column, \
                 or use --schema evolve (add it) or --schema discard (drop such fields)"
            ),
            FieldsKnown::Existing { sample, table, .. } => format!(
                "first appears after the {sample} sampled records, too late to add its column to {table}; \
                 re-run with a larger --sample, or pass --schema discard to drop such fields"
            ),
            FieldsKnown::Source { sample, source } => format!(
                "first appears after the {sample} records sampled from source {source:?}; \
                 raise the source's sample, give the field a type under its columns, or set schema_policy: discard"
            ),
        }
    }

    /// Completes "field "x" …" for a field whose column was left out of the COPY so that
    /// its default applies (only an existing table has such columns).
    pub(crate) fn late_field_hint(&self) -> String {
        match self {
            FieldsKnown::Existing { sample, table, .. } => format!(
                "first appears after the {sample} sampled records, so its column in {table} was left to its default; \
                 re-run with a larger --sample"
            ),
            FieldsKnown::NewTable { .. } | FieldsKnown::Source { .. } => String::new(),
        }
    }
}

/// `fields` with each field's column name ([`column_name`]), refusing names no column can
/// have and two fields that would land in one column.
pub(super) fn map_fields(
    fields: &TableSchema,
    table: &TableName,
) -> Result<TableSchema, SinkError> {
    let plan_error = |reason: String| SinkError::Plan {
        table: table.to_string(),
        reason,
    };
    let mut columns: Vec<Column> = Vec::with_capacity(fields.columns.len());
    for field in &fields.columns {
        let name = column_name(&field.field_name())
            .map_err(|e| plan_error(e.to_string()))?
            .into_owned();
        if let Some(other) = columns.iter().find(|c| c.name == name) {
            return Err(plan_error(format!(
                "fields {:?} and {:?} would both be column {name:?} (PostgreSQL cuts names at 63 bytes, \
                 apitap maps names it cannot take, and --nested flatten joins a path with __; see docs/types.md, \
                 Names); rename one in the source, or load them through a SQL module (apitap run) that renames it",
                other.field_path(),
                field.field_path(),
            )));
        }
        let key = field.key();
        columns.push(Column {
            key: (name != key).then(|| key.to_string()),
            name,
            pg_type: field.pg_type,
            parents: field.parents.clone(),
        });
    }
    Ok(TableSchema { columns })
}
