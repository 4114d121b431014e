//! `--nested tables`: plans the family of tables a load writes — the root table as any
//! load's, then one child table per array the sample showed — reading each table's catalog;
//! and encodes the child tables' rows for the spool the writer sends them from.

use std::sync::Arc;

use bytes::BytesMut;

use super::{LoadError, OpenedSource, Planned, plan_load};
use arrow_array::RecordBatch;

use crate::decode::Decoded;
use crate::decode::family::FamilySpec;
use crate::decode::infer::family::VALUE;
use crate::encode::CopyEncoder;
use crate::load::Load;
use crate::schema::{Column, PgType};
use crate::sink::plan::family::{
    FamilyPlan, GENERATED_ID, Identity, RECORD, child_fields, child_identity, child_spec,
    child_table, label, links, root_identity,
};
use crate::sink::write::Encoded;
use crate::sink::write::spool::Spool;
use crate::sink::{LoadPlan, PlanOptions, SinkError, describe_target, primary_key};

/// The plan of a `--nested tables` load: the root table's, holding the child tables'.
pub(super) async fn plan_family(
    client: &tokio_postgres::Client,
    load: &Load,
    source: &OpenedSource,
) -> Result<Arc<LoadPlan>, LoadError> {
    let shape = source.sample.family();
    let write = &load.write;
    let keys = match write.link_keys.is_empty() {
        false => write.link_keys.clone(),
        true => primary_key(client, &write.table).await?,
    };
    let mut fields = shape.root.clone();
    // No record: nothing to link, and nothing to load (as without --nested tables).
    let empty = source.sample.records() == 0;
    if keys.is_empty() && !empty {
        fields.columns.push(Column::new(GENERATED_ID, PgType::Uuid));
    }
    let planned = Planned {
        fields: &fields,
        sample: Some(&source.sample),
        sample_limit: load.decode.sample,
        source_name: &load.source_name(),
    };
    let planned = plan_load(client, write, planned).await?;
    if empty {
        return Ok(planned);
    }
    let mut root = Arc::unwrap_or_clone(planned);
    let identity = match keys.is_empty() {
        true => vec![(GENERATED_ID.to_string(), PgType::Uuid)],
        false => key_columns(&root, &keys)?,
    };
    if let Some(create) = &mut root.create_table {
        create.primary_key = identity.iter().map(|(name, _)| name.clone()).collect();
    }
    let (root_columns, generated_id) = root_identity(&root, &identity)?;
    let options = PlanOptions {
        sample_limit: load.decode.sample,
        schema: write.schema,
        ..PlanOptions::default()
    };
    let mut identities: Vec<Identity> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    let mut children = Vec::new();
    let mut specs = Vec::new();
    for child in &shape.children {
        let links = match child.parent {
            None => links(&identity, true),
            Some(parent) => links(&identities[parent], false),
        };
        let table = child_table(&write.table, child)?;
        let fields = child_fields(&table, child, &links)?;
        let target = describe_target(client, &table).await?;
        if let Some(i) = children
            .iter()
            .position(|c: &LoadPlan| c.table == target.name)
        {
            let paths = [&shape.children[i].path, &child.path].map(|p| p.join("."));
            return Err(LoadError::Sink(SinkError::Plan {
                table: write.table.to_string(),
                reason: format!(
                    "the arrays {:?} and {:?} would both be table {}; rename one field, or load with --nested flatten",
                    paths[0], paths[1], target.name
                ),
            }));
        }
        let mut plan = LoadPlan::new(&target, &fields, &options)?;
        let identity = child_identity(&links);
        let loaded = plan.copy_names();
        let value = (VALUE.to_string(), PgType::Jsonb);
        let needed = identity.iter().chain(child.scalar.then_some(&value));
        if let Some((missing, _)) = needed.into_iter().find(|(name, _)| !loaded.contains(name)) {
            return Err(LoadError::Sink(SinkError::Plan {
                table: plan.table.to_string(),
                reason: format!(
                    "it has no column {missing:?}, which its rows need (a link to their parent, or the element); add it, or load with --schema evolve"
                ),
            }));
        }
        if let Some(create) = &mut plan.create_table {
            create.primary_key = identity.iter().map(|(name, _)| name.clone()).collect();
        }
        let label = label(child.parent.map(|p| labels[p].as_str()), &child.path);
        specs.push(child_spec(child, label.clone(), &plan, &links));
        labels.push(label);
        identities.push(identity);
        children.push(plan);
    }
    root.family = Some(Arc::new(FamilyPlan {
        children,
        spec: Arc::new(FamilySpec {
            root_identity: root_columns,
            generated_id,
            children: specs,
        }),
    }));
    Ok(Arc::new(root))
}

/// The root's key columns `keys` (each a field's name or path, or a column's name) with
/// their types.
fn key_columns(root: &LoadPlan, keys: &[String]) -> Result<Identity, LoadError> {
    keys.iter()
        .map(|key| {
            root.decode.columns[..root.copy_columns]
                .iter()
                .find(|c| c.name == *key || c.field_name() == *key || c.field_path() == *key)
                .map(|c| (c.name.clone(), c.pg_type))
                .ok_or_else(|| {
                    LoadError::Sink(SinkError::Plan {
                        table: root.table.to_string(),
                        reason: format!(
                            "key {key:?}, which child rows link to, is not a field of the records (fields: {})",
                            root.copy_names().join(", ")
                        ),
                    })
                })
        })
        .collect()
}

/// The encode stage's part in a `--nested tables` load: each batch's child rows encoded for
/// their tables and spooled until the writer sends them ([`Spool`]). A merge also spools
/// the root rows' keys, and every row with its record's number (see
/// `crate::sink::write::family`), so the writer knows which record of a repeated key is the
/// last.
pub(super) struct ChildEncoders {
    tables: Vec<Spooler>,
    /// A merge's root keys, spooled after the child tables.
    parents: Option<Spooler>,
    /// Appending or replacing, the root's rows are spooled too, after the child tables',
    /// and the spool goes to the writer in parts ([`Encoded::Part`]), so that decoding goes
    /// on while the writer COPYs one table after another.
    spools_root: bool,
    root_table: String,
    spool: Spool,
    buffer: BytesMut,
}

/// The COPY data a part of the spool holds before it goes to the writer: the writer sends
/// a part's tables one after another while the next part is decoded, so a part is large
/// enough that its COPYs are few, and small enough to hold in memory (a part is in memory,
/// up to four wait in the channel to the writer).
const PART_BYTES: usize = 16 << 20;

/// Encodes some columns of batches (with their record numbers, in a merge) for one file of
/// the spool.
struct Spooler {
    encoder: CopyEncoder,
    columns: Vec<usize>,
    numbered: bool,
    table: String,
}

impl Spooler {
    fn new(plan: &LoadPlan, columns: Vec<usize>, numbered: bool) -> Spooler {
        let mut names: Vec<String> = columns
            .iter()
            .map(|&c| plan.decode.columns[c].name.clone())
            .collect();
        let mut types: Vec<PgType> = columns
            .iter()
            .map(|&c| plan.decode.columns[c].pg_type)
            .collect();
        if numbered {
            names.push(RECORD.to_string());
            types.push(PgType::Int8);
        }
        Spooler {
            encoder: CopyEncoder::new(names, types),
            columns,
            numbered,
            table: plan.table.to_string(),
        }
    }

    /// Encodes `batch`'s rows (`records`: their record numbers) into `out`.
    fn encode(
        &mut self,
        batch: &RecordBatch,
        records: &[u64],
        first_record: u64,
        out: &mut BytesMut,
    ) -> Result<(), LoadError> {
        let internal = |e: arrow_schema::ArrowError| LoadError::Internal(e.to_string());
        let mut batch = batch.project(&self.columns).map_err(internal)?;
        if self.numbered {
            let mut fields: Vec<arrow_schema::FieldRef> =
                batch.schema().fields().iter().cloned().collect();
            fields.push(Arc::new(arrow_schema::Field::new(
                RECORD,
                arrow_schema::DataType::Int64,
                false,
            )));
            let mut columns = batch.columns().to_vec();
            let numbers: Vec<i64> = records.iter().map(|&r| r as i64).collect();
            columns.push(Arc::new(arrow_array::Int64Array::from(numbers)));
            let schema = Arc::new(arrow_schema::Schema::new(fields));
            batch = RecordBatch::try_new(schema, columns).map_err(internal)?;
        }
        out.clear();
        self.encoder
            .encode(&batch, first_record, out)
            .map_err(|error| LoadError::Encode {
                source_name: self.table.clone(),
                error,
            })
    }
}

impl ChildEncoders {
    /// The encoders of `root`'s child tables; `merge`: numbered, with the root's keys;
    /// else the root's rows are spooled too.
    pub(super) fn new(root: &LoadPlan, family: &FamilyPlan, merge: bool) -> ChildEncoders {
        let tables = family
            .children
            .iter()
            .map(|plan| Spooler::new(plan, (0..plan.copy_columns).collect(), merge))
            .collect();
        let parents = merge.then(|| Spooler::new(root, family.spec.root_identity.clone(), true));
        ChildEncoders {
            tables,
            parents,
            spools_root: !merge,
            root_table: root.table.to_string(),
            // A merge's spool holds a whole segment; parts are held in memory.
            spool: match merge {
                true => Spool::new(family.children.len() + 1),
                false => Spool::in_memory(family.children.len() + 1),
            },
            buffer: BytesMut::new(),
        }
    }

    /// Encodes and spools the child rows of one decoded batch (and a merge's root keys).
    pub(super) fn add(&mut self, decoded: &Decoded, source_name: &str) -> Result<(), LoadError> {
        let named = |e: LoadError| match e {
            LoadError::Encode {
                source_name: table,
                error,
            } => LoadError::Encode {
                source_name: format!("{source_name} ({table})"),
                error,
            },
            other => other,
        };
        for (i, (spooler, child)) in self.tables.iter_mut().zip(&decoded.children).enumerate() {
            if child.batch.num_rows() == 0 {
                continue;
            }
            spooler
                .encode(
                    &child.batch,
                    &child.records,
                    decoded.first_record,
                    &mut self.buffer,
                )
                .map_err(named)?;
            append(
                &mut self.spool,
                i,
                child.batch.num_rows(),
                &self.buffer,
                &spooler.table,
            )?;
        }
        if let Some(parents) = &mut self.parents
            && decoded.batch.num_rows() > 0
        {
            let rows = decoded.batch.num_rows();
            let records: Vec<u64> = (0..rows).map(|row| decoded.record_of(row)).collect();
            parents
                .encode(
                    &decoded.batch,
                    &records,
                    decoded.first_record,
                    &mut self.buffer,
                )
                .map_err(named)?;
            append(
                &mut self.spool,
                self.tables.len(),
                rows,
                &self.buffer,
                &parents.table,
            )?;
        }
        Ok(())
    }

    /// Whether the root's COPY data goes to the spool ([`ChildEncoders::add_root`]).
    pub(super) fn spools_root(&self) -> bool {
        self.spools_root
    }

    /// Spools `rows` rows of the root table, as COPY data; returns a part for the writer
    /// once the spool holds enough.
    pub(super) fn add_root(
        &mut self,
        rows: u64,
        tuples: &[u8],
    ) -> Result<Option<Encoded>, LoadError> {
        let file = self.tables.len();
        self.spool.append(file, rows, tuples).map_err(|error| {
            LoadError::Sink(SinkError::Spool {
                table: self.root_table.clone(),
                error,
            })
        })?;
        Ok((self.spool.bytes() >= PART_BYTES).then(|| Encoded::Part(self.spool.take())))
    }

    /// The rows spooled since the last call.
    pub(super) fn take(&mut self) -> Spool {
        self.spool.take()
    }
}

fn append(
    spool: &mut Spool,
    file: usize,
    rows: usize,
    tuples: &[u8],
    table: &str,
) -> Result<(), LoadError> {
    spool.append(file, rows as u64, tuples).map_err(|error| {
        LoadError::Sink(SinkError::Spool {
            table: table.to_string(),
            error,
        })
    })
}
