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
    /// Slots per row: one per column, then one per flattened object, then one per array
    /// read into a child table (`--nested tables`).
    pub width: usize,
    /// The slot of each array read into a child table, in the order they were given.
    pub arrays: Vec<usize>,
    /// What names an unknown field of the record itself: empty for a record, the array's
    /// path for an element of a child table (`entities.hashtags[].`).
    pub prefix: String,
}

/// What a key of a node stands for while the layout is built: a column, or an array read
/// into a child table (whose slot is known once every object has its own).
#[derive(Clone, Copy)]
enum Target {
    Column(usize),
    Array(usize),
}

/// Array slots are numbered once every object's slot is known; until then a key's slot
/// holds this minus the array's index.
const ARRAY_MARK: u32 = u32::MAX;

impl Layout {
    pub(super) fn new(table: &TableSchema) -> Layout {
        Layout::with_arrays(table, &[], String::new())
    }

    /// The layout of `table`'s columns and of the arrays at `arrays` (each a path: the
    /// objects it lies in, then its key), whose elements go to child tables.
    pub(super) fn with_arrays<'a>(
        table: &'a TableSchema,
        arrays: &'a [Vec<String>],
        prefix: String,
    ) -> Layout {
        let columns = table.columns.len();
        let mut build = Build {
            columns,
            nodes: vec![Node::default()],
            slots: vec![Vec::new()],
            children: HashMap::new(),
            shared: Vec::new(),
            prefix: &prefix,
        };
        for (index, column) in table.columns.iter().enumerate() {
            build.add(&column.parents, column.key(), Target::Column(index));
        }
        for (index, path) in arrays.iter().enumerate() {
            if let Some((key, parents)) = path.split_last() {
                build.add(parents, key, Target::Array(index));
            }
        }
        let objects = build.nodes.len() - 1;
        let mut array_slots = vec![0; arrays.len()];
        let mut nodes = build.nodes;
        for (node, mut slots) in nodes.iter_mut().zip(build.slots) {
            for slot in &mut slots {
                if *slot > ARRAY_MARK - arrays.len() as u32 {
                    let array = (ARRAY_MARK - *slot) as usize;
                    *slot = (columns + objects + array) as u32;
                    array_slots[array] = *slot as usize;
                }
            }
            let identity = slots.iter().enumerate().all(|(i, &s)| s as usize == i);
            node.slots = (!identity).then_some(slots);
        }
        // An array that is also a column's key shares the column's slot (marked there).
        for (array, slot) in build.shared {
            array_slots[array] = slot;
        }
        Layout {
            nodes,
            width: columns + objects + arrays.len(),
            arrays: array_slots,
            prefix,
        }
    }
}

/// A layout being built: the nodes so far and each node's keys' slots.
struct Build<'a> {
    columns: usize,
    nodes: Vec<Node>,
    slots: Vec<Vec<u32>>,
    /// (node, key) → the node of the object under that key.
    children: HashMap<(usize, &'a str), usize>,
    /// Arrays whose key is also a column's, and that column's slot.
    shared: Vec<(usize, usize)>,
    /// Starts the path of every object (see [`Layout::prefix`]).
    prefix: &'a str,
}

impl<'a> Build<'a> {
    /// Adds the key `key` of the object at `parents` (creating the nodes on the way).
    fn add(&mut self, parents: &'a [String], key: &'a str, target: Target) {
        let mut node = 0;
        for depth in 0..parents.len() {
            node = match self.children.get(&(node, parents[depth].as_str())) {
                Some(&child) => child,
                None => self.object(node, parents, depth),
            };
        }
        match target {
            Target::Column(index) => {
                if let Some(&child) = self.children.get(&(node, key)) {
                    if let Some(object) = self.nodes[child].object.as_mut() {
                        object.also_column = Some(index);
                    }
                    return;
                }
                self.key(node, key, index as u32);
            }
            Target::Array(array) => {
                let existing = self.nodes[node]
                    .keys
                    .iter()
                    .position(|k| **k == *key.as_bytes());
                match existing {
                    Some(i) => self.shared.push((array, self.slots[node][i] as usize)),
                    None => self.key(node, key, ARRAY_MARK - array as u32),
                }
            }
        }
    }

    fn key(&mut self, node: usize, key: &str, slot: u32) {
        self.nodes[node].keys.push(key.as_bytes().into());
        self.nodes[node].quoted_keys.push(quoted_key(key));
        self.slots[node].push(slot);
    }

    /// The node of the object `parents[depth]` in `node` (the object at
    /// `parents[..depth]`), new; a column of the same key also takes the object whole.
    fn object(&mut self, node: usize, parents: &'a [String], depth: usize) -> usize {
        let parent = parents[depth].as_str();
        let child = self.nodes.len();
        let slot = self.columns + child - 1;
        let existing = self.nodes[node]
            .keys
            .iter()
            .position(|k| **k == *parent.as_bytes());
        let also_column = existing.map(|i| self.slots[node][i] as usize);
        match existing {
            Some(i) => self.slots[node][i] = slot as u32,
            None => self.key(node, parent, slot as u32),
        }
        let path = format!("{}{}", self.prefix, parents[..=depth].join("."));
        self.nodes.push(Node {
            object: Some(ObjectSlot {
                slot,
                prefix: format!("{path}."),
                path,
                also_column,
            }),
            ..Node::default()
        });
        self.slots.push(Vec::new());
        self.children.insert((node, parent), child);
        child
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
