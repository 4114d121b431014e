//! `--nested tables`: plans the family of tables a load writes — the root table as any
//! load's, then one child table per array the sample showed — reading each table's catalog;
//! and encodes the child tables' rows for the spool the writer sends them from.

use std::sync::Arc;

use bytes::BytesMut;

use super::{LoadError, OpenedSource, Planned, plan_load};
use crate::decode::Decoded;
use crate::decode::family::FamilySpec;
use crate::encode::CopyEncoder;
use crate::load::Load;
use crate::schema::{Column, PgType};
use crate::sink::plan::family::{
    FamilyPlan, GENERATED_ID, Identity, child_fields, child_identity, child_spec, child_table,
    label, links, root_identity,
};
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
    if keys.is_empty() {
        fields.columns.push(Column::new(GENERATED_ID, PgType::Uuid));
    }
    let planned = Planned {
        fields: &fields,
        sample: Some(&source.sample),
        sample_limit: load.decode.sample,
        source_name: &load.source_name(),
    };
    let mut root = Arc::unwrap_or_clone(plan_load(client, write, planned).await?);
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
        let mut plan = LoadPlan::new(&target, &fields, &options)?;
        let identity = child_identity(&links);
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
/// their tables and spooled until the writer sends them ([`Spool`]).
pub(super) struct ChildEncoders {
    tables: Vec<ChildEncoder>,
    spool: Spool,
    buffer: BytesMut,
}

struct ChildEncoder {
    encoder: CopyEncoder,
    /// The loaded columns, when columns left to their defaults follow them.
    projection: Option<Vec<usize>>,
    table: String,
}

impl ChildEncoders {
    pub(super) fn new(family: &FamilyPlan) -> ChildEncoders {
        let tables = family
            .children
            .iter()
            .map(|plan| ChildEncoder {
                encoder: CopyEncoder::new(plan.copy_names(), plan.copy_types()),
                projection: (plan.copy_columns < plan.decode.columns.len())
                    .then(|| (0..plan.copy_columns).collect()),
                table: plan.table.to_string(),
            })
            .collect();
        ChildEncoders {
            tables,
            spool: Spool::new(family.children.len()),
            buffer: BytesMut::new(),
        }
    }

    /// Encodes and spools the child rows of one decoded batch.
    pub(super) fn add(&mut self, decoded: &Decoded, source_name: &str) -> Result<(), LoadError> {
        for (i, (child, batch)) in self.tables.iter_mut().zip(&decoded.children).enumerate() {
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = match &child.projection {
                Some(columns) => batch
                    .project(columns)
                    .map_err(|e| LoadError::Internal(e.to_string()))?,
                None => batch.clone(),
            };
            self.buffer.clear();
            child
                .encoder
                .encode(&batch, decoded.first_record, &mut self.buffer)
                .map_err(|error| LoadError::Encode {
                    source_name: format!("{source_name} ({})", child.table),
                    error,
                })?;
            self.spool
                .append(i, batch.num_rows() as u64, &self.buffer)
                .map_err(|error| {
                    LoadError::Sink(SinkError::Spool {
                        table: child.table.clone(),
                        error,
                    })
                })?;
        }
        Ok(())
    }

    /// The rows spooled since the last call.
    pub(super) fn take(&mut self) -> Spool {
        self.spool.take()
    }
}
