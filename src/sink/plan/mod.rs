//! The load plan: how records map onto the target table, decided once from the catalog and
//! the sample before the first record is decoded, and the SQL text of the statements around
//! the rows (DDL, COPY, DELETE). The merge's and the INSERT fallback's statements are built
//! next to the code that runs them (`merge.rs`, `insert.rs`).

pub mod catalog;
pub mod citus;

use super::{SinkError, qualified};
use crate::base::options::SchemaPolicy;
use crate::schema::{Column, PgType, TableName, TableSchema, column_name, quote_ident};
use crate::sink::write::swap;
use catalog::TargetInfo;
use citus::{DistributeAs, Distribution};

/// What the planner needs besides the catalog and the sample.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// The `--sample` size, for messages.
    pub sample_limit: usize,
    pub merge_keys: Vec<String>,
    pub schema: SchemaPolicy,
    /// Existing columns to widen, and to what (`--schema evolve`): the sample holds values
    /// their type cannot.
    pub widen: Vec<(String, PgType)>,
    /// `--mode replace` of an existing table by swap: the rows go into a new table.
    pub replace_by_swap: bool,
    /// Make a table the load creates a Citus distributed or reference table.
    pub distribute: Option<DistributeAs>,
}

/// How records map onto the table, decided from the catalog and the sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    pub table: TableName,
    /// `CREATE TABLE` to run first, when the table is new.
    pub create_table: Option<String>,
    /// `ALTER TABLE … ADD COLUMN …, ALTER COLUMN … TYPE …` for new fields and values that
    /// outgrew their column, under `--schema evolve`.
    pub alter_table: Option<String>,
    pub added_columns: Vec<String>,
    /// Columns widened, as `name: old → new`.
    pub widened_columns: Vec<String>,
    /// Sampled fields dropped under `--schema discard`.
    pub discarded_fields: Vec<String>,
    pub create_schema: Option<String>,
    /// The session's `TimeZone`, for timestamps without an offset into timestamptz columns.
    pub time_zone: String,
    /// Columns records are decoded into. The first `copy_columns` of them are loaded; the
    /// rest must stay NULL in every record (they were left out so their defaults apply).
    pub decode: TableSchema,
    pub copy_columns: usize,
    /// Why a field has no column, for the decoder's error.
    pub unknown_field_hint: String,
    pub late_field_hint: String,
    /// Merge on these key columns instead of appending: COPY into a staging table, then
    /// upsert from it.
    pub merge_keys: Vec<String>,
    /// The OID of the existing table a replace swaps a new one in for; the rows (and every
    /// statement of the plan) go into the new table, [`swap::building_name`].
    pub swap_of: Option<u32>,
    /// `create_distributed_table(…)` or `create_reference_table(…)`, run right after
    /// `create_table` (`--distribute-by`, `--reference-table`).
    pub distribute: Option<String>,
    /// How Citus holds the existing target (a swap recreates it so).
    pub citus: Option<Distribution>,
}

/// `CREATE SCHEMA IF NOT EXISTS` alone races: two loads creating one schema at once both see
/// it missing, and the second fails on the catalog's unique index. A transaction-scoped lock
/// on the name makes the second wait for the first to commit, then find the schema there.
fn create_schema_statement(schema: &str) -> String {
    format!(
        "SELECT pg_advisory_xact_lock(hashtext('apitap schema {}')); CREATE SCHEMA IF NOT EXISTS {}",
        schema.replace('\'', "''"),
        quote_ident(schema)
    )
}

/// `fields` with each field's column name ([`column_name`]), refusing names no column can
/// have and two fields that would land in one column.
fn map_fields(fields: &TableSchema, table: &TableName) -> Result<TableSchema, SinkError> {
    let plan_error = |reason: String| SinkError::Plan {
        table: table.to_string(),
        reason,
    };
    let mut columns: Vec<Column> = Vec::with_capacity(fields.columns.len());
    for field in &fields.columns {
        let key = field.key();
        let name = column_name(key).map_err(|e| plan_error(e.to_string()))?;
        if let Some(other) = columns.iter().find(|c| c.name == *name) {
            return Err(plan_error(format!(
                "fields {:?} and {key:?} would both be column {name:?} (PostgreSQL cuts names at 63 bytes, and \
                 apitap maps names it cannot take; see README, Types); rename one in the source, or load them \
                 through a SQL module (apitap run) that renames it",
                other.key()
            )));
        }
        columns.push(Column {
            key: (name != key).then(|| key.to_string()),
            name: name.into_owned(),
            pg_type: field.pg_type,
        });
    }
    Ok(TableSchema { columns })
}

/// The temporary table a merge is staged in; it lives for the load's transaction only.
pub(super) const STAGING: &str = "apitap_staging";
/// The INSERT fallback's row number within a batch, so the last of repeated keys wins.
pub(super) const STAGING_SEQ: &str = "apitap_seq";
/// The staged rows' number, added only when a refused merge goes range by range.
pub(super) const STAGING_ROW: &str = "apitap_row";

/// Which staged rows a merge applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagedRows {
    All,
    LastOfEachKey,
    /// Those numbered `$1` to `$2`, keeping the last record of each key.
    Numbered,
}

impl LoadPlan {
    /// Plans the load of records with `fields` (inferred from a sample, or a transform's
    /// output) into `target`.
    ///
    /// A new table gets the fields as its columns. For an existing one, every column with a
    /// field is loaded, as is every column without a default (so a NOT NULL violation is the
    /// server's clear error, not a silent default); columns with a default that no field
    /// names are left to their default.
    ///
    /// Fields whose names PostgreSQL cannot take as they are load into the column
    /// [`column_name`] maps them to, here and in every run, so reruns find their columns.
    ///
    /// # Errors
    /// A sampled field whose column has a type apitap cannot write, or is generated; a field
    /// name no column can have; two fields that would land in one column.
    pub fn new(
        target: &TargetInfo,
        fields: &TableSchema,
        options: &PlanOptions,
    ) -> Result<LoadPlan, SinkError> {
        let sample_limit = options.sample_limit;
        let table = target.name.clone();
        let fields = &map_fields(fields, &table)?;
        // Merge keys may be given as a field's name or its column's.
        let merge_keys: &Vec<String> = &options
            .merge_keys
            .iter()
            .map(|k| {
                fields
                    .columns
                    .iter()
                    .find(|f| f.key() == k)
                    .map_or_else(|| k.clone(), |f| f.name.clone())
            })
            .collect();
        let swap_of = target.oid.filter(|_| options.replace_by_swap);
        let qualified = qualified(&match swap_of {
            Some(oid) => swap::building_name(&table, oid),
            None => table.clone(),
        });
        let schema_name = table.schema.clone().unwrap_or_default();
        let Some(columns) = &target.columns else {
            let decode = fields.clone();
            let create_table = (!decode.columns.is_empty()).then(|| {
                let mut cols = column_definitions(&decode);
                if !merge_keys.is_empty() {
                    let keys: Vec<String> = merge_keys.iter().map(|k| quote_ident(k)).collect();
                    cols.push(format!("PRIMARY KEY ({})", keys.join(", ")));
                }
                format!("CREATE TABLE {qualified} ({})", cols.join(", "))
            });
            return LoadPlan {
                time_zone: target.time_zone.clone(),
                create_schema: (!target.schema_exists && create_table.is_some())
                    .then(|| create_schema_statement(&schema_name)),
                create_table,
                copy_columns: decode.columns.len(),
                decode,
                unknown_field_hint: format!(
                    "first appears after the {sample_limit} records the columns of the new table {table} were inferred from; \
                     re-run with a larger --sample, or pass --schema discard to drop such fields"
                ),
                late_field_hint: String::new(),
                merge_keys: merge_keys.to_vec(),
                alter_table: None,
                added_columns: Vec::new(),
                widened_columns: Vec::new(),
                discarded_fields: Vec::new(),
                swap_of: None,
                distribute: options
                    .distribute
                    .as_ref()
                    .filter(|_| !fields.columns.is_empty())
                    .map(|d| d.statement(&table)),
                citus: None,
                table,
            }
            .check_keys()
            .and_then(|plan| plan.check_distribution(options.distribute.as_ref()));
        };
        let mut loaded = Vec::new();
        let mut defaulted = Vec::new();
        let mut alterations = Vec::new();
        let mut widened_columns = Vec::new();
        for c in columns {
            let field = fields.columns.iter().find(|f| f.name == c.name);
            let in_sample = field.is_some();
            if c.generated {
                if in_sample {
                    return Err(SinkError::Plan {
                        table: table.to_string(),
                        reason: format!("column {:?} is generated and cannot be loaded", c.name),
                    });
                }
                continue;
            }
            let Some(pg_type) = c.pg_type else {
                if in_sample || !c.has_default {
                    return Err(SinkError::Plan {
                        table: table.to_string(),
                        reason: format!(
                            "column {:?} has type {}, which apitap cannot load yet",
                            c.name, c.type_name
                        ),
                    });
                }
                continue;
            };
            let widened = options
                .widen
                .iter()
                .find(|(name, _)| *name == c.name)
                .map(|(_, to)| *to)
                .filter(|_| options.schema == SchemaPolicy::Evolve);
            if let Some(to) = widened {
                alterations.push(format!(
                    "ALTER COLUMN {} TYPE {}",
                    quote_ident(&c.name),
                    to.sql_name()
                ));
                widened_columns.push(format!("{}: {pg_type} → {to}", c.name));
            }
            let column = Column {
                name: c.name.clone(),
                pg_type: widened.unwrap_or(pg_type),
                key: field.and_then(|f| f.key.clone()),
            };
            if in_sample || !c.has_default {
                loaded.push(column);
            } else {
                defaulted.push(column);
            }
        }
        // Fields the sample shows and the table lacks.
        let new_fields: Vec<Column> = fields
            .columns
            .iter()
            .filter(|f| !columns.iter().any(|c| c.name == f.name))
            .cloned()
            .collect();
        let mut added_columns = Vec::new();
        let mut discarded_fields = Vec::new();
        match options.schema {
            SchemaPolicy::Evolve if !new_fields.is_empty() => {
                alterations.extend(new_fields.iter().map(|c| {
                    format!(
                        "ADD COLUMN {} {}",
                        quote_ident(&c.name),
                        c.pg_type.sql_name()
                    )
                }));
                added_columns = new_fields.iter().map(|c| c.name.clone()).collect();
                loaded.extend(new_fields);
            }
            SchemaPolicy::Discard => {
                discarded_fields = new_fields.iter().map(|c| c.key().to_string()).collect();
            }
            SchemaPolicy::Evolve | SchemaPolicy::Freeze => {}
        }
        let alter_table = (!alterations.is_empty())
            .then(|| format!("ALTER TABLE {qualified} {}", alterations.join(", ")));
        let unknown_field_hint = match options.schema {
            SchemaPolicy::Freeze => format!(
                "is not a column of {table}, and --schema freeze adds none; add the column, \
                 or use --schema evolve (add it) or --schema discard (drop such fields)"
            ),
            _ => format!(
                "first appears after the {sample_limit} sampled records, too late to add its column to {table}; \
                 re-run with a larger --sample, or pass --schema discard to drop such fields"
            ),
        };
        let copy_columns = loaded.len();
        loaded.extend(defaulted);
        LoadPlan {
            table: table.clone(),
            time_zone: target.time_zone.clone(),
            create_table: None,
            create_schema: None,
            alter_table,
            added_columns,
            widened_columns,
            discarded_fields,
            decode: TableSchema { columns: loaded },
            copy_columns,
            unknown_field_hint,
            late_field_hint: format!(
                "first appears after the {sample_limit} sampled records, so its column in {table} was left to its default; \
                 re-run with a larger --sample"
            ),
            merge_keys: merge_keys.to_vec(),
            swap_of,
            distribute: None,
            citus: target.distribution.clone(),
        }
        .check_keys()
        .and_then(|plan| plan.check_distribution(options.distribute.as_ref()))
    }

    /// A distributed table (or one `--distribute-by` makes) takes unique keys only with its
    /// distribution column, so a merge must key on it; and apitap distributes only the
    /// tables it creates. Both are checked before any data moves.
    fn check_distribution(self, asked: Option<&DistributeAs>) -> Result<LoadPlan, SinkError> {
        let refuse = |reason: String| SinkError::Plan {
            table: self.table.to_string(),
            reason,
        };
        if let Some(asked) = asked.filter(|_| self.create_table.is_none()) {
            if !asked.matches(self.citus.as_ref()) {
                return Err(refuse(format!(
                    "the table exists and is not {}; apitap distributes only tables it creates: \
                     distribute it yourself ({}), or leave out --distribute-by/--reference-table",
                    match asked {
                        DistributeAs::Hash { column, .. } => format!("distributed by {column}"),
                        DistributeAs::Reference => "a reference table".into(),
                    },
                    asked.statement(&self.table)
                )));
            }
        }
        let column = match (asked, &self.citus) {
            (Some(DistributeAs::Hash { column, .. }), _) => Some(column.as_str()),
            (_, Some(existing)) => existing.column(),
            _ => None,
        };
        if let Some(column) = column
            .filter(|c| !self.merge_keys.is_empty() && !self.merge_keys.iter().any(|k| k == c))
        {
            return Err(refuse(format!(
                "it is distributed by {column}, and Citus enforces a unique key only with the \
                 distribution column in it: merge on keys that include {column} (--key {column},{})",
                self.merge_keys.join(",")
            )));
        }
        Ok(self)
    }

    /// The plan of a source read by a transform: its records decoded into the columns its
    /// sample showed (or the config typed); nothing is written from it directly.
    pub fn for_source(
        source: &str,
        fields: TableSchema,
        sample_limit: usize,
        time_zone: String,
    ) -> LoadPlan {
        LoadPlan {
            time_zone,
            table: TableName {
                schema: None,
                table: source.to_string(),
            },
            create_table: None,
            alter_table: None,
            added_columns: Vec::new(),
            widened_columns: Vec::new(),
            discarded_fields: Vec::new(),
            create_schema: None,
            copy_columns: fields.columns.len(),
            decode: fields,
            unknown_field_hint: format!(
                "first appears after the {sample_limit} records sampled from source {source:?}; \
                 raise the source's sample, give the field a type under its columns, or set schema_policy: discard"
            ),
            late_field_hint: String::new(),
            merge_keys: Vec::new(),
            swap_of: None,
            distribute: None,
            citus: None,
        }
    }

    /// Merge keys must be loaded columns: a key left to its default cannot match anything.
    fn check_keys(self) -> Result<LoadPlan, SinkError> {
        let loaded = self.copy_names();
        if self.copy_columns > 0
            && let Some(missing) = self.merge_keys.iter().find(|k| !loaded.contains(k))
        {
            return Err(SinkError::Plan {
                table: self.table.to_string(),
                reason: format!(
                    "merge key {missing:?} is not a field of the records (fields: {})",
                    loaded.join(", ")
                ),
            });
        }
        Ok(self)
    }

    /// Fields loaded into a column of another name (a name PostgreSQL cannot take as it is),
    /// as (field, column).
    pub fn renamed_fields(&self) -> Vec<(String, String)> {
        self.decode.columns[..self.copy_columns]
            .iter()
            .filter_map(|c| c.key.clone().map(|key| (key, c.name.clone())))
            .collect()
    }

    /// Names of the loaded columns, in COPY order.
    pub fn copy_names(&self) -> Vec<String> {
        self.decode.columns[..self.copy_columns]
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    pub fn copy_types(&self) -> Vec<PgType> {
        self.decode.columns[..self.copy_columns]
            .iter()
            .map(|c| c.pg_type)
            .collect()
    }

    pub(super) fn quoted_copy_names(&self) -> Vec<String> {
        self.copy_names().iter().map(|n| quote_ident(n)).collect()
    }

    /// The table the plan's statements write to: the target, or the table a replace by
    /// swap builds.
    pub fn written_table(&self) -> TableName {
        match self.swap_of {
            Some(oid) => swap::building_name(&self.table, oid),
            None => self.table.clone(),
        }
    }

    /// `COPY "s"."t" ("a", "b") FROM STDIN (FORMAT binary)`, into the staging table when
    /// merging. `freeze` writes the rows frozen, sparing VACUUM a pass over them; PostgreSQL
    /// allows it only into a table created in the same (sub)transaction.
    pub fn copy_statement(&self, freeze: bool) -> String {
        let into = if self.merge_keys.is_empty() {
            qualified(&self.written_table())
        } else {
            quote_ident(STAGING)
        };
        format!(
            "COPY {into} ({}) FROM STDIN (FORMAT binary{})",
            self.quoted_copy_names().join(", "),
            if freeze { ", FREEZE" } else { "" }
        )
    }

    /// The DDL the load runs before its rows, as `check --preview` shows it.
    pub fn ddl(&self) -> Vec<String> {
        let swap = self.swap_of.map(|_| {
            format!(
                "CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES) -- replace by swap: \
                 indexes, keys, triggers and grants follow after the rows, then it takes the table's place",
                qualified(&self.written_table()),
                qualified(&self.table)
            )
        });
        let swap_citus = self
            .swap_of
            .and(self.citus.as_ref())
            .and_then(|d| citus::recreate(d, &self.table, &self.written_table()).ok());
        [
            &self.create_schema,
            &self.create_table,
            &self.distribute,
            &swap,
            &swap_citus,
            &self.alter_table,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// Whether the first COPY of the load may freeze its rows: the table is created in the
    /// load's transaction (a new table, or the one a replace swaps in). A merge COPYs into
    /// its temporary staging table instead.
    pub fn may_freeze(&self) -> bool {
        // Citus routes COPY to the shards, which were not created in this transaction.
        let citus = self.distribute.is_some() || self.citus.is_some();
        self.merge_keys.is_empty()
            && !citus
            && (self.create_table.is_some() || self.swap_of.is_some())
    }

    /// `--replace-with delete`: empties the table inside the load's transaction, so readers
    /// keep seeing the old rows until the new ones commit (TRUNCATE would block them for the
    /// whole load instead). A replace by swap has nothing to delete.
    pub fn delete_statement(&self) -> Option<String> {
        self.swap_of
            .is_none()
            .then(|| format!("DELETE FROM {}", qualified(&self.table)))
    }
}

#[cfg(test)]
mod tests;

/// `"name" type` for each column: the columns of a table a load creates.
pub(super) fn column_definitions(table: &TableSchema) -> Vec<String> {
    table
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.pg_type.sql_name()))
        .collect()
}
