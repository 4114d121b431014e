//! `--nested tables`: the tables a sample's records become. The record's fields are the
//! root table's columns, flattened as `--nested flatten` flattens them, except arrays: each
//! array field becomes a child table whose rows are its elements, in array order — an
//! element that is an object gives its (flattened) fields as columns, any other a column
//! `value`; an array inside an element is the child's own child table.

use super::{ARRAY, FlatField, NESTED, NULL, OBJECT, Sample, SampledField, resolve};
use crate::schema::{Column, PgType, TableSchema};

/// One child table: the elements of an array field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShape {
    /// Its name after the root table's and `__`: the array's path from the record, through
    /// every array on the way (`entities__urls__indices`).
    pub name: String,
    /// The table whose rows hold the array: `None` for the root, else another child's index
    /// (always an earlier one).
    pub parent: Option<usize>,
    /// The array's path in a row of its parent: the objects it lies in, then its key.
    pub path: Vec<String>,
    /// The elements' columns: their flattened fields, or [`VALUE`].
    pub columns: TableSchema,
    /// The elements are not objects: each is the row's [`VALUE`] whole.
    pub scalar: bool,
}

/// The column of a child table whose elements are not objects.
pub const VALUE: &str = "value";

/// The tables of a family: the root's columns and the child tables, parents first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FamilyShape {
    pub root: TableSchema,
    pub children: Vec<ChildShape>,
}

impl Sample {
    /// The tables that hold every sampled record, its arrays as child tables.
    pub fn family(&self) -> FamilyShape {
        let mut family = FamilyShape::default();
        let mut root = Vec::new();
        walk(
            &self.fields,
            &mut Vec::new(),
            None,
            "",
            &mut root,
            &mut family,
        );
        family.root = TableSchema { columns: root };
        family
    }
}

/// Adds the columns `fields` give a table (`table`: `None` for the root) to `columns`, and
/// the child tables of their arrays to `family`. `path` is the path so far within the
/// table's row; `prefix` the table's own name part, for its children's names.
fn walk(
    fields: &[SampledField],
    path: &mut Vec<String>,
    table: Option<usize>,
    prefix: &str,
    columns: &mut Vec<Column>,
    family: &mut FamilyShape,
) {
    for field in fields {
        let kinds = field.kinds & !NULL;
        match &field.items {
            _ if kinds == OBJECT && !field.fields.is_empty() => {
                path.push(field.name.clone());
                walk(&field.fields, path, table, prefix, columns, family);
                path.pop();
            }
            Some(items) if kinds == ARRAY && items.kinds & !NULL != 0 => {
                path.push(field.name.clone());
                child(items, path, table, prefix, family);
                path.pop();
            }
            _ => {
                let flat = FlatField {
                    parents: path.clone(),
                    key: field.name.clone(),
                    kinds: field.kinds,
                };
                columns.push(flat.column(resolve(kinds).0));
            }
        }
    }
}

/// The child table of the array at `path` in `parent`'s rows, whose elements were `items`.
fn child(
    items: &SampledField,
    path: &[String],
    parent: Option<usize>,
    prefix: &str,
    family: &mut FamilyShape,
) {
    let name = format!("{prefix}{}", path.join("__"));
    let index = family.children.len();
    family.children.push(ChildShape {
        name: name.clone(),
        parent,
        path: path.to_vec(),
        columns: TableSchema {
            columns: Vec::new(),
        },
        scalar: false,
    });
    let kinds = items.kinds & !NULL;
    let objects = kinds == OBJECT && !items.fields.is_empty();
    let columns = if objects {
        let mut columns = Vec::new();
        let prefix = format!("{name}__");
        walk(
            &items.fields,
            &mut Vec::new(),
            Some(index),
            &prefix,
            &mut columns,
            family,
        );
        columns
    } else if kinds & NESTED == 0 {
        vec![Column::new(VALUE, resolve(kinds).0)]
    } else {
        // Objects beside scalars, arrays of arrays, objects without fields: each element
        // whole.
        vec![Column::new(VALUE, PgType::Jsonb)]
    };
    family.children[index].columns = TableSchema { columns };
    family.children[index].scalar = !objects;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(records: &[&str]) -> FamilyShape {
        let mut sample = Sample::tables(10);
        for r in records {
            sample.add(r.as_bytes());
        }
        sample.family()
    }

    fn names(schema: &TableSchema) -> Vec<(String, PgType)> {
        schema
            .columns
            .iter()
            .map(|c| (c.field_name().into_owned(), c.pg_type))
            .collect()
    }

    #[test]
    fn arrays_become_child_tables_and_arrays_in_elements_grandchildren() {
        let got = family(&[
            r#"{"id": 1, "user": {"n": "a"}, "entities": {"hashtags": [{"text": "x", "indices": [1, 2]}], "urls": []}, "tags": ["a", "b"]}"#,
            r#"{"id": 2, "entities": {"hashtags": [], "urls": null}, "tags": [], "mixed": [1, {"a": 1}], "nested": [[1], [2, 3]], "never": []}"#,
        ]);
        let n = |v: &[(&str, PgType)]| {
            v.iter()
                .map(|(a, t)| (a.to_string(), *t))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&got.root),
            n(&[
                ("id", PgType::Int8),
                ("user__n", PgType::Text),
                // Only ever empty (or null): no element to make a table of; kept whole.
                ("entities__urls", PgType::Jsonb),
                ("never", PgType::Jsonb),
            ])
        );
        let children: Vec<_> = got
            .children
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.parent,
                    c.path.join("."),
                    names(&c.columns),
                )
            })
            .collect();
        assert_eq!(
            children,
            vec![
                (
                    "entities__hashtags",
                    None,
                    "entities.hashtags".to_string(),
                    n(&[("text", PgType::Text)])
                ),
                (
                    "entities__hashtags__indices",
                    Some(0),
                    "indices".to_string(),
                    n(&[("value", PgType::Int8)])
                ),
                (
                    "tags",
                    None,
                    "tags".to_string(),
                    n(&[("value", PgType::Text)])
                ),
                (
                    "mixed",
                    None,
                    "mixed".to_string(),
                    n(&[("value", PgType::Jsonb)])
                ),
                (
                    "nested",
                    None,
                    "nested".to_string(),
                    n(&[("value", PgType::Jsonb)])
                ),
            ]
        );
    }
}
