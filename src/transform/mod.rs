//! The transform stage: a module's SQL, run by DataFusion over the decoded source batches.
//!
//! Each source the SQL names becomes a DataFusion table under the exact name `use_source`
//! printed, so no SQL text is ever rewritten. A source the plan reads once is a
//! [`StreamingTable`]: its batches flow from the decoder through DataFusion's streaming
//! execution to the encoder, and only operators that must (a sort, an aggregate, the build
//! side of a join) hold rows. A source the plan reads more than once (a self-join, a CTE used
//! twice) cannot be streamed twice, so it is collected into memory first.
//!
//! Execution uses one partition: rows leave in the order they arrived (which merges rely on,
//! the last record of a key winning), and the fetch, decode and encode stages already keep the
//! other cores busy.
//!
//! The decoder builds its batches with the Arrow version DataFusion is built on, so they pass
//! to and from DataFusion as they are, buffers shared.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures_util::{Stream, StreamExt, TryStreamExt};

use crate::schema::{Column, PgType, TableSchema};

/// Batches of one source. A source that fails ends its stream with an error.
pub(crate) type BatchStream =
    Pin<Box<dyn Stream<Item = Result<RecordBatch, TransformError>> + Send>>;

/// Why a transform failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransformError {
    /// DataFusion refused or failed the SQL.
    #[error("{0}")]
    Sql(String),
    #[error(
        "output column {column:?} has type {data_type}, which apitap cannot write; cast it in the SQL (e.g. CAST({column} AS VARCHAR))"
    )]
    UnsupportedType { column: String, data_type: DataType },
    #[error("output column {column:?}: cannot convert {from} to the column's type {to}: {reason}")]
    Cast {
        column: String,
        from: DataType,
        to: PgType,
        reason: String,
    },
    /// A source stopped with an error; the pipeline reports the source's own error.
    #[error("source {0} failed")]
    Source(String),
}

fn sql_error(e: DataFusionError) -> TransformError {
    TransformError::Sql(e.strip_backtrace())
}

/// One module's SQL over its sources.
pub(crate) struct Transform {
    ctx: SessionContext,
}

impl Transform {
    pub(crate) fn new(batch_size: usize) -> Transform {
        let mut config = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(batch_size)
            .with_information_schema(false);
        // CURRENT_TIMESTAMP is a timestamptz in UTC, as in PostgreSQL, not a bare timestamp.
        config.options_mut().execution.time_zone = Some("UTC".into());
        Transform {
            ctx: SessionContext::new_with_config(config),
        }
    }

    /// Parses `sql` without planning it (no source schemas needed): the check `apitap check`
    /// can make before fetching anything.
    ///
    /// # Errors
    /// SQL that does not parse, or more than one statement.
    pub(crate) fn parse(&self, sql: &str) -> Result<(), TransformError> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        state
            .sql_to_statement(sql, &dialect)
            .map(|_| ())
            .map_err(sql_error)
    }

    /// How many times the plan of `sql` reads each of `sources` (name and schema).
    ///
    /// # Errors
    /// SQL that does not parse or plan against those sources.
    pub(crate) async fn scans(
        &self,
        sql: &str,
        sources: &[(String, SchemaRef)],
    ) -> Result<HashMap<String, usize>, TransformError> {
        for (name, schema) in sources {
            let empty = MemTable::try_new(schema.clone(), vec![vec![]]).map_err(sql_error)?;
            self.register(name, Arc::new(empty))?;
        }
        let plan = self
            .ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(sql_error)?;
        let mut scans = HashMap::new();
        // Subqueries count too: they are plans inside expressions, scanned on their own.
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                *scans
                    .entry(scan.table_name.table().to_string())
                    .or_insert(0) += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(sql_error)?;
        for (name, _) in sources {
            self.ctx
                .deregister_table(name.as_str())
                .map_err(sql_error)?;
        }
        Ok(scans)
    }

    fn register(
        &self,
        name: &str,
        table: Arc<dyn datafusion::catalog::TableProvider>,
    ) -> Result<(), TransformError> {
        // A bare reference keeps the name exactly as `use_source` quoted it.
        self.ctx
            .register_table(datafusion::common::TableReference::bare(name), table)
            .map_err(sql_error)?;
        Ok(())
    }

    /// Makes `batches` the table `name`, read once, as they arrive.
    ///
    /// # Errors
    /// A schema DataFusion cannot take.
    pub(crate) fn register_stream(
        &self,
        name: &str,
        schema: &SchemaRef,
        batches: BatchStream,
    ) -> Result<(), TransformError> {
        let partition = OnePass {
            name: name.to_string(),
            schema: schema.clone(),
            batches: Mutex::new(Some(batches)),
        };
        let table = StreamingTable::try_new(schema.clone(), vec![Arc::new(partition)])
            .map_err(sql_error)?;
        self.register(name, Arc::new(table))
    }

    /// Reads `batches` whole and makes them the table `name`, for plans that read it twice.
    ///
    /// # Errors
    /// The source's own failure, or a schema DataFusion cannot take.
    pub(crate) async fn register_collected(
        &self,
        name: &str,
        schema: &SchemaRef,
        mut batches: BatchStream,
    ) -> Result<(), TransformError> {
        let mut collected = Vec::new();
        while let Some(batch) = batches.next().await {
            collected.push(batch?);
        }
        let table = MemTable::try_new(schema.clone(), vec![collected]).map_err(sql_error)?;
        self.register(name, Arc::new(table))
    }

    /// Plans `sql` and starts it: the output schema, and the output batches as they come.
    ///
    /// # Errors
    /// SQL that does not plan.
    pub(crate) async fn execute(
        &self,
        sql: &str,
    ) -> Result<(SchemaRef, BatchStream), TransformError> {
        let frame = self.ctx.sql(sql).await.map_err(sql_error)?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let stream = frame.execute_stream().await.map_err(sql_error)?;
        let batches = stream.map(|batch| {
            batch.map_err(|e| match source_failure(&e) {
                Some(name) => TransformError::Source(name),
                None => sql_error(e),
            })
        });
        Ok((schema, Box::pin(batches)))
    }
}

/// The name of the source whose failure ended a stream, if that is what `error` is.
fn source_failure(error: &DataFusionError) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(DataFusionError::External(inner)) = e.downcast_ref::<DataFusionError>()
            && let Some(TransformError::Source(name)) = inner.downcast_ref::<TransformError>()
        {
            return Some(name.clone());
        }
        if let Some(TransformError::Source(name)) = e.downcast_ref::<TransformError>() {
            return Some(name.clone());
        }
        current = e.source();
    }
    None
}

/// A source's batches as a partition that can be executed once.
struct OnePass {
    name: String,
    schema: SchemaRef,
    batches: Mutex<Option<BatchStream>>,
}

impl std::fmt::Debug for OnePass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnePass({})", self.name)
    }
}

impl PartitionStream for OnePass {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.batches.lock().ok().and_then(|mut b| b.take());
        let schema = self.schema.clone();
        let stream: Pin<Box<dyn Stream<Item = _> + Send>> = match taken {
            Some(batches) => Box::pin(
                batches.map(|batch| batch.map_err(|e| DataFusionError::External(Box::new(e)))),
            ),
            None => {
                let error = DataFusionError::Internal(format!(
                    "source {} was read twice by one plan",
                    self.name
                ));
                Box::pin(futures_util::stream::once(async move { Err(error) }))
            }
        };
        Box::pin(RecordBatchStreamAdapter::new(schema, stream.into_stream()))
    }
}

/// The PostgreSQL type an output column of this Arrow type is written as, where apitap can.
///
/// A column passed through from a source keeps the type it was decoded as (json, numeric and
/// uuid share Arrow types with others), so its field's tag wins when the Arrow type matches.
pub(crate) fn pg_type_of(field: &Field) -> Option<PgType> {
    if let Some(tagged) = PgType::of_field(field)
        && tagged.arrow_type() == *field.data_type()
    {
        return Some(tagged);
    }
    Some(match field.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => PgType::Int2,
        DataType::Int32 | DataType::UInt16 => PgType::Int4,
        DataType::Int64 | DataType::UInt32 => PgType::Int8,
        DataType::UInt64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => PgType::Numeric,
        DataType::Float16 | DataType::Float32 => PgType::Float4,
        DataType::Float64 => PgType::Float8,
        DataType::Boolean => PgType::Bool,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => PgType::Text,
        DataType::Timestamp(_, Some(_)) => PgType::Timestamptz,
        DataType::Timestamp(_, None) => PgType::Timestamp,
        DataType::Date32 | DataType::Date64 => PgType::Date,
        DataType::Time32(_) | DataType::Time64(_) => PgType::Time,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => PgType::Bytea,
        _ => return None,
    })
}

/// The output's columns with their PostgreSQL types: the "fields" a load is planned from.
///
/// # Errors
/// A column whose type apitap cannot write, or two columns with one name.
pub(crate) fn output_fields(schema: &Schema) -> Result<TableSchema, TransformError> {
    let mut columns: Vec<Column> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let pg_type = pg_type_of(field).ok_or_else(|| TransformError::UnsupportedType {
            column: field.name().clone(),
            data_type: field.data_type().clone(),
        })?;
        if columns.iter().any(|c| c.name == *field.name()) {
            return Err(TransformError::Sql(format!(
                "the output has two columns named {:?}; give one an alias (AS other_name)",
                field.name()
            )));
        }
        columns.push(Column::new(field.name(), pg_type));
    }
    Ok(TableSchema { columns })
}

/// Lays an output batch out as `columns`: picked by name and converted to each column's
/// Arrow type. A column the output lacks is all NULL (the server enforces NOT NULL).
///
/// # Errors
/// A value that does not convert (text that is no number, a number too large).
pub(crate) fn conform(
    batch: &RecordBatch,
    columns: &[Column],
) -> Result<RecordBatch, TransformError> {
    let rows = batch.num_rows();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    let mut fields = Vec::with_capacity(columns.len());
    let cast_options = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    for column in columns {
        let target = column.pg_type.arrow_type();
        let array = match batch.schema().index_of(column.key()) {
            Err(_) => arrow_array::new_null_array(&target, rows),
            Ok(i) => {
                let array = batch.column(i);
                let cast_error = |reason: String| TransformError::Cast {
                    column: column.name.clone(),
                    from: array.data_type().clone(),
                    to: column.pg_type,
                    reason,
                };
                if array.data_type() == &target {
                    array.clone()
                } else if column.pg_type == PgType::Uuid {
                    uuid_array(array, cast_error)?
                } else {
                    arrow_cast::cast_with_options(array, &target, &cast_options)
                        .map_err(|e| cast_error(e.to_string()))?
                }
            }
        };
        fields.push(Field::new(&column.name, target, true));
        arrays.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)
        .map_err(|e| TransformError::Sql(e.to_string()))
}

/// Text UUIDs as the 16-byte values a uuid column is encoded from; `fail` words why a value
/// does not convert.
fn uuid_array(
    array: &ArrayRef,
    fail: impl Fn(String) -> TransformError,
) -> Result<ArrayRef, TransformError> {
    let text = arrow_cast::cast(array, &DataType::Utf8).map_err(|e| fail(e.to_string()))?;
    let text = text
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .ok_or_else(|| fail("not text".into()))?;
    let mut builder = arrow_array::builder::FixedSizeBinaryBuilder::with_capacity(text.len(), 16);
    for value in text {
        match value {
            None => builder.append_null(),
            Some(v) => {
                let parsed = uuid::Uuid::parse_str(v).map_err(|e| fail(format!("{v:?}: {e}")))?;
                builder
                    .append_value(parsed.as_bytes())
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
    }
    Ok(Arc::new(builder.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use futures_util::stream;

    fn ids(values: Vec<i64>) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("Name", DataType::Utf8, true),
        ]));
        let names: Vec<String> = values.iter().map(|v| format!("n{v}")).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(values)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap();
        (schema, batch)
    }

    async fn collect(mut out: BatchStream) -> Vec<RecordBatch> {
        let mut batches = Vec::new();
        while let Some(b) = out.next().await {
            batches.push(b.unwrap());
        }
        batches
    }

    #[tokio::test]
    async fn streams_a_filter_and_counts_scans() {
        let (schema, batch) = ids(vec![1, 7, 3, 9]);
        let t = Transform::new(1024);
        let sql = r#"SELECT id * 2 AS twice, "Name" FROM "src" WHERE id > 2"#;
        let scans = t
            .scans(sql, &[("src".into(), schema.clone())])
            .await
            .unwrap();
        assert_eq!(scans.get("src"), Some(&1));
        t.register_stream("src", &schema, Box::pin(stream::iter([Ok(batch)])))
            .unwrap();
        let (out_schema, out) = t.execute(sql).await.unwrap();
        let fields = output_fields(&out_schema).unwrap();
        assert_eq!(
            fields.columns,
            vec![
                Column::new("twice", PgType::Int8),
                Column::new("Name", PgType::Text),
            ]
        );
        let batches = collect(out).await;
        let twice: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(twice, vec![14, 6, 18]);
    }

    #[test]
    fn syntax_errors_are_caught_before_any_source_is_read() {
        let t = Transform::new(1024);
        assert!(t.parse(r#"SELECT a, "B" FROM "src" WHERE a > 1"#).is_ok());
        let err = t
            .parse("SELECT a FROM src WHER a > 1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Expected: end of statement, found: a at Line: 1, Column: 24"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_self_join_reads_its_source_twice() {
        let (schema, _) = ids(vec![]);
        let t = Transform::new(1024);
        let sql = r#"SELECT a.id FROM "src" a JOIN "src" b ON a.id = b.id"#;
        let scans = t.scans(sql, &[("src".into(), schema)]).await.unwrap();
        assert_eq!(scans.get("src"), Some(&2));
    }

    #[test]
    fn conform_casts_by_name_and_names_the_bad_value() {
        let (_, batch) = ids(vec![5]);
        let columns = vec![
            Column::new("Name", PgType::Text),
            Column::new("id", PgType::Int4),
            Column::new("absent", PgType::Bool),
        ];
        let out = conform(&batch, &columns).unwrap();
        assert_eq!(out.num_columns(), 3);
        assert_eq!(out.column(1).data_type(), &DataType::Int32);
        assert_eq!(out.column(2).null_count(), 1);
        let err = conform(&batch, &[Column::new("Name", PgType::Int4)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "output column \"Name\": cannot convert Utf8 to the column's type integer: "
            ),
            "{err}"
        );
    }
}
