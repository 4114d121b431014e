//! `--nested tables`: the rows of a record's child tables, decoded with the record.
//!
//! The root table's decoder scans a record as under `--nested flatten`, each array that is
//! a child table going into a slot of its own. Once the record's row is filled, each such
//! array is walked element by element ([`scan::scan_elements`]) into its child table's
//! rows: an object element's fields fill the row as a record's fill the root's (values stay
//! spans of the one batch input, so the column decoders read them as they read any), any
//! other element is the row's `value`. A child table's arrays are walked in turn, parents
//! before children.
//!
//! The columns that link a child row to its parent are not in the input: they are the
//! parent's identity (its key columns, or the id generated for it; for a deeper table its
//! parent's links and `_idx`), copied from the parent's built arrays by row, and `_idx`, the
//! element's position. A record is one unit throughout: when any of its rows, in any table,
//! cannot be loaded, the record fails (or in reject mode is set aside) with every row it
//! gave.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Int32Array, RecordBatch, UInt32Array,
};

use super::columns::{self, Batch, DateRules};
use super::fields::{Object, fill_row, kind_words, syntax};
use super::layout::Layout;
use super::scan::{self, Kind, SyntaxError, Value};
use super::{DecodeError, DecodeOptions};
use crate::decode::infer::family::VALUE;
use crate::schema::TableSchema;

/// What fills a column of a child table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The parent's identity column `i` ([`FamilySpec`] says what a parent's identity is).
    Link(usize),
    /// The element's 0-based position in its array (`_idx`).
    Index,
    /// A field of an object element, or a scalar element (`value`).
    Element,
}

/// One child table as the decoder fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// The array's path, for messages (`entities.hashtags[]`).
    pub label: String,
    /// The table whose rows hold the array: `None` for the root, else an earlier child.
    pub parent: Option<usize>,
    /// The array's path in a row of its parent: the objects it lies in, then its key.
    pub path: Vec<String>,
    /// The table's columns as the batch gives them, and what fills each.
    pub columns: TableSchema,
    pub fills: Vec<Fill>,
    /// The elements are not objects: the one [`Fill::Element`] column takes each whole.
    pub scalar: bool,
}

/// The tables a record becomes, as the decoder fills them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySpec {
    /// What a root row's children link to: the root's key columns (by index among its
    /// decoded columns), or its generated id.
    pub root_identity: Vec<usize>,
    /// The root column holding an id generated for each record (no key was given), and the
    /// load's part of it.
    pub generated_id: Option<GeneratedId>,
    /// Parents before children.
    pub children: Vec<ChildSpec>,
}

impl FamilySpec {
    /// The paths of the arrays read from rows of `table` (`None`: the root), and the child
    /// each goes to.
    fn arrays_of(&self, table: Option<usize>) -> (Vec<Vec<String>>, Vec<usize>) {
        self.children
            .iter()
            .enumerate()
            .filter(|(_, c)| c.parent == table)
            .map(|(i, c)| (c.path.clone(), i))
            .unzip()
    }

    /// The root table's layout: its columns, and the arrays of its child tables.
    pub(super) fn root_layout(&self, table: &TableSchema) -> Layout {
        Layout::with_arrays(table, &self.arrays_of(None).0, String::new())
    }
}

/// The root column that holds generated ids, and the load's part of them.
pub type GeneratedId = (usize, RowIds);

/// The ids generated for root rows when no key identifies them: UUIDs of version 7, whose
/// time and random bits are drawn once per load and whose last 40 bits are the record's
/// number, so ids are unique within a load and, by time and chance, across loads, and
/// sort in input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowIds {
    base: [u8; 16],
}

impl Default for RowIds {
    fn default() -> RowIds {
        RowIds::new()
    }
}

impl RowIds {
    pub fn new() -> RowIds {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let random = *uuid::Uuid::new_v4().as_bytes();
        let mut bits = [0u8; 10];
        bits[..5].copy_from_slice(&random[..5]);
        RowIds {
            base: *uuid::Builder::from_unix_timestamp_millis(millis, &bits)
                .into_uuid()
                .as_bytes(),
        }
    }

    /// The id of record `record`.
    pub fn id(&self, record: u64) -> [u8; 16] {
        let mut id = self.base;
        id[11..].copy_from_slice(&record.to_be_bytes()[3..]);
        id
    }
}

/// One child table's rows of a decoded batch.
#[derive(Debug)]
pub struct ChildBatch {
    pub batch: RecordBatch,
    /// Each row's record number.
    pub records: Vec<u64>,
}

/// One child table's rows of the batch being built.
struct ChildRows {
    layout: Layout,
    /// The slot of the `value` column, for elements that are not objects.
    value: usize,
    /// Which child each of `layout.arrays` goes to.
    arrays: Vec<usize>,
    /// Row-major, `layout.width` slots a row, as the root's.
    values: Vec<Value>,
    /// Each row's parent row (in the parent table's rows of this batch), position in its
    /// array and root row.
    parents: Vec<u32>,
    index: Vec<i32>,
    roots: Vec<u32>,
}

impl ChildRows {
    fn rows(&self) -> usize {
        self.parents.len()
    }

    fn truncate(&mut self, rows: usize) {
        self.parents.truncate(rows);
        self.index.truncate(rows);
        self.roots.truncate(rows);
        self.values.truncate(rows * self.layout.width);
    }
}

/// The child tables' rows of the batch the root decoder is building.
pub(super) struct FamilyRows {
    spec: Arc<FamilySpec>,
    children: Vec<ChildRows>,
    /// Which child each of the root layout's arrays goes to.
    root_arrays: Vec<usize>,
    /// Each child's rows before the record being added.
    marks: Vec<usize>,
}

/// The record whose arrays are walked.
struct Walk<'a> {
    record: &'a Object<'a>,
    options: &'a DecodeOptions,
}

/// Why walking an array stopped.
enum WalkError {
    Syntax(SyntaxError),
    Decode(DecodeError),
}

impl From<SyntaxError> for WalkError {
    fn from(e: SyntaxError) -> WalkError {
        WalkError::Syntax(e)
    }
}

impl From<DecodeError> for WalkError {
    fn from(e: DecodeError) -> WalkError {
        WalkError::Decode(e)
    }
}

impl FamilyRows {
    pub(super) fn new(spec: Arc<FamilySpec>) -> FamilyRows {
        let children = (0..spec.children.len())
            .map(|i| {
                let child = &spec.children[i];
                let (paths, arrays) = spec.arrays_of(Some(i));
                let elements = element_columns(child);
                let value = elements.columns.iter().position(|c| c.name == VALUE);
                ChildRows {
                    value: value.unwrap_or_default(),
                    layout: Layout::with_arrays(&elements, &paths, format!("{}.", child.label)),
                    arrays,
                    values: Vec::new(),
                    parents: Vec::new(),
                    index: Vec::new(),
                    roots: Vec::new(),
                }
            })
            .collect();
        FamilyRows {
            root_arrays: spec.arrays_of(None).1,
            marks: vec![0; spec.children.len()],
            children,
            spec,
        }
    }

    /// Adds the child rows of the root row just filled (`root`, whose slots are
    /// `root_values`; `arrays`: the slots of its arrays). On an error no row of the record
    /// stays.
    pub(super) fn add_record(
        &mut self,
        record: &Object<'_>,
        root_values: &[Value],
        arrays: &[usize],
        root: u32,
        scratch: &mut String,
        options: &DecodeOptions,
    ) -> Result<(), DecodeError> {
        for (mark, child) in self.marks.iter_mut().zip(&self.children) {
            *mark = child.rows();
        }
        let walk = Walk { record, options };
        let added = self.add_rows(&walk, root_values, arrays, root, scratch);
        if added.is_err() {
            for (child, &mark) in self.children.iter_mut().zip(&self.marks) {
                child.truncate(mark);
            }
        }
        added
    }

    fn add_rows(
        &mut self,
        walk: &Walk<'_>,
        root_values: &[Value],
        arrays: &[usize],
        root: u32,
        scratch: &mut String,
    ) -> Result<(), DecodeError> {
        for (k, &slot) in arrays.iter().enumerate() {
            let child = self.root_arrays[k];
            self.elements(walk, child, root_values[slot], root, root, scratch)?;
        }
        // Parents come before children, so a table's rows of this record are all there
        // when its own arrays are walked.
        for table in 0..self.children.len() {
            for k in 0..self.children[table].arrays.len() {
                let child = self.children[table].arrays[k];
                for row in self.marks[table]..self.children[table].rows() {
                    let rows = &self.children[table];
                    let value = rows.values[row * rows.layout.width + rows.layout.arrays[k]];
                    self.elements(walk, child, value, row as u32, root, scratch)?;
                }
            }
        }
        Ok(())
    }

    /// Adds a row to `child` for each element of `array`, a value of row `parent` of the
    /// child's parent table.
    fn elements(
        &mut self,
        walk: &Walk<'_>,
        child: usize,
        array: Value,
        parent: u32,
        root: u32,
        scratch: &mut String,
    ) -> Result<(), DecodeError> {
        let spec = &self.spec.children[child];
        let Object {
            input,
            start,
            end,
            number,
            at,
        } = *walk.record;
        match array.kind {
            Kind::Array => {}
            Kind::Absent | Kind::Null => return Ok(()),
            found => {
                return Err(DecodeError::NotArray {
                    line: at.line,
                    record: number,
                    field: spec.label.trim_end_matches("[]").to_string(),
                    found: kind_words(found),
                });
            }
        }
        let rows = &mut self.children[child];
        let text = &input[..array.end as usize];
        let mut index = 0i32;
        let walked = scan::scan_elements::<WalkError>(text, array.start as usize, |element| {
            let width = rows.layout.width;
            let row = rows.rows();
            rows.values.resize((row + 1) * width, Value::default());
            let slots = &mut rows.values[row * width..];
            if spec.scalar {
                slots[rows.value] = element;
            } else {
                match element.kind {
                    Kind::Object => {
                        let object = Object {
                            input,
                            start: element.start as usize,
                            end: element.end as usize,
                            number,
                            at,
                        };
                        fill_row(&mut rows.layout, &object, slots, scratch, walk.options)?;
                    }
                    Kind::Null => {}
                    found => {
                        return Err(WalkError::Decode(DecodeError::NotObject {
                            line: at.line,
                            record: number,
                            field: spec.label.clone(),
                            columns: spec.label.replace('.', "__"),
                            found: kind_words(found),
                        }));
                    }
                }
            }
            rows.parents.push(parent);
            rows.index.push(index);
            rows.roots.push(root);
            index = index.checked_add(1).ok_or_else(|| {
                WalkError::Decode(DecodeError::Structure {
                    line: at.line,
                    message: format!("the array {} has more than 2^31 elements", spec.label),
                })
            })?;
            Ok(())
        });
        match walked {
            Ok(()) => Ok(()),
            Err(WalkError::Decode(e)) => Err(e),
            // The record was checked whole as it came in, so this is not expected; named
            // where it is all the same.
            Err(WalkError::Syntax(mut e)) => {
                e.offset += array.start as usize - start;
                Err(syntax(&input.as_bytes()[start..end], at, number, &e))
            }
        }
    }

    /// Drops every row (a decoder starting afresh).
    pub(super) fn clear(&mut self) {
        for child in &mut self.children {
            child.truncate(0);
        }
    }

    /// Builds each child table's columns (all rows, whatever reject mode drops later) and
    /// the values that do not fit, by root row.
    pub(super) fn build(
        &self,
        input: &str,
        dates: &DateRules<'_>,
        record_of_root: &dyn Fn(usize) -> (u64, u64),
    ) -> (Vec<Vec<ArrayRef>>, Vec<(usize, DecodeError)>) {
        let mut bad = Vec::new();
        let mut built = Vec::with_capacity(self.children.len());
        for (spec, rows) in self.spec.children.iter().zip(&self.children) {
            let batch = Batch {
                input,
                values: &rows.values,
                columns: rows.layout.width,
                rows: rows.rows(),
            };
            let mut arrays = Vec::new();
            let elements = spec.columns.columns.iter().zip(&spec.fills);
            let elements = elements.filter(|(_, fill)| **fill == Fill::Element);
            for (slot, (column, _)) in elements.enumerate() {
                let mut errors = Vec::new();
                arrays.push(columns::decode_column(
                    column.pg_type,
                    &batch,
                    slot,
                    dates,
                    &mut errors,
                ));
                for (row, reason) in errors {
                    let root = rows.roots[row] as usize;
                    let (line, record) = record_of_root(root);
                    bad.push((
                        root,
                        DecodeError::Value {
                            line,
                            record,
                            column: format!("{}.{}", spec.label, column.name),
                            reason,
                        },
                    ));
                }
            }
            built.push(arrays);
        }
        (built, bad)
    }

    /// Each child table's batch from its built element columns, its rows linked to their
    /// parents (`root`: the root's built columns), keeping the rows of root rows `keep`
    /// keeps, with each row's record number (`records`: the root rows'); and empties the
    /// tables for the next batch.
    pub(super) fn finish(
        &mut self,
        root: &[ArrayRef],
        elements: Vec<Vec<ArrayRef>>,
        keep: Option<&[bool]>,
        records: &[u64],
    ) -> Result<Vec<ChildBatch>, arrow_schema::ArrowError> {
        let mut identities: Vec<Vec<ArrayRef>> = Vec::with_capacity(self.children.len());
        let root_identity: Vec<ArrayRef> = self
            .spec
            .root_identity
            .iter()
            .map(|&i| root[i].clone())
            .collect();
        let mut batches = Vec::with_capacity(self.children.len());
        for ((spec, rows), elements) in self.spec.children.iter().zip(&self.children).zip(elements)
        {
            let parent_identity = match spec.parent {
                None => &root_identity,
                Some(p) => &identities[p],
            };
            let parents = UInt32Array::from(rows.parents.clone());
            let index: ArrayRef = Arc::new(Int32Array::from(rows.index.clone()));
            let mut elements = elements.into_iter();
            let mut columns = Vec::with_capacity(spec.fills.len());
            // The row's identity for its own children: its links in the order of the
            // parent's identity (whatever order the table has its columns in), then `_idx`.
            let mut links: Vec<ArrayRef> = vec![index.clone(); parent_identity.len() + 1];
            for (fill, column) in spec.fills.iter().zip(&spec.columns.columns) {
                let array = match fill {
                    Fill::Link(i) => {
                        let taken = arrow_select::take::take(&parent_identity[*i], &parents, None)?;
                        let to = column.pg_type.arrow_type();
                        let linked = match taken.data_type() == &to {
                            true => taken,
                            false => arrow_cast::cast(&taken, &to)?,
                        };
                        links[*i] = linked.clone();
                        linked
                    }
                    Fill::Index => index.clone(),
                    Fill::Element => elements.next().ok_or_else(|| {
                        arrow_schema::ArrowError::SchemaError(format!(
                            "{}: fewer element columns than the table has",
                            spec.label
                        ))
                    })?,
                };
                columns.push(array);
            }
            identities.push(links);
            let mut batch = RecordBatch::try_new(spec.columns.arrow_schema(), columns)?;
            let kept = |r: u32| keep.is_none_or(|keep| keep[r as usize]);
            if keep.is_some() {
                let mask: BooleanArray = rows.roots.iter().map(|&r| Some(kept(r))).collect();
                batch = arrow_select::filter::filter_record_batch(&batch, &mask)?;
            }
            let records = rows
                .roots
                .iter()
                .filter(|&&r| kept(r))
                .map(|&r| records[r as usize])
                .collect();
            batches.push(ChildBatch { batch, records });
        }
        self.clear();
        Ok(batches)
    }
}

/// The columns of `child` its elements fill (every column but the links and `_idx`).
fn element_columns(child: &ChildSpec) -> TableSchema {
    let columns = child.columns.columns.iter().zip(&child.fills);
    TableSchema {
        columns: columns
            .filter(|(_, fill)| **fill == Fill::Element)
            .map(|(column, _)| column.clone())
            .collect(),
    }
}

/// The generated ids of the rows of records `records`, as a uuid column.
pub(super) fn generated_ids(ids: &RowIds, records: impl Iterator<Item = u64>) -> ArrayRef {
    let mut bytes = Vec::new();
    for record in records {
        bytes.extend_from_slice(&ids.id(record));
    }
    Arc::new(FixedSizeBinaryArray::new(16, bytes.into(), None))
}

#[cfg(test)]
mod tests;
