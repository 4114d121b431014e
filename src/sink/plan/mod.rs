//! The load plan: how records map onto the target table, decided once from the catalog and
//! the sample before the first record is decoded, and the SQL text of the statements around
//! the rows (DDL, COPY, DELETE). The merge's and the INSERT fallback's statements are built
//! next to the code that runs them (`merge.rs`, `insert.rs`).

pub(crate) mod catalog;
pub(crate) mod citus;
pub(crate) mod ddl;
pub(crate) mod family;
mod fields;

use super::{SinkError, qualified};
use crate::base::options::SchemaPolicy;
use crate::schema::{Column, PgType, TableName, TableSchema, quote_ident};
use crate::sink::write::swap;
use catalog::{CatalogColumn, SessionDates, TargetInfo};
use citus::{DistributeAs, Distribution};
pub(crate) use ddl::{AlterTable, CreateSchema, CreateTable, Widening};
pub(crate) use fields::FieldsKnown;
use fields::map_fields;

/// What the planner needs besides the catalog and the sample.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlanOptions {
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
pub(crate) struct LoadPlan {
    pub table: TableName,
    /// The schema to create with a new table.
    pub create_schema: Option<CreateSchema>,
    /// The table to create, when it is new.
    pub create_table: Option<CreateTable>,
    /// Columns widened and added for the sample, under `--schema evolve`.
    pub alter_table: Option<AlterTable>,
    /// Sampled fields dropped under `--schema discard`.
    pub discarded_fields: Vec<String>,
    /// How the session reads dates and times: timestamps without an offset into timestamptz
    /// columns, `+infinity`.
    pub dates: SessionDates,
    /// Columns records are decoded into. The first `copy_columns` of them are loaded; the
    /// rest must stay NULL in every record (they were left out so their defaults apply).
    pub decode: TableSchema,
    pub copy_columns: usize,
    /// Why a field has no column, for the decoder's error.
    pub fields_known: FieldsKnown,
    /// Merge on these key columns instead of appending: COPY into a staging table, then
    /// upsert from it.
    pub merge_keys: Vec<String>,
    /// The OID of the existing table a replace swaps a new one in for; the rows (and every
    /// statement of the plan) go into the new table, [`swap::building_name`].
    pub swap_of: Option<u32>,
    /// Make the new table a Citus distributed or reference table, right after creating it
    /// (`--distribute-by`, `--reference-table`).
    pub distribute: Option<DistributeAs>,
    /// How Citus holds the existing target (a swap recreates it so).
    pub citus: Option<Distribution>,
    /// `--nested tables`: the child tables the records' arrays fill.
    pub family: Option<std::sync::Arc<family::FamilyPlan>>,
}

/// The most columns a PostgreSQL table has (MaxHeapAttributeNumber).
const MAX_COLUMNS: usize = 1600;

/// The temporary table a merge is staged in; it lives for the load's transaction only.
pub(super) const STAGING: &str = "apitap_staging";
/// The INSERT fallback's row number within a batch, so the last of repeated keys wins.
pub(super) const STAGING_SEQ: &str = "apitap_seq";
/// The staged rows' number, added only when a refused merge goes range by range.
pub(super) const STAGING_ROW: &str = "apitap_row";

/// Which staged rows a merge applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StagedRows {
    All,
    LastOfEachKey,
    /// Those numbered `$1` to `$2`, keeping the last record of each key.
    Numbered,
}

/// An existing table's columns as a load fills them: those it loads (a field names them,
/// or they have no default) and those left to their default, in the table's order, and the
/// columns to widen (`--schema evolve`).
struct Fitted {
    loaded: Vec<Column>,
    defaulted: Vec<Column>,
    widen: Vec<Widening>,
}

fn fit_columns(
    table: &TableName,
    columns: &[CatalogColumn],
    fields: &TableSchema,
    options: &PlanOptions,
) -> Result<Fitted, SinkError> {
    let refuse = |reason: String| SinkError::Plan {
        table: table.to_string(),
        reason,
    };
    let mut fitted = Fitted {
        loaded: Vec::new(),
        defaulted: Vec::new(),
        widen: Vec::new(),
    };
    for c in columns {
        let field = fields.columns.iter().find(|f| f.name == c.name);
        let in_sample = field.is_some();
        if c.generated {
            if in_sample {
                let reason = format!("column {:?} is generated and cannot be loaded", c.name);
                return Err(refuse(reason));
            }
            continue;
        }
        let Some(pg_type) = c.pg_type else {
            if in_sample || !c.has_default {
                return Err(refuse(format!(
                    "column {:?} has type {}, which apitap cannot load yet",
                    c.name, c.type_name
                )));
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
            fitted.widen.push(Widening {
                column: c.name.clone(),
                from: pg_type,
                to,
            });
        }
        let column = Column {
            name: c.name.clone(),
            pg_type: widened.unwrap_or(pg_type),
            key: field.and_then(|f| f.key.clone()),
            parents: field.map(|f| f.parents.clone()).unwrap_or_default(),
        };
        if in_sample || !c.has_default {
            fitted.loaded.push(column);
        } else {
            fitted.defaulted.push(column);
        }
    }
    Ok(fitted)
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
    pub(crate) fn new(
        target: &TargetInfo,
        fields: &TableSchema,
        options: &PlanOptions,
    ) -> Result<LoadPlan, SinkError> {
        let table = target.name.clone();
        let fields = &map_fields(fields, &table)?;
        // Merge keys may be given as a field's name or its column's.
        let merge_keys: Vec<String> = options
            .merge_keys
            .iter()
            .map(|k| {
                fields
                    .columns
                    .iter()
                    .find(|f| f.field_name() == *k || f.field_path() == *k)
                    .map_or_else(|| k.clone(), |f| f.name.clone())
            })
            .collect();
        let plan = match &target.columns {
            None => LoadPlan::new_table(target, fields, merge_keys, options),
            Some(columns) => {
                LoadPlan::existing_table(target, columns, fields, merge_keys, options)?
            }
        };
        let columns = target.columns.as_ref().map_or(0, Vec::len) + plan.created_or_added();
        plan.check_width(columns)
            .and_then(LoadPlan::check_keys)
            .and_then(|plan| plan.check_distribution(options.distribute.as_ref()))
    }

    /// The plan of a table the load creates, with the fields as its columns.
    fn new_table(
        target: &TargetInfo,
        fields: &TableSchema,
        merge_keys: Vec<String>,
        options: &PlanOptions,
    ) -> LoadPlan {
        let table = target.name.clone();
        let create_table = (!fields.columns.is_empty()).then(|| CreateTable {
            table: table.clone(),
            columns: fields.columns.clone(),
            primary_key: merge_keys.clone(),
        });
        LoadPlan {
            dates: target.dates.clone(),
            create_schema: (!target.schema_exists && create_table.is_some()).then(|| {
                CreateSchema {
                    schema: table.schema.clone().unwrap_or_default(),
                }
            }),
            create_table,
            copy_columns: fields.columns.len(),
            decode: fields.clone(),
            fields_known: FieldsKnown::NewTable {
                sample: options.sample_limit,
                table: table.clone(),
            },
            merge_keys,
            alter_table: None,
            discarded_fields: Vec::new(),
            swap_of: None,
            distribute: options
                .distribute
                .clone()
                .filter(|_| !fields.columns.is_empty()),
            citus: None,
            family: None,
            table,
        }
    }

    /// The plan of a load into an existing table: every column with a field is loaded, as is
    /// every column without a default; new fields are added, refused or dropped as
    /// `options.schema` says.
    fn existing_table(
        target: &TargetInfo,
        columns: &[CatalogColumn],
        fields: &TableSchema,
        merge_keys: Vec<String>,
        options: &PlanOptions,
    ) -> Result<LoadPlan, SinkError> {
        let table = target.name.clone();
        let swap_of = target.oid.filter(|_| options.replace_by_swap);
        let Fitted {
            mut loaded,
            defaulted,
            widen,
        } = fit_columns(&table, columns, fields, options)?;
        // Fields the sample shows and the table lacks.
        let new_fields: Vec<Column> = fields
            .columns
            .iter()
            .filter(|f| !columns.iter().any(|c| c.name == f.name))
            .cloned()
            .collect();
        let (add, discarded_fields) = match options.schema {
            SchemaPolicy::Evolve => (new_fields, Vec::new()),
            SchemaPolicy::Discard => {
                let names = new_fields
                    .iter()
                    .map(|c| c.field_path().into_owned())
                    .collect();
                (Vec::new(), names)
            }
            SchemaPolicy::Freeze => (Vec::new(), Vec::new()),
        };
        loaded.extend(add.iter().cloned());
        let alter_table = (!widen.is_empty() || !add.is_empty()).then(|| AlterTable {
            table: match swap_of {
                Some(oid) => swap::building_name(&table, oid),
                None => table.clone(),
            },
            widen,
            add,
        });
        let copy_columns = loaded.len();
        loaded.extend(defaulted);
        Ok(LoadPlan {
            table: table.clone(),
            dates: target.dates.clone(),
            create_table: None,
            create_schema: None,
            alter_table,
            discarded_fields,
            decode: TableSchema { columns: loaded },
            copy_columns,
            fields_known: FieldsKnown::Existing {
                sample: options.sample_limit,
                table,
                frozen: options.schema == SchemaPolicy::Freeze,
            },
            merge_keys,
            swap_of,
            distribute: None,
            citus: target.distribution.clone(),
            family: None,
        })
    }

    /// This plan once another session created the table it would create, with this load's
    /// columns (see `sink::write::create`): the rows go into that table as into any, not
    /// frozen (it was not created in this transaction), and it is not distributed again.
    pub(crate) fn created_meanwhile(&self) -> LoadPlan {
        LoadPlan {
            create_schema: None,
            create_table: None,
            distribute: None,
            ..self.clone()
        }
    }

    /// Columns added for new fields.
    pub(crate) fn added_columns(&self) -> Vec<String> {
        let added = self.alter_table.iter().flat_map(|alter| &alter.add);
        added.map(|c| c.name.clone()).collect()
    }

    /// Columns widened for sampled values their types could not hold.
    pub(crate) fn widenings(&self) -> &[Widening] {
        self.alter_table.as_ref().map_or(&[], |alter| &alter.widen)
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

    #[cfg(feature = "sql")]
    /// The plan of a source read by a transform: its records decoded into the columns its
    /// sample showed (or the config typed); nothing is written from it directly.
    pub(crate) fn for_source(
        source: &str,
        fields: TableSchema,
        sample_limit: usize,
        dates: SessionDates,
    ) -> LoadPlan {
        LoadPlan {
            dates,
            table: TableName {
                schema: None,
                table: source.to_string(),
            },
            create_table: None,
            alter_table: None,
            discarded_fields: Vec::new(),
            create_schema: None,
            copy_columns: fields.columns.len(),
            decode: fields,
            fields_known: FieldsKnown::Source {
                sample: sample_limit,
                source: source.to_string(),
            },
            merge_keys: Vec::new(),
            swap_of: None,
            distribute: None,
            citus: None,
            family: None,
        }
    }

    /// Columns the plan creates the table with, or adds to it.
    fn created_or_added(&self) -> usize {
        let created = self.create_table.as_ref().map_or(0, |t| t.columns.len());
        created + self.added_columns().len()
    }

    /// A table holds at most 1,600 columns: a plan past that is refused before anything is
    /// created, saying what to do (flattened records reach it sooner than flat ones).
    fn check_width(self, columns: usize) -> Result<LoadPlan, SinkError> {
        if columns <= MAX_COLUMNS {
            return Ok(self);
        }
        Err(SinkError::Plan {
            table: self.table.to_string(),
            reason: format!(
                "the table would have {columns} columns, more than PostgreSQL's limit of {MAX_COLUMNS}; with \
                 --nested flatten, a lower --max-nesting keeps deeper objects whole (or --nested keep keeps them \
                 all); else create the table with the columns you need and load with --schema discard"
            ),
        })
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
    pub(crate) fn renamed_fields(&self) -> Vec<(String, String)> {
        self.decode.columns[..self.copy_columns]
            .iter()
            .filter(|c| c.name != c.field_name())
            .map(|c| (c.field_path().into_owned(), c.name.clone()))
            .collect()
    }

    /// Names of the loaded columns, in COPY order.
    pub(crate) fn copy_names(&self) -> Vec<String> {
        self.decode.columns[..self.copy_columns]
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    pub(crate) fn copy_types(&self) -> Vec<PgType> {
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
    pub(crate) fn written_table(&self) -> TableName {
        match self.swap_of {
            Some(oid) => swap::building_name(&self.table, oid),
            None => self.table.clone(),
        }
    }

    /// `COPY "s"."t" ("a", "b") FROM STDIN (FORMAT binary)`, into the staging table when
    /// merging. `freeze` writes the rows frozen, sparing VACUUM a pass over them; PostgreSQL
    /// allows it only into a table created in the same (sub)transaction.
    pub(crate) fn copy_statement(&self, freeze: bool) -> String {
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
    pub(crate) fn ddl(&self) -> Vec<String> {
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
            self.create_schema.as_ref().map(CreateSchema::sql),
            self.create_table.as_ref().map(CreateTable::sql),
            self.distribute.as_ref().map(|d| d.statement(&self.table)),
            swap,
            swap_citus,
            self.alter_table.as_ref().map(AlterTable::sql),
        ]
        .into_iter()
        .flatten()
        .chain(
            // `--nested tables`: the child tables' own.
            self.family
                .iter()
                .flat_map(|family| &family.children)
                .flat_map(LoadPlan::ddl),
        )
        .collect()
    }

    /// Whether the first COPY of the load may freeze its rows: the table is created in the
    /// load's transaction (a new table, or the one a replace swaps in). A merge COPYs into
    /// its temporary staging table instead.
    pub(crate) fn may_freeze(&self) -> bool {
        // Citus routes COPY to the shards, which were not created in this transaction.
        let citus = self.distribute.is_some() || self.citus.is_some();
        self.merge_keys.is_empty()
            && !citus
            && (self.create_table.is_some() || self.swap_of.is_some())
    }

    /// `--replace-with delete`: empties the table inside the load's transaction, so readers
    /// keep seeing the old rows until the new ones commit (TRUNCATE would block them for the
    /// whole load instead). A replace by swap has nothing to delete.
    pub(crate) fn delete_statement(&self) -> Option<String> {
        self.swap_of
            .is_none()
            .then(|| format!("DELETE FROM {}", qualified(&self.table)))
    }
}

#[cfg(test)]
mod tests;
