//! What a load would do, without doing it: `apitap load --preview` and `apitap check
//! --preview`.
//!
//! A preview runs the load's own code as far as the first write and stops there: it
//! connects read-only, reads the stored state (without waiting for a running load's lock),
//! samples the source, plans the table against the catalog, and decodes the first rows with
//! the decoders a load would use. So what it shows is what a load would do — the table,
//! the DDL (Citus calls included), each column's type and the rule that chose it, the merge
//! keys, the rows as they would land and the records that would be set aside — and nothing
//! is created, locked or written, in the database or on disk.

use super::*;
use crate::schema::{TableSchema, quote_ident};

/// The plan of a load, and its first rows.
#[derive(Debug)]
pub(crate) struct Preview {
    /// A module's sources, each with the columns it is decoded into (empty for `load`).
    pub sources: Vec<(String, TableSchema)>,
    /// The columns the rows have before they meet the table: a module's SQL output.
    pub output: Option<TableSchema>,
    pub table: TableName,
    /// Whether the table exists now.
    pub exists: bool,
    /// How the rows go in: `append`, `replace by swap`, `merge on (id)` …
    pub mode: String,
    /// The loaded columns, their types and why each has its type.
    pub columns: Vec<PlannedColumn>,
    /// The statements a load would start with (CREATE TABLE, Citus calls, ALTER TABLE …).
    pub ddl: Vec<String>,
    /// Fields loaded into a column of another name, as (field, column).
    pub renamed: Vec<(String, String)>,
    /// The first rows as they would land, as JSON lines.
    pub rows: Vec<String>,
    /// The first records the load would set aside (`--on-error reject`), as the reject file
    /// would hold them.
    pub set_aside: Vec<String>,
    /// `--nested tables`: each child table, and its rows of the records shown.
    pub children: Vec<ChildPreview>,
}

/// A child table a load writes (`--nested tables`).
#[derive(Debug)]
pub(crate) struct ChildPreview {
    pub table: TableName,
    pub exists: bool,
    pub columns: Vec<PlannedColumn>,
    pub rows: Vec<String>,
}

/// One column a load writes.
#[derive(Debug)]
pub(crate) struct PlannedColumn {
    pub name: String,
    pub pg_type: String,
    /// Why it has this type: the sample's inference rule, the table's catalog, the SQL.
    pub rule: String,
}

impl std::fmt::Display for Preview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let columns = |schema: &TableSchema| {
            schema
                .columns
                .iter()
                .map(|c| format!("{} {}", quote_ident(&c.name), c.pg_type))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (name, schema) in &self.sources {
            writeln!(f, "  source {name}: {}", columns(schema))?;
        }
        if let Some(output) = &self.output {
            writeln!(f, "  output: {}", columns(output))?;
        }
        let state = if self.exists { "exists" } else { "created" };
        writeln!(f, "  into {} ({state}), {}", self.table, self.mode)?;
        for c in &self.columns {
            writeln!(f, "  {c}")?;
        }
        if self.ddl.is_empty() {
            writeln!(f, "  DDL: none, the table fits")?;
        }
        for statement in &self.ddl {
            writeln!(f, "  DDL: {statement}")?;
        }
        for (field, column) in &self.renamed {
            writeln!(f, "  field {field:?} loads into column {column:?}")?;
        }
        for row in &self.rows {
            writeln!(f, "  row: {row}")?;
        }
        for entry in &self.set_aside {
            writeln!(f, "  set aside: {entry}")?;
        }
        for child in &self.children {
            let state = if child.exists { "exists" } else { "created" };
            writeln!(f, "  child table {} ({state})", child.table)?;
            for c in &child.columns {
                writeln!(f, "    {c}")?;
            }
            for row in &child.rows {
                writeln!(f, "    row: {row}")?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for PlannedColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = quote_ident(&self.name);
        write!(f, "column {name} {}: {}", self.pg_type, self.rule)
    }
}

impl Preview {
    /// The parts every preview shows the same way, from the load's `plan`. `rule` says why a
    /// column the plan creates or adds has its type.
    pub(crate) fn of_plan(
        plan: &LoadPlan,
        write: &WriteSettings,
        rule: &dyn Fn(&crate::schema::Column) -> String,
    ) -> Preview {
        let new_table = plan.create_table.is_some();
        let columns = plan.decode.columns[..plan.copy_columns]
            .iter()
            .map(|c| {
                let widened = plan.widenings().iter().find(|w| w.column == c.name);
                let rule = match widened {
                    Some(w) => format!("widened for sampled values ({w})"),
                    None if new_table || plan.added_columns().contains(&c.name) => rule(c),
                    None => "the table's column".to_string(),
                };
                PlannedColumn {
                    name: c.name.clone(),
                    pg_type: c.pg_type.to_string(),
                    rule,
                }
            })
            .collect();
        let mode = match (write.mode, write.replace_with) {
            (Mode::Append, _) => "append".to_string(),
            (Mode::Replace, ReplaceWith::Swap) => "replace by swap".to_string(),
            (Mode::Replace, ReplaceWith::Delete) => "replace by delete".to_string(),
            (Mode::Merge, _) => format!("merge on ({})", plan.merge_keys.join(", ")),
        };
        Preview {
            sources: Vec::new(),
            output: None,
            table: plan.table.clone(),
            exists: !new_table,
            mode,
            columns,
            ddl: plan.ddl(),
            renamed: plan.renamed_fields(),
            rows: Vec::new(),
            set_aside: Vec::new(),
            children: plan
                .family
                .iter()
                .flat_map(|family| &family.children)
                .map(ChildPreview::of_plan)
                .collect(),
        }
    }
}

impl ChildPreview {
    fn of_plan(plan: &LoadPlan) -> ChildPreview {
        let columns = plan.decode.columns[..plan.copy_columns]
            .iter()
            .map(|c| PlannedColumn {
                name: c.name.clone(),
                pg_type: c.pg_type.to_string(),
                rule: if c.name == crate::sink::plan::family::IDX {
                    "the element's position in its array, from 0".to_string()
                } else if c.name.starts_with("_parent") {
                    "names the parent row".to_string()
                } else if plan.create_table.is_some() || plan.added_columns().contains(&c.name) {
                    "inferred from the sampled elements".to_string()
                } else {
                    "the table's column".to_string()
                },
            })
            .collect();
        ChildPreview {
            table: plan.table.clone(),
            exists: plan.create_table.is_none(),
            columns,
            rows: Vec::new(),
        }
    }
}

/// The first `limit` rows of `batch` as JSON lines, after `shown` lines already.
pub(crate) fn json_lines(
    batch: &arrow_array::RecordBatch,
    shown: &mut Vec<String>,
    limit: usize,
) -> Result<(), LoadError> {
    let batch = batch.slice(0, batch.num_rows().min(limit.saturating_sub(shown.len())));
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    writer
        .write(&batch)
        .and_then(|()| writer.finish())
        .map_err(|e| LoadError::Internal(e.to_string()))?;
    let text = String::from_utf8_lossy(&writer.into_inner()).into_owned();
    shown.extend(text.lines().map(str::to_string));
    Ok(())
}

/// `apitap load --preview`: what [`load`] would do, showing `rows` rows.
///
/// # Errors
/// As [`load`], for the part it does: a source that cannot be read, a plan the table
/// refuses, a record that fails in the rows shown (unless it would be set aside).
pub(crate) async fn preview_load(
    load: &Load,
    connect: &ConnectOptions,
    rows: usize,
) -> Result<Preview, LoadError> {
    let client = connect.connect_read_only().await?;
    let mut load = load.clone();
    read_state(&client, &mut load).await?;
    let progress = Progress::start(crate::base::options::ProgressMode::Never, "preview", None);
    let source_name = load.source_name();
    let rejects = load
        .rejects
        .as_ref()
        .map(|options| RejectFile::preview(options, source_name.clone(), progress.clone()));
    let source = open_source(&load.source, &load.decode, progress, rejects.clone()).await?;
    let plan = plan_sampled(&client, &load, &source).await?;
    let sample = &source.sample;
    let mut preview = Preview::of_plan(&plan, &load.write, &|column| {
        sample
            .rule(&column.field_name())
            .unwrap_or("not in the sample")
            .to_string()
    });
    let (mut batches, stages) = source.start(plan).await?;
    let mut ended = false;
    while preview.rows.len() < rows {
        match batches.recv().await {
            Some(Flow::Rows(decoded)) => {
                json_lines(&decoded.batch, &mut preview.rows, rows)?;
                for (child, batch) in preview.children.iter_mut().zip(&decoded.children) {
                    json_lines(&batch.batch, &mut child.rows, rows)?;
                }
            }
            Some(Flow::Checkpoint(_)) => {}
            None => {
                ended = true;
                break;
            }
        }
    }
    if ended {
        // The source ended within the rows shown: its stages' end says whether it was clean.
        stages.join().await?;
    } else {
        drop(batches);
        stages.stop();
    }
    if let Some(rejects) = rejects {
        preview.set_aside = rejects.previewed();
    }
    Ok(preview)
}
