//! Infers column types from a sample of records, for tables apitap creates.
//!
//! The sample is read with the same strict scanner as the load ([`super::scan`]), so it
//! understands exactly the records the decoder accepts, and skips only records the decoder
//! will refuse. Numbers are classified by their text, not by a parsed double, so that no
//! value loses digits: integers past 64 bits and numbers a double cannot hold exactly make
//! the column `numeric`. Column order is the order fields first appear.
//!
//! With `--nested flatten` the sample also reads inside objects, down to the nesting asked
//! for: a field that held only objects (or null) becomes the columns of its fields, named by
//! their path (`user__screen_name`), each placed where its object first appeared.

use super::scan::{Kind, SyntaxError, Value, scan_elements, scan_record, unescape};
use super::values::{StringShape, string_shape};
use super::{DecodeOptions, Position, RecordDecoder};
use crate::schema::{Column, PgType, TableSchema};

const NULL: u16 = 1;
const BOOL: u16 = 1 << 1;
const INT: u16 = 1 << 2;
/// An integer that does not fit in bigint.
const BIG_INT: u16 = 1 << 3;
const FLOAT: u16 = 1 << 4;
const TIMESTAMPTZ: u16 = 1 << 5;
const TIMESTAMP: u16 = 1 << 6;
const DATE: u16 = 1 << 7;
const STRING: u16 = 1 << 8;
const OBJECT: u16 = 1 << 9;
const ARRAY: u16 = 1 << 13;
const NESTED: u16 = OBJECT | ARRAY;
/// With INT: an integer outside smallint's range, or outside integer's. They only matter
/// when an existing column is too narrow; a new table's integers are bigint.
const BEYOND_INT2: u16 = 1 << 10;
const BEYOND_INT4: u16 = 1 << 11;
/// A number a double cannot hold exactly: its shortest double does not read back as the
/// same decimal value (`1234567890.123456789`, `9007199254740993`, `1e400`).
const NOT_DOUBLE: u16 = 1 << 12;

/// The most levels of objects `--max-nesting` may flatten: deeper paths make column names no
/// one can read, and the sample and the decoder recurse once per level.
pub(crate) const MAX_FLATTEN_DEPTH: usize = 64;

/// What the sample showed of one field, and (flattening) of the fields of its objects.
#[derive(Debug, Default)]
struct SampledField {
    name: String,
    kinds: u16,
    /// The fields its object values held, in order of first appearance.
    fields: Vec<SampledField>,
    /// With child tables: what the elements of its array values were (unnamed).
    items: Option<Box<SampledField>>,
}

/// One field as a column: the objects it lies in, its key, and its kinds.
struct FlatField {
    parents: Vec<String>,
    key: String,
    kinds: u16,
}

impl FlatField {
    /// The column it becomes, named by its path joined with `__` (before the names
    /// PostgreSQL cannot take are mapped: see [`crate::schema::column_name`]).
    fn column(&self, pg_type: PgType) -> Column {
        if self.parents.is_empty() {
            return Column::new(self.key.clone(), pg_type);
        }
        Column {
            name: self.name(),
            pg_type,
            key: Some(self.key.clone()),
            parents: self.parents.clone(),
        }
    }

    fn name(&self) -> String {
        let mut name = String::new();
        for parent in &self.parents {
            name.push_str(parent);
            name.push_str("__");
        }
        name.push_str(&self.key);
        name
    }
}

/// What the sample showed of each field, in order of first appearance.
#[derive(Debug, Default)]
pub struct Sample {
    /// How many levels of objects are flattened into columns (0: none, `--nested keep`).
    flatten_depth: usize,
    /// Arrays become child tables (`--nested tables`): their elements are read too.
    tables: bool,
    fields: Vec<SampledField>,
    records: usize,
    /// The sampled records, one per line, to try an existing column's decoder on.
    text: Vec<u8>,
}

impl Sample {
    /// A sample that flattens objects `flatten_depth` levels deep into columns (0: none).
    pub fn new(flatten_depth: usize) -> Sample {
        Sample {
            flatten_depth: flatten_depth.min(MAX_FLATTEN_DEPTH),
            ..Sample::default()
        }
    }

    /// A sample for `--nested tables`: objects flattened and arrays read into, `depth` levels
    /// deep in all.
    pub fn tables(depth: usize) -> Sample {
        Sample {
            tables: true,
            ..Sample::new(depth)
        }
    }

    /// Adds one record. Records the decoder will refuse (not JSON, not an object) are
    /// skipped here: the decoder reports them, or sets them aside, when they are loaded.
    pub fn add(&mut self, record: &[u8]) {
        let Ok(record) = std::str::from_utf8(record) else {
            return;
        };
        let mut seen = Vec::new();
        let reading = Reading {
            depth: self.flatten_depth,
            tables: self.tables,
        };
        if reading.object(record, &mut seen).is_err() {
            return;
        }
        self.records += 1;
        self.text.extend_from_slice(record.as_bytes());
        self.text.push(b'\n');
        merge(&mut self.fields, seen);
    }

    /// The fields as columns: a field that held only objects (and nulls), with fields of
    /// their own, gives way to those fields; any other is one column.
    fn flat(&self) -> Vec<FlatField> {
        fn walk(fields: &[SampledField], path: &mut Vec<String>, out: &mut Vec<FlatField>) {
            for field in fields {
                if field.kinds & !NULL == OBJECT && !field.fields.is_empty() {
                    path.push(field.name.clone());
                    walk(&field.fields, path, out);
                    path.pop();
                } else {
                    out.push(FlatField {
                        parents: path.clone(),
                        key: field.name.clone(),
                        kinds: field.kinds,
                    });
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.fields, &mut Vec::new(), &mut out);
        out
    }

    fn find(&self, name: &str) -> Option<FlatField> {
        self.flat().into_iter().find(|f| f.name() == name)
    }

    /// Names of the fields seen (flattened: their paths joined with `__`), in order of first
    /// appearance.
    pub(crate) fn field_names(&self) -> Vec<String> {
        self.flat().iter().map(FlatField::name).collect()
    }

    /// How many records (JSON objects) were sampled.
    pub(crate) fn records(&self) -> usize {
        self.records
    }

    /// The wider type an existing column of type `current` needs to hold every sampled
    /// value of `name`, or `None` if it holds them already. Integer columns widen as far as
    /// the values need (int → bigint → numeric); with `to_text`, any other column whose
    /// decoder refuses a sampled value becomes text (otherwise that value fails the load).
    pub(crate) fn widening(&self, name: &str, current: PgType, to_text: bool) -> Option<PgType> {
        let field = self.find(name)?;
        widening_number(field.kinds, current)
            .or_else(|| (to_text && self.refused_by(&field, current)).then_some(PgType::Text))
    }

    /// Whether a column of type `current` for `field` refuses a sampled value: the column's
    /// own decoder is run over the sample, so the answer follows exactly the rules a load
    /// uses.
    fn refused_by(&self, field: &FlatField, current: PgType) -> bool {
        let table = TableSchema {
            columns: vec![field.column(current)],
        };
        let mut decoder = RecordDecoder::new(
            &table,
            DecodeOptions {
                batch_size: self.records.max(1),
                reject_unknown_fields: false,
                unknown_field_hint: String::new(),
                must_stay_null: Vec::new(),
                reject: false,
                zone: None,
                max_batch_bytes: crate::decode::MAX_BATCH_BYTES,
                plus_infinity: true,
                family: None,
            },
        );
        let at = Position { line: 1, column: 1 };
        for record in self.text.split(|&b| b == b'\n').filter(|r| !r.is_empty()) {
            if decoder.push(record, at).is_err() {
                return true;
            }
        }
        decoder.finish().is_err()
    }

    /// The table that would hold every sampled record without losing anything.
    pub fn infer(&self) -> TableSchema {
        TableSchema {
            columns: self
                .flat()
                .iter()
                .map(|f| f.column(resolve(f.kinds & !NULL).0))
                .collect(),
        }
    }

    /// Why [`Sample::infer`] gave field `name` its type, in words (`--preview`).
    pub(crate) fn rule(&self, name: &str) -> Option<&'static str> {
        Some(resolve(self.find(name)?.kinds & !NULL).1)
    }
}

/// How deep the sample reads into a record.
#[derive(Clone, Copy)]
struct Reading {
    /// Levels of objects (and, with `tables`, arrays) still to read into.
    depth: usize,
    tables: bool,
}

impl Reading {
    fn deeper(self) -> Reading {
        Reading {
            depth: self.depth - 1,
            ..self
        }
    }

    /// The fields of the object `text` (a record, or an object in one) with the kind of each
    /// value, reading nested objects (and arrays) as deep as `self` says.
    fn object(self, text: &str, out: &mut Vec<SampledField>) -> Result<(), SyntaxError> {
        scan_record::<SyntaxError>(text, |key, escaped, value| {
            let mut name = String::new();
            if escaped {
                unescape(key, &mut name);
            } else {
                name.push_str(key);
            }
            let mut field = SampledField {
                name,
                ..SampledField::default()
            };
            self.value(text, &value, &mut field)?;
            out.push(field);
            Ok(())
        })
    }

    /// Adds `value` (of `text`) to what `field` has seen.
    fn value(self, text: &str, value: &Value, field: &mut SampledField) -> Result<(), SyntaxError> {
        field.kinds |= kind_of(text, value);
        if self.depth == 0 {
            return Ok(());
        }
        match value.kind {
            Kind::Object => {
                let mut seen = Vec::new();
                self.deeper().object(value.text(text), &mut seen)?;
                merge(&mut field.fields, seen);
            }
            Kind::Array if self.tables => {
                let items = field.items.get_or_insert_with(Box::default);
                scan_elements::<SyntaxError>(text, value.start as usize, |element| {
                    self.deeper().value(text, &element, items)
                })?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Adds one record's fields to what the sample holds.
fn merge(into: &mut Vec<SampledField>, seen: Vec<SampledField>) {
    for field in seen {
        match into.iter_mut().find(|f| f.name == field.name) {
            Some(known) => {
                known.kinds |= field.kinds;
                merge(&mut known.fields, field.fields);
                match (&mut known.items, field.items) {
                    (Some(known), Some(items)) => merge_items(known, *items),
                    (known @ None, items) => *known = items,
                    (Some(_), None) => {}
                }
            }
            None => into.push(field),
        }
    }
}

fn merge_items(known: &mut SampledField, items: SampledField) {
    known.kinds |= items.kinds;
    merge(&mut known.fields, items.fields);
    if let Some(inner) = items.items {
        match &mut known.items {
            Some(k) => merge_items(k, *inner),
            None => known.items = Some(inner),
        }
    }
}

/// The integer ladder of [`Sample::widening`].
fn widening_number(kinds: u16, current: PgType) -> Option<PgType> {
    let rank = |t: PgType| match t {
        PgType::Int2 => Some(0),
        PgType::Int4 => Some(1),
        PgType::Int8 => Some(2),
        PgType::Numeric => Some(3),
        _ => None,
    };
    let kinds = kinds & !NULL;
    let numeric = INT | BIG_INT | FLOAT | BEYOND_INT2 | BEYOND_INT4 | NOT_DOUBLE;
    if kinds == 0 || kinds & !numeric != 0 {
        return None;
    }
    let needed = if kinds & (BIG_INT | FLOAT) != 0 {
        PgType::Numeric
    } else if kinds & BEYOND_INT4 != 0 {
        PgType::Int8
    } else if kinds & BEYOND_INT2 != 0 {
        PgType::Int4
    } else {
        PgType::Int2
    };
    (rank(needed)? > rank(current)?).then_some(needed)
}

/// What one value is, for inference.
fn kind_of(record: &str, value: &Value) -> u16 {
    match value.kind {
        Kind::Absent | Kind::Null => NULL,
        Kind::True | Kind::False => BOOL,
        Kind::Number => number_kind(value.text(record)),
        Kind::String => {
            let raw = value.text(record);
            let mut text = String::new();
            let text = if value.escaped {
                unescape(raw, &mut text);
                text.as_str()
            } else {
                raw
            };
            match string_shape(text) {
                StringShape::TimestampTz => TIMESTAMPTZ,
                StringShape::Timestamp => TIMESTAMP,
                StringShape::Date => DATE,
                StringShape::Other => STRING,
            }
        }
        Kind::Object => OBJECT,
        Kind::Array => ARRAY,
    }
}

/// An integer (with how wide), an integer past 64 bits, or a number with a fraction or an
/// exponent (and whether a double holds it exactly), from its JSON text.
fn number_kind(text: &str) -> u16 {
    if !text.contains(['.', 'e', 'E']) {
        let Ok(v) = text.parse::<i64>() else {
            return BIG_INT;
        };
        let mut kind = INT;
        if i16::try_from(v).is_err() {
            kind |= BEYOND_INT2;
        }
        if i32::try_from(v).is_err() {
            kind |= BEYOND_INT4;
        }
        // Beside fractions the column is a double, which must hold this integer too.
        if v.unsigned_abs() > 1 << 53 && (v as f64) as i64 != v {
            kind |= NOT_DOUBLE;
        }
        return kind;
    }
    let exact = text
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .is_some_and(|v| decimal(text) == decimal(&format!("{v:e}")));
    if exact { FLOAT } else { FLOAT | NOT_DOUBLE }
}

/// A decimal number's value in one canonical form: its sign, its significant digits (no
/// leading or trailing zeros) and the power of ten of the first one. Zero is `(false, "",
/// 0)` whatever its sign, as its value is the same.
fn decimal(text: &str) -> (bool, String, i64) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0').to_string();
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    // The first significant digit's power of ten.
    let power = int.len() as i64 - leading as i64 - 1 + exponent;
    (negative, significant, power)
}

/// The narrowest type that holds every kind seen exactly, and the rule that chose it (shown
/// by `--preview`). Mixed scalars fall back to text, which keeps each value as written;
/// anything nested makes the column jsonb.
fn resolve(kinds: u16) -> (PgType, &'static str) {
    let kinds = kinds & !(BEYOND_INT2 | BEYOND_INT4);
    if kinds & NESTED != 0 {
        return (PgType::Jsonb, "an object or array was seen");
    }
    let numbers = INT | BIG_INT | FLOAT | NOT_DOUBLE;
    match kinds {
        0 => (
            PgType::Text,
            "only nulls were seen; text takes any value later",
        ),
        BOOL => (PgType::Bool, "only true and false"),
        k if k & !(INT | NOT_DOUBLE) == 0 => (PgType::Int8, "integers within 64 bits"),
        k if k & !numbers == 0 && k & (BIG_INT | NOT_DOUBLE) == 0 => (
            PgType::Float8,
            "numbers with a fraction or exponent, each held exactly by a double",
        ),
        k if k & !numbers == 0 && k & BIG_INT != 0 => (PgType::Numeric, "an integer past 64 bits"),
        k if k & !numbers == 0 => (
            PgType::Numeric,
            "a number a double cannot hold exactly (digits would be lost)",
        ),
        TIMESTAMPTZ => (PgType::Timestamptz, "timestamps with a UTC offset"),
        TIMESTAMP => (PgType::Timestamp, "timestamps without an offset"),
        DATE => (PgType::Date, "dates (YYYY-MM-DD)"),
        STRING => (PgType::Text, "strings"),
        _ => (
            PgType::Text,
            "values of different kinds; text keeps each as written",
        ),
    }
}

pub(crate) mod family;

#[cfg(test)]
mod tests;
