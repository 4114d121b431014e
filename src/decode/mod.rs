//! JSON records → Arrow record batches typed for the target table.
//!
//! Pure and synchronous: [`Framer`] turns bytes into records with their positions;
//! [`RecordDecoder`] scans each record as it arrives ([`scan`]: strict RFC 8259, one pass,
//! no value copied) into the current batch, and when the batch is full builds one Arrow
//! array per column ([`columns`]), typed for the target's PostgreSQL column.
//!
//! Errors name the record, its line and column, and the value. A record that is not valid
//! JSON is refused when it arrives; a value its column cannot take is found when the batch
//! is built. In reject mode (`--on-error reject`) either kind of record is set aside with its
//! reason and the rest of the batch goes on.

pub(crate) mod columns;
mod error;
pub mod family;
mod fields;
pub(crate) mod framing;
pub(crate) mod infer;
mod layout;
pub(crate) mod parallel;
pub(crate) mod pointer;
pub(crate) mod scan;
mod settings;
pub(crate) mod values;

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;

pub use error::DecodeError;
pub(crate) use framing::LineStart;
pub use framing::{Format, Framer, Position};
pub use infer::Sample;
pub use parallel::Decoder;
pub(crate) use settings::DecodeSettings;
pub use values::SessionZone;

use crate::schema::{PgType, TableSchema};
use fields::syntax;
use layout::Layout;
use scan::{SyntaxError, Value};

/// A decoded batch and the number of its first record in the whole input.
#[derive(Debug)]
pub struct Decoded {
    pub batch: RecordBatch,
    pub first_record: u64,
    /// Each row's record number, when rejected records left gaps (reject mode).
    pub record_numbers: Option<Vec<u64>>,
    /// Records set aside in reject mode.
    pub(crate) rejected: Vec<Rejected>,
    /// `--nested tables`: each child table's rows of the batch's records, in the order of
    /// [`family::FamilySpec::children`].
    pub children: Vec<family::ChildBatch>,
}

impl Decoded {
    /// The record number of row `row` of the batch.
    pub(crate) fn record_of(&self, row: usize) -> u64 {
        match &self.record_numbers {
            Some(numbers) => numbers.get(row).copied().unwrap_or(self.first_record),
            None => self.first_record + row as u64,
        }
    }

    /// Renumbers the batch's records as `lines` lines and `records` records further into the
    /// input (see [`DecodeError::shift`]).
    pub(crate) fn shift(&mut self, lines: u64, records: u64) {
        self.first_record += records;
        for number in self.record_numbers.iter_mut().flatten() {
            *number += records;
        }
        for rejected in &mut self.rejected {
            rejected.record += records;
            rejected.line += lines;
            rejected.error.shift(lines, records);
        }
    }
}

/// A record set aside by `--on-error reject`, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub record: u64,
    pub line: u64,
    /// Why (its `Display` is the reason the reject file gives).
    pub error: DecodeError,
    /// The record as it was in the input.
    pub text: String,
}

/// How the decoder treats records.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub batch_size: usize,
    /// Fail on a field that has no column (otherwise such fields are dropped).
    pub reject_unknown_fields: bool,
    /// Completes "field "x" …" when `reject_unknown_fields` fails, saying why the field has no
    /// column and what to do.
    pub unknown_field_hint: String,
    /// Columns that must stay NULL, with the hint to give when one does not. They are the
    /// columns left out of the COPY so their defaults apply; a value for one would be lost.
    pub must_stay_null: Vec<(usize, String)>,
    /// Set records that fail aside (in [`Decoded::rejected`]) instead of failing.
    pub reject: bool,
    /// The session's TimeZone, for timestamps without an offset into timestamptz columns
    /// (`None`: UTC).
    pub zone: Option<SessionZone>,
    /// The most bytes of input one batch holds ([`MAX_BATCH_BYTES`]).
    pub max_batch_bytes: usize,
    /// `+infinity` is a date and a timestamp, as the target server reads it (PostgreSQL 16
    /// and later); else it is refused, as PostgreSQL 15 refuses it.
    pub plus_infinity: bool,
    /// `--nested tables`: the child tables each record's arrays fill.
    pub family: Option<Arc<family::FamilySpec>>,
}

/// The most bytes of input one batch holds. Text and bytea columns are Arrow arrays with
/// 32-bit offsets (2 GiB), and a column's text is never longer than the input it came
/// from, so a batch that reaches this is built early, whatever `batch_size` says.
pub(crate) const MAX_BATCH_BYTES: usize = 512 << 20;

/// The JSON text a load's batch holds at most, whatever `batch_size` says. A batch is
/// decoded one column after another, each pass reading the records' text again: text that
/// fits in a core's cache is read from there (the criterion decode bench, 400-byte records:
/// 480 MiB/s with 8,192-record batches of 3.2 MiB, 520–539 MiB/s at 1 MiB).
pub const LOAD_BATCH_BYTES: usize = 1 << 20;

/// A record of the batch being built.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// Where the record starts and ends in the batch's input.
    start: usize,
    end: usize,
    at: Position,
    record: u64,
}

/// Decodes records into batches for one target schema. See the module docs.
pub struct RecordDecoder {
    schema: SchemaRef,
    types: Vec<PgType>,
    /// The keys of the record (and of flattened objects) and the slot each goes to.
    layout: Layout,
    options: DecodeOptions,
    /// The batch's records, one after another, each checked to be UTF-8 once as it comes
    /// in: values are then slices of it, with no further check.
    input: String,
    /// Row-major values: `values[row * width + slot]`, a slot per column, then one per
    /// flattened object ([`Layout`]).
    values: Vec<Value>,
    rows: Vec<Row>,
    /// Records set aside since the last batch was handed out (reject mode).
    rejected: Vec<Rejected>,
    /// The number the next record gets.
    next_record: u64,
    key_scratch: String,
    /// `--nested tables`: the child tables' rows of the batch.
    family: Option<family::FamilyRows>,
}

impl RecordDecoder {
    pub(crate) fn new(table: &TableSchema, options: DecodeOptions) -> RecordDecoder {
        let (layout, family) = match &options.family {
            Some(spec) => (
                spec.root_layout(table),
                Some(family::FamilyRows::new(spec.clone())),
            ),
            None => (Layout::new(table), None),
        };
        RecordDecoder {
            schema: table.arrow_schema(),
            types: table.pg_types(),
            layout,
            family,
            options,
            input: String::new(),
            values: Vec::new(),
            rows: Vec::new(),
            rejected: Vec::new(),
            next_record: 1,
            key_scratch: String::new(),
        }
    }

    /// Takes one record (one complete JSON value), returning a batch when it fills up.
    ///
    /// # Errors
    /// Malformed JSON, or (when a batch completes) a value that does not fit its column, for
    /// the first such record; in reject mode neither, as such records are set aside.
    pub(crate) fn push(
        &mut self,
        record: &[u8],
        at: Position,
    ) -> Result<Option<Decoded>, DecodeError> {
        let number = self.next_record;
        self.next_record += 1;
        match self.scan(record, at, number) {
            Ok(()) => {}
            Err(error) if self.options.reject => self.reject(error, record),
            Err(error) => return Err(error),
        }
        if self.rows.len() >= self.options.batch_size
            || self.input.len() >= self.options.max_batch_bytes
        {
            return self.flush();
        }
        Ok(None)
    }

    /// Empties the decoder (whatever a failed record left in it) and numbers the next record
    /// `record`: a worker of [`ParallelDecoder`] starting a job.
    pub(crate) fn reset(&mut self, record: u64) {
        self.input.clear();
        self.values.clear();
        self.rows.clear();
        self.rejected.clear();
        if let Some(family) = &mut self.family {
            family.clear();
        }
        self.next_record = record;
    }

    /// The number of the last record taken (records are numbered from 1, or from where
    /// [`RecordDecoder::reset`] said).
    pub(crate) fn last_record(&self) -> u64 {
        self.next_record - 1
    }

    /// Returns the last, partly filled batch, if any record is left (or was set aside).
    ///
    /// # Errors
    /// As for [`RecordDecoder::push`].
    pub(crate) fn finish(&mut self) -> Result<Option<Decoded>, DecodeError> {
        self.flush()
    }

    /// The error to report when a record fails with `error`: a record before it in the
    /// batch may hold a value its column refuses, found only when the batch is built, so
    /// the batch is built now (and dropped) and the error on the earlier line wins.
    pub(crate) fn earliest_error(&mut self, error: DecodeError) -> DecodeError {
        match self.flush() {
            Err(earlier) if earlier.line() > 0 && earlier.line() < error.line() => earlier,
            _ => error,
        }
    }

    /// Scans one record into the batch: its bytes, and each column's value.
    fn scan(&mut self, record: &[u8], at: Position, number: u64) -> Result<(), DecodeError> {
        if record.is_empty() {
            // The framer's stand-in for a record too long to keep.
            return Err(DecodeError::Oversized {
                line: at.line,
                record: number,
            });
        }
        // simdutf8 checks a record in a fraction of the time std takes on non-ASCII text;
        // only a failure asks std where the bad byte is.
        let text = match simdutf8::basic::from_utf8(record) {
            Ok(text) => text,
            Err(_) => {
                let offset = std::str::from_utf8(record).map_or_else(|e| e.valid_up_to(), |_| 0);
                return Err(syntax(
                    record,
                    at,
                    number,
                    &SyntaxError {
                        offset,
                        message: format!("invalid UTF-8 (byte 0x{:02x})", record[offset]),
                    },
                ));
            }
        };
        // What `take` does, written out here: on the one-thread path (the common one) the
        // decode bench measured routing it through `take` 3% slower, however inlined.
        let columns = self.layout.width;
        let start = self.input.len();
        let row = self.rows.len();
        self.input.push_str(text);
        let end = self.input.len();
        self.values.resize((row + 1) * columns, Value::default());
        let result = self.fields(start, end, row, number, at);
        match result {
            Ok(()) => {
                self.rows.push(Row {
                    start,
                    end,
                    at,
                    record: number,
                });
                Ok(())
            }
            Err(error) => {
                self.input.truncate(start);
                self.values.truncate(row * columns);
                Err(error)
            }
        }
    }

    /// Scans the record at `start..end` of the batch's input into a new row (a job's
    /// record, already in the input).
    fn take(
        &mut self,
        start: usize,
        end: usize,
        at: Position,
        number: u64,
    ) -> Result<(), DecodeError> {
        let columns = self.layout.width;
        let row = self.rows.len();
        self.values.resize((row + 1) * columns, Value::default());
        match self.fields(start, end, row, number, at) {
            Ok(()) => {
                self.rows.push(Row {
                    start,
                    end,
                    at,
                    record: number,
                });
                Ok(())
            }
            Err(error) => {
                self.values.truncate(row * columns);
                Err(error)
            }
        }
    }

    /// Decodes one job of [`ParallelDecoder`] into one batch: records one after another in
    /// `text`, each ending where `records` says, numbered from `first_record`. The job's
    /// text is checked to be UTF-8 in one pass (simdutf8: std's check took a sixth of a
    /// worker's time) and becomes the batch's input with one copy, instead of record by
    /// record; text that is not UTF-8 goes record by record, so that the bad record is named.
    ///
    /// # Errors
    /// As [`RecordDecoder::push`].
    pub(crate) fn decode_job(
        &mut self,
        text: &[u8],
        records: &[(usize, Position)],
        first_record: u64,
    ) -> Result<Vec<Decoded>, DecodeError> {
        self.reset(first_record);
        let mut decoded = Vec::new();
        let Ok(job) = simdutf8::basic::from_utf8(text) else {
            let mut start = 0;
            for &(end, at) in records {
                match self.push(&text[start..end], at) {
                    Ok(batch) => decoded.extend(batch),
                    Err(error) => return Err(self.earliest_error(error)),
                }
                start = end;
            }
            decoded.extend(self.finish()?);
            return Ok(decoded);
        };
        self.input.push_str(job);
        let mut start = 0;
        for &(end, at) in records {
            let number = self.next_record;
            self.next_record += 1;
            let taken = if end == start {
                // The framer's stand-in for a record too long to keep.
                Err(DecodeError::Oversized {
                    line: at.line,
                    record: number,
                })
            } else {
                self.take(start, end, at, number)
            };
            match taken {
                Ok(()) => {}
                Err(error) if self.options.reject => {
                    let record = self.input.as_bytes()[start..end].to_vec();
                    self.reject(error, &record);
                }
                Err(error) => return Err(self.earliest_error(error)),
            }
            start = end;
        }
        decoded.extend(self.flush()?);
        Ok(decoded)
    }

    /// Matches the fields of the record at `start..end` to columns, filling row `row`: the
    /// record's own fields, then those of each flattened object in it.
    fn fields(
        &mut self,
        start: usize,
        end: usize,
        row: usize,
        number: u64,
        at: Position,
    ) -> Result<(), DecodeError> {
        let width = self.layout.width;
        let object = fields::Object {
            input: &self.input,
            start,
            end,
            number,
            at,
        };
        let row_values = &mut self.values[row * width..(row + 1) * width];
        fields::fill_row(
            &mut self.layout,
            &object,
            row_values,
            &mut self.key_scratch,
            &self.options,
        )?;
        match &mut self.family {
            None => Ok(()),
            Some(family) => family.add_record(
                &object,
                row_values,
                &self.layout.arrays,
                row as u32,
                &mut self.key_scratch,
                &self.options,
            ),
        }
    }

    /// Sets a record aside (reject mode).
    fn reject(&mut self, error: DecodeError, record: &[u8]) {
        self.rejected.push(Rejected {
            record: error.record().unwrap_or(self.next_record - 1),
            line: error.line(),
            error,
            text: String::from_utf8_lossy(record).into_owned(),
        });
    }

    /// Builds the batch: one array per column. A value that does not fit fails the load, for
    /// the earliest record (and leftmost column) with one; in reject mode such records are
    /// set aside and the batch is built from the others.
    fn flush(&mut self) -> Result<Option<Decoded>, DecodeError> {
        if self.rows.is_empty() && self.rejected.is_empty() {
            return Ok(None);
        }
        let (mut arrays, mut bad) = self.build_columns();
        let mut elements = Vec::new();
        if let Some(family) = &self.family {
            let dates = columns::DateRules {
                zone: self.options.zone.as_ref(),
                plus_infinity: self.options.plus_infinity,
            };
            let rows = &self.rows;
            let record = |root: usize| (rows[root].at.line, rows[root].record);
            let (built, child_bad) = family.build(&self.input, &dates, &record);
            elements = built;
            bad.extend(child_bad);
        }
        if let Some((column, ids)) = self.options.family.as_ref().and_then(|f| f.generated_id) {
            arrays[column] = family::generated_ids(&ids, self.rows.iter().map(|r| r.record));
        }
        // Errors in row order, and within a row in column order (the order found), a
        // record's own columns before its child tables'.
        bad.sort_by_key(|(row, _)| *row);
        if !self.options.reject && !bad.is_empty() {
            return Err(bad.swap_remove(0).1);
        }
        let internal = |e: arrow_schema::ArrowError| DecodeError::Structure {
            line: 0,
            message: format!("internal error: {e}"),
        };
        let mut batch =
            RecordBatch::try_new(self.schema.clone(), arrays.clone()).map_err(internal)?;
        let mut numbers: Vec<u64> = self.rows.iter().map(|r| r.record).collect();
        let keep = (!bad.is_empty()).then(|| self.set_aside(bad));
        if let Some(keep) = &keep {
            let mask = BooleanArray::from(keep.clone());
            batch = arrow_select::filter::filter_record_batch(&batch, &mask).map_err(internal)?;
            numbers = numbers
                .into_iter()
                .zip(keep)
                .filter_map(|(n, k)| k.then_some(n))
                .collect();
        }
        let records: Vec<u64> = match &self.family {
            Some(_) => self.rows.iter().map(|r| r.record).collect(),
            None => Vec::new(),
        };
        let children = match &mut self.family {
            Some(family) => family
                .finish(&arrays, elements, keep.as_deref(), &records)
                .map_err(internal)?,
            None => Vec::new(),
        };
        let mut rejected = std::mem::take(&mut self.rejected);
        rejected.sort_by_key(|r| r.record);
        let first_record = numbers.first().copied().unwrap_or(self.next_record);
        let contiguous = numbers.windows(2).all(|w| w[1] == w[0] + 1);
        self.input.clear();
        self.values.clear();
        self.rows.clear();
        Ok(Some(Decoded {
            batch,
            first_record,
            record_numbers: (!contiguous).then_some(numbers),
            rejected,
            children,
        }))
    }

    /// Each column's array, and the values that did not fit (with their rows), including
    /// values in columns that must stay NULL.
    fn build_columns(&self) -> (Vec<ArrayRef>, Vec<(usize, DecodeError)>) {
        let batch = columns::Batch {
            input: &self.input,
            values: &self.values,
            columns: self.layout.width,
            rows: self.rows.len(),
        };
        let mut bad: Vec<(usize, DecodeError)> = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.types.len());
        for (column, &pg_type) in self.types.iter().enumerate() {
            let mut errors = Vec::new();
            let dates = columns::DateRules {
                zone: self.options.zone.as_ref(),
                plus_infinity: self.options.plus_infinity,
            };
            let array = columns::decode_column(pg_type, &batch, column, &dates, &mut errors);
            for (row, reason) in errors {
                let r = self.rows[row];
                bad.push((
                    row,
                    DecodeError::Value {
                        line: r.at.line,
                        record: r.record,
                        column: self.schema.field(column).name().clone(),
                        reason,
                    },
                ));
            }
            arrays.push(array);
        }
        for (column, hint) in &self.options.must_stay_null {
            let array = &arrays[*column];
            if array.null_count() == array.len() {
                continue;
            }
            for row in (0..array.len()).filter(|&r| array.is_valid(r)) {
                let r = self.rows[row];
                bad.push((
                    row,
                    DecodeError::UnknownField {
                        line: r.at.line,
                        record: r.record,
                        field: self.schema.field(*column).name().clone(),
                        hint: hint.clone(),
                    },
                ));
            }
        }
        (arrays, bad)
    }

    /// Sets the rows of `bad` aside (each once, with its first error); which rows stay.
    fn set_aside(&mut self, bad: Vec<(usize, DecodeError)>) -> Vec<bool> {
        let mut keep = vec![true; self.rows.len()];
        for (row, error) in bad {
            if !keep[row] {
                continue;
            }
            keep[row] = false;
            let r = self.rows[row];
            self.rejected.push(Rejected {
                record: r.record,
                line: r.at.line,
                error,
                text: self
                    .input
                    .get(r.start..r.end)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        keep
    }
}

#[cfg(test)]
mod tests;
