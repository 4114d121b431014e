//! How the scanner hands a record's fields to the decoder: each key matched to its column
//! (guessing the next column from the last, as records list fields in one order), each value
//! written straight into its row's slot.

use super::framing::Position;
use super::layout::Layout;
use super::scan::{self, Kind, SyntaxError, Value};
use super::{DecodeError, DecodeOptions};

/// An object in a batch's input whose fields fill a row: a record, or an element of an
/// array read into a child table.
pub(super) struct Object<'a> {
    pub input: &'a str,
    pub start: usize,
    pub end: usize,
    /// The record it is (or is in), and where that record starts.
    pub number: u64,
    pub at: Position,
}

/// Matches the fields of `object` to the slots of `values` (one row) as `layout` says: the
/// object's own fields, then those of each flattened object in it.
pub(super) fn fill_row(
    layout: &mut Layout,
    object: &Object<'_>,
    values: &mut [Value],
    scratch: &mut String,
    options: &DecodeOptions,
) -> Result<(), DecodeError> {
    let Object {
        input,
        start,
        end,
        number,
        at,
    } = *object;
    let unknown = |field| DecodeError::UnknownField {
        line: at.line,
        record: number,
        field,
        hint: options.unknown_field_hint.clone(),
    };
    for node in &mut layout.nodes {
        let from = match &node.object {
            None => start,
            Some(object) => {
                let value = values[object.slot];
                if let Some(column) = object.also_column {
                    values[column] = value;
                }
                match value.kind {
                    Kind::Object => value.start as usize,
                    Kind::Absent | Kind::Null => continue,
                    _ if object.also_column.is_some() => continue,
                    found => {
                        return Err(DecodeError::NotObject {
                            line: at.line,
                            record: number,
                            field: object.path.clone(),
                            columns: object.path.replace('.', "__"),
                            found: kind_words(found),
                        });
                    }
                }
            }
        };
        let mut row_fields = RowFields {
            keys: &node.keys,
            quoted_keys: &node.quoted_keys,
            slots: node.slots.as_deref(),
            values,
            guess: &mut node.guess,
            scratch,
            reject_unknown: options.reject_unknown_fields,
            prefix: node
                .object
                .as_ref()
                .map_or(layout.prefix.as_str(), |o| o.prefix.as_str()),
            spare: Value::default(),
            unknown: None,
        };
        let text = match &node.object {
            None => &input[..end],
            Some(object) => &input[..row_fields.values[object.slot].end as usize],
        };
        match scan::scan_fields(text, from, &mut row_fields) {
            Ok(()) => {
                if let Some(field) = row_fields.unknown.take() {
                    return Err(unknown(field));
                }
            }
            Err(FieldError::Syntax(mut e)) => {
                e.offset += from - start;
                let record = &input.as_bytes()[start..end];
                return Err(syntax(record, at, number, &e));
            }
        }
    }
    Ok(())
}

/// One object's fields (the record's, or a flattened object's) matched to the slots of
/// its row.
pub(super) struct RowFields<'a> {
    pub(super) keys: &'a [Box<[u8]>],
    pub(super) quoted_keys: &'a [Option<Box<[u8]>>],
    /// The slot of each key ([`super::layout::Node::slots`]; `None`: key `i`, slot `i`).
    pub(super) slots: Option<&'a [u32]>,
    pub(super) values: &'a mut [Value],
    /// The key the next field most likely has: records usually list their fields in the
    /// same order, so matching starts where the last key matched.
    pub(super) guess: &'a mut usize,
    pub(super) scratch: &'a mut String,
    pub(super) reject_unknown: bool,
    /// The object's path and a dot, naming an unknown field in it (empty for the record).
    pub(super) prefix: &'a str,
    /// Where the value of a field no column takes is scanned to (and dropped).
    pub(super) spare: Value,
    /// A field no column takes, in a load that refuses such fields.
    pub(super) unknown: Option<String>,
}

impl RowFields<'_> {
    /// The slot of key `index`'s value (a key given twice: the last value wins, as in
    /// PostgreSQL); the next key is guessed to be the next one.
    fn slot(&mut self, index: usize) -> &mut Value {
        *self.guess = if index + 1 == self.keys.len() {
            0
        } else {
            index + 1
        };
        let slot = match self.slots {
            Some(slots) => slots[index] as usize,
            None => index,
        };
        &mut self.values[slot]
    }
}

impl scan::Fields for RowFields<'_> {
    type Error = FieldError;

    fn likely_key(&self) -> Option<&[u8]> {
        self.quoted_keys.get(*self.guess)?.as_deref()
    }

    fn likely(&mut self) -> &mut Value {
        self.slot(*self.guess)
    }

    fn field(&mut self, key: &str, escaped: bool) -> &mut Value {
        let key: &[u8] = if escaped {
            self.scratch.clear();
            scan::unescape(key, self.scratch);
            self.scratch.as_bytes()
        } else {
            key.as_bytes()
        };
        // From the guess on, then from the first column: no division per key.
        let guess = (*self.guess).min(self.keys.len());
        let (earlier, later) = self.keys.split_at(guess);
        let found = later
            .iter()
            .position(|k| **k == *key)
            .map(|i| guess + i)
            .or_else(|| earlier.iter().position(|k| **k == *key));
        match found {
            Some(column) => self.slot(column),
            None => {
                if self.reject_unknown && self.unknown.is_none() {
                    let key = String::from_utf8_lossy(key);
                    self.unknown = Some(format!("{}{key}", self.prefix));
                }
                &mut self.spare
            }
        }
    }

    /// An unknown field is reported once the whole object is read (by [`fill_row`]): a
    /// record that is not JSON at all is named as such, not by its first field.
    fn filled(&mut self, _: Option<(&str, bool)>) -> Result<(), FieldError> {
        Ok(())
    }
}

/// Why the record scanner stopped.
pub(super) enum FieldError {
    Syntax(SyntaxError),
}

/// The kind of a JSON value in words, for messages.
pub(super) fn kind_words(kind: scan::Kind) -> &'static str {
    match kind {
        scan::Kind::Absent => "absent",
        scan::Kind::Null => "null",
        scan::Kind::True | scan::Kind::False => "a boolean",
        scan::Kind::Number => "a number",
        scan::Kind::String => "a string",
        scan::Kind::Object => "an object",
        scan::Kind::Array => "an array",
    }
}

impl From<SyntaxError> for FieldError {
    fn from(e: SyntaxError) -> FieldError {
        FieldError::Syntax(e)
    }
}

/// `key` followed by a quote, as the record would write it, when it can be written without
/// escapes (no quote, backslash or control character in it).
pub(super) fn quoted_key(key: &str) -> Option<Box<[u8]>> {
    if key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        return None;
    }
    Some(format!("{key}\"").into_bytes().into_boxed_slice())
}

/// A syntax error at a byte offset of a record that starts at `at`, as line and column.
pub(super) fn syntax(record: &[u8], at: Position, number: u64, error: &SyntaxError) -> DecodeError {
    let before = &record[..error.offset.min(record.len())];
    let newlines = memchr::memchr_iter(b'\n', before).count() as u64;
    let column = match memchr::memrchr(b'\n', before) {
        Some(last) => before.len() - last,
        None => at.column as usize + before.len(),
    };
    DecodeError::Syntax {
        line: at.line + newlines,
        column: column as u64,
        record: number,
        message: error.message.clone(),
    }
}
