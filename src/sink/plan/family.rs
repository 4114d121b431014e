//! `--nested tables`: the plans of a family of tables — the root table and one child table
//! per array — and how each child row names its parent.
//!
//! A child row carries its parent's identity: for a child of the root, the root's key
//! columns as `_parent_<key>` (or, with no key, the id generated for each record,
//! `_parent__apitap_id`); for a deeper one, its parent's link columns and the parent's
//! `_idx` as `_parent_idx` (the grandparent's becoming `_parent2_idx`, and so on). With its
//! own `_idx`, the element's position, they are the child table's primary key.

use std::sync::Arc;

use super::LoadPlan;
use crate::decode::family::{ChildSpec, FamilySpec, Fill, GeneratedId, RowIds};
use crate::decode::infer::family::ChildShape;
use crate::schema::{Column, PgType, TableName, TableSchema, column_name};
use crate::sink::SinkError;

/// The column of a child table that holds the element's position in its array.
pub(crate) const IDX: &str = "_idx";
/// The root column holding the id generated for each record when no key identifies it.
pub(crate) const GENERATED_ID: &str = "_apitap_id";
/// The column of a merge's staged rows that holds their record's number: of the records of
/// one key, only the last one's child rows are applied.
pub(crate) const RECORD: &str = "apitap_record";

/// The child tables of a load (the root's plan is the load's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FamilyPlan {
    /// Parents before children, as [`FamilySpec::children`].
    pub children: Vec<LoadPlan>,
    /// What the decoder fills each table with.
    pub spec: Arc<FamilySpec>,
}

/// A table's identity: the columns that name one of its rows, with their types.
pub(crate) type Identity = Vec<(String, PgType)>;

/// The table of the child `child` of the root table `root`: `<root>__<path>`, in the
/// root's schema, its name shortened as a column's would be past 63 bytes.
pub(crate) fn child_table(root: &TableName, child: &ChildShape) -> Result<TableName, SinkError> {
    let name = format!("{}__{}", root.table, child.name);
    let table = column_name(&name).map_err(|e| SinkError::Plan {
        table: root.to_string(),
        reason: e.to_string(),
    })?;
    Ok(TableName {
        schema: root.schema.clone(),
        table: table.into_owned(),
    })
}

/// The columns by which a child row names its parent row, whose table has `parent`
/// identity; `root`: the parent is the root table.
pub(crate) fn links(parent: &Identity, root: bool) -> Identity {
    parent
        .iter()
        .map(|(name, pg_type)| {
            let link = if root {
                format!("_parent_{name}")
            } else if name == IDX {
                "_parent_idx".to_string()
            } else if let Some(level) = ancestor_level(name) {
                format!("_parent{}_idx", level + 1)
            } else {
                // The root's key, the same at every depth.
                name.clone()
            };
            (link, *pg_type)
        })
        .collect()
}

/// How many levels up the ancestor whose position `name` holds is: 1 for `_parent_idx`,
/// N for `_parentN_idx`.
fn ancestor_level(name: &str) -> Option<u32> {
    let middle = name.strip_prefix("_parent")?.strip_suffix("_idx")?;
    match middle {
        "" => Some(1),
        digits => digits.parse().ok(),
    }
}

/// The fields of child table `child`: its links, `_idx`, then its elements' columns.
/// A field of the elements named like a link column is refused: the row could not hold
/// both.
pub(crate) fn child_fields(
    table: &TableName,
    child: &ChildShape,
    links: &Identity,
) -> Result<TableSchema, SinkError> {
    let mut columns: Vec<Column> = links
        .iter()
        .map(|(name, pg_type)| Column::new(name.clone(), *pg_type))
        .collect();
    columns.push(Column::new(IDX, PgType::Int4));
    for column in &child.columns.columns {
        if columns.iter().any(|c| c.name == column.name) {
            return Err(SinkError::Plan {
                table: table.to_string(),
                reason: format!(
                    "the elements of {} have a field {:?}, which is the name of a column apitap links child rows by; \
                     load with --nested flatten to keep the array whole as jsonb",
                    child.path.join("."),
                    column.field_path()
                ),
            });
        }
        columns.push(column.clone());
    }
    Ok(TableSchema { columns })
}

/// A child table's identity once planned: its links, then `_idx`.
pub(crate) fn child_identity(links: &Identity) -> Identity {
    let mut identity = links.clone();
    identity.push((IDX.to_string(), PgType::Int4));
    identity
}

/// How the decoder fills child `shape`'s table as `plan` loads it: each column a link (by
/// its place in `links`), `_idx`, or a field of the elements.
pub(crate) fn child_spec(
    shape: &ChildShape,
    label: String,
    plan: &LoadPlan,
    links: &Identity,
) -> ChildSpec {
    let fills = plan
        .decode
        .columns
        .iter()
        .map(
            |c| match links.iter().position(|(name, _)| *name == c.name) {
                Some(i) => Fill::Link(i),
                None if c.name == IDX => Fill::Index,
                None => Fill::Element,
            },
        )
        .collect();
    ChildSpec {
        label,
        parent: shape.parent,
        path: shape.path.clone(),
        columns: plan.decode.clone(),
        fills,
        scalar: shape.scalar,
    }
}

/// The root's identity as the decoder finds it: the indices of `identity`'s columns among
/// the root plan's decoded columns, and the generated id's column, if that is the identity.
pub(crate) fn root_identity(
    root: &LoadPlan,
    identity: &Identity,
) -> Result<(Vec<usize>, Option<GeneratedId>), SinkError> {
    let mut indices = Vec::new();
    for (name, _) in identity {
        let index = root.decode.columns[..root.copy_columns]
            .iter()
            .position(|c| c.name == *name)
            .ok_or_else(|| SinkError::Plan {
                table: root.table.to_string(),
                reason: format!(
                    "child rows link to the key column {name:?}, which the records do not fill"
                ),
            })?;
        indices.push(index);
    }
    let generated = match identity.as_slice() {
        [(name, _)] if name == GENERATED_ID => Some((indices[0], RowIds::new())),
        _ => None,
    };
    Ok((indices, generated))
}

/// The label of an array in messages: its path through the arrays it lies in, each
/// marked `[]` (`entities.urls[].indices[]`).
pub(crate) fn label(parent: Option<&str>, path: &[String]) -> String {
    match parent {
        None => format!("{}[]", path.join(".")),
        Some(parent) => format!("{parent}.{}[]", path.join(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_the_parent_and_every_ancestor_position() {
        let root: Identity = vec![("id".into(), PgType::Int8)];
        let child = links(&root, true);
        assert_eq!(child, vec![("_parent_id".to_string(), PgType::Int8)]);
        let grandchild = links(&child_identity(&child), false);
        let names: Vec<&str> = grandchild.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["_parent_id", "_parent_idx"]);
        let deeper = links(&child_identity(&grandchild), false);
        let names: Vec<&str> = deeper.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["_parent_id", "_parent2_idx", "_parent_idx"]);
        let generated = links(&vec![(GENERATED_ID.into(), PgType::Uuid)], true);
        assert_eq!(generated[0].0, "_parent__apitap_id");
    }
}
