//! How the scanner hands a record's fields to the decoder: each key matched to its column
//! (guessing the next column from the last, as records list fields in one order), each value
//! written straight into its row's slot.

use super::DecodeError;
use super::framing::Position;
use super::scan::{self, SyntaxError, Value};

/// One record's fields matched to the columns of its row.
pub(super) struct RowFields<'a> {
    pub(super) keys: &'a [Box<[u8]>],
    pub(super) quoted_keys: &'a [Option<Box<[u8]>>],
    pub(super) values: &'a mut [Value],
    /// The column the next key most likely names: records usually list their fields in the
    /// same order, so matching starts where the last key matched.
    pub(super) guess: &'a mut usize,
    pub(super) scratch: &'a mut String,
    pub(super) reject_unknown: bool,
    /// Where the value of a field no column takes is scanned to (and dropped).
    pub(super) spare: Value,
    /// A field no column takes, in a load that refuses such fields.
    pub(super) unknown: Option<String>,
}

impl RowFields<'_> {
    /// The slot of `column`'s value (a key given twice: the last value wins, as in
    /// PostgreSQL); the next key is guessed to be the next column's.
    fn slot(&mut self, column: usize) -> &mut Value {
        *self.guess = if column + 1 == self.keys.len() {
            0
        } else {
            column + 1
        };
        &mut self.values[column]
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
                if self.reject_unknown {
                    self.unknown = Some(String::from_utf8_lossy(key).into_owned());
                }
                &mut self.spare
            }
        }
    }

    fn filled(&mut self, _: Option<(&str, bool)>) -> Result<(), FieldError> {
        match self.unknown.take() {
            Some(field) => Err(FieldError::Unknown(field)),
            None => Ok(()),
        }
    }
}

/// Why the record scanner stopped.
pub(super) enum FieldError {
    Syntax(SyntaxError),
    Unknown(String),
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
