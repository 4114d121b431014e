//! Where each field of a record goes: the keys of the record and (with `--nested flatten`)
//! of the objects in it, each mapped to its column's slot in the row.
//!
//! A record is scanned once, its fields going into their slots as today; a field whose
//! object is flattened goes into a slot of its own, and once the record is scanned, each such
//! object is scanned in turn (outer objects first) into its fields' slots. Values stay spans
//! of the record's text, so the column decoders read a flattened field exactly as they read
//! a field of the record itself.

use std::collections::HashMap;

use super::fields::quoted_key;
use crate::schema::TableSchema;

/// The keys of one object (the record, or an object in it) and the slot each goes to.
#[derive(Debug, Clone, Default)]
pub(super) struct Node {
    pub keys: Vec<Box<[u8]>>,
    /// Each key and its closing quote, for the scanner's guess ([`quoted_key`]).
    pub quoted_keys: Vec<Option<Box<[u8]>>>,
    /// The row slot of each key; `None` when key `i` goes to slot `i` (a record read
    /// without flattening: the common case keeps its one lookup).
    pub slots: Option<Vec<u32>>,
    /// The key the next field most likely has (see `fields::RowFields::guess`).
    pub guess: usize,
    /// For an object's node: where the object's own value is scanned to.
    pub object: Option<ObjectSlot>,
}

/// Where a flattened object's value lies in a row, and what it is called.
#[derive(Debug, Clone)]
pub(super) struct ObjectSlot {
    pub slot: usize,
    /// Its path as messages give it (`user`, `payload.pull_request`).
    pub path: String,
    /// The path and a dot, which starts the name of an unknown field in it.
    pub prefix: String,
    /// A column that also takes the object whole (an existing table's jsonb column of the
    /// same name).
    pub also_column: Option<usize>,
}

/// Every object's node, outer objects before inner ones; the record's is first.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub nodes: Vec<Node>,
    /// Slots per row: one per column, then one per flattened object.
    pub width: usize,
}

impl Layout {
    pub(super) fn new(table: &TableSchema) -> Layout {
        let columns = table.columns.len();
        let mut nodes = vec![Node::default()];
        let mut slots: Vec<Vec<u32>> = vec![Vec::new()];
        // (node, key) → the node of the object under that key.
        let mut children: HashMap<(usize, &str), usize> = HashMap::new();
        for (index, column) in table.columns.iter().enumerate() {
            let mut node = 0;
            for (depth, parent) in column.parents.iter().enumerate() {
                node = match children.get(&(node, parent.as_str())) {
                    Some(&child) => child,
                    None => {
                        let child = nodes.len();
                        let slot = columns + child - 1;
                        let existing = nodes[node]
                            .keys
                            .iter()
                            .position(|k| **k == *parent.as_bytes());
                        let also_column = existing.map(|i| slots[node][i] as usize);
                        match existing {
                            Some(i) => slots[node][i] = slot as u32,
                            None => {
                                nodes[node].keys.push(parent.as_bytes().into());
                                nodes[node].quoted_keys.push(quoted_key(parent));
                                slots[node].push(slot as u32);
                            }
                        }
                        nodes.push(Node {
                            object: Some(ObjectSlot {
                                slot,
                                path: column.parents[..=depth].join("."),
                                prefix: format!("{}.", column.parents[..=depth].join(".")),
                                also_column,
                            }),
                            ..Node::default()
                        });
                        slots.push(Vec::new());
                        children.insert((node, parent.as_str()), child);
                        child
                    }
                };
            }
            let key = column.key();
            if let Some(&child) = children.get(&(node, key)) {
                if let Some(object) = nodes[child].object.as_mut() {
                    object.also_column = Some(index);
                }
                continue;
            }
            nodes[node].keys.push(key.as_bytes().into());
            nodes[node].quoted_keys.push(quoted_key(key));
            slots[node].push(index as u32);
        }
        for (node, slots) in nodes.iter_mut().zip(slots) {
            let identity = slots.iter().enumerate().all(|(i, &s)| s as usize == i);
            node.slots = (!identity).then_some(slots);
        }
        let width = columns + nodes.len() - 1;
        Layout { nodes, width }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, PgType};

    fn nested(path: &[&str]) -> Column {
        let (key, parents) = path.split_last().unwrap();
        Column {
            name: path.join("__"),
            pg_type: PgType::Text,
            key: Some(key.to_string()),
            parents: parents.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_flat_table_maps_key_i_to_slot_i() {
        let table = TableSchema {
            columns: vec![
                Column::new("a", PgType::Int8),
                Column::new("b", PgType::Text),
            ],
        };
        let layout = Layout::new(&table);
        assert_eq!(layout.width, 2);
        assert_eq!(layout.nodes.len(), 1);
        assert!(layout.nodes[0].slots.is_none());
    }

    #[test]
    fn objects_get_slots_after_the_columns_outer_first() {
        let table = TableSchema {
            columns: vec![
                Column::new("id", PgType::Int8),
                nested(&["user", "id"]),
                nested(&["user", "entity", "url"]),
                nested(&["user", "name"]),
                Column::new("user", PgType::Jsonb),
            ],
        };
        let layout = Layout::new(&table);
        assert_eq!(layout.width, 7);
        let keys = |n: usize| {
            layout.nodes[n]
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(0), ["id", "user"]);
        assert_eq!(layout.nodes[0].slots, Some(vec![0, 5]));
        assert_eq!(keys(1), ["id", "entity", "name"]);
        assert_eq!(layout.nodes[1].slots, Some(vec![1, 6, 3]));
        let user = layout.nodes[1].object.as_ref().unwrap();
        assert_eq!(
            (user.slot, user.path.as_str(), user.also_column),
            (5, "user", Some(4))
        );
        assert_eq!(keys(2), ["url"]);
        assert_eq!(layout.nodes[2].object.as_ref().unwrap().path, "user.entity");
    }
}
