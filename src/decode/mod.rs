//! JSON records → Arrow record batches typed for the target table.
//!
//! Pure and synchronous, in the shape of arrow-json's own push decoder: [`Framer`] turns
//! bytes into records with their positions, [`RecordDecoder`] feeds each record to
//! arrow-json's `Decoder` (with this crate's column decoders, see [`columns`]) and hands back a
//! [`Decoded`] batch whenever one fills up.
//!
//! Errors must say which record failed. arrow-json decodes a whole batch at once, so when a
//! batch fails the decoder replays that batch's records one by one to find the first bad one;
//! the records of the current batch are kept for exactly that purpose.

pub mod columns;
pub mod framing;
pub mod infer;
pub mod pointer;
pub mod values;

use arrow_array::{Array, RecordBatch};
use arrow_json::ReaderBuilder;
use arrow_schema::{ArrowError, SchemaRef};
use std::sync::Arc;

pub use framing::{Format, Framer, Position};
pub use infer::Sample;

use crate::schema::TableSchema;

/// Why the input could not be decoded. Positions are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the input is not JSON (it looks like {looks_like}): {start}")]
    NotJson {
        looks_like: &'static str,
        start: String,
    },
    #[error("line {line}: {message}")]
    Structure { line: u64, message: String },
    #[error("line {line}: a record is longer than the limit of {limit} bytes")]
    RecordTooLarge { line: u64, limit: usize },
    #[error(
        "the document is larger than the limit of {limit} bytes (raise --max-record-bytes, or ask the API for smaller pages)"
    )]
    DocumentTooLarge { limit: usize },
    #[error("line {line}, column {column} (record {record}): malformed JSON: {message}")]
    Syntax {
        line: u64,
        column: u64,
        record: u64,
        message: String,
    },
    #[error("line {line} (record {record}): {message}")]
    NotOneRecord {
        line: u64,
        record: u64,
        message: &'static str,
    },
    #[error("line {line} (record {record}): column {column:?}: {reason}")]
    Value {
        line: u64,
        record: u64,
        column: String,
        reason: String,
    },
    #[error("line {line} (record {record}): {reason}")]
    Record {
        line: u64,
        record: u64,
        reason: String,
    },
    #[error("line {line} (record {record}): field {field:?} {hint}")]
    UnknownField {
        line: u64,
        record: u64,
        field: String,
        hint: String,
    },
}

impl DecodeError {
    /// The number of the record the error is about, when it is about one.
    pub fn record(&self) -> Option<u64> {
        match self {
            DecodeError::Syntax { record, .. }
            | DecodeError::NotOneRecord { record, .. }
            | DecodeError::Value { record, .. }
            | DecodeError::Record { record, .. }
            | DecodeError::UnknownField { record, .. } => Some(*record),
            _ => None,
        }
    }
}

/// A decoded batch and the number of its first record in the whole input.
#[derive(Debug)]
pub struct Decoded {
    pub batch: RecordBatch,
    pub first_record: u64,
    /// Each row's record number, when rejected records left gaps (reject mode).
    pub record_numbers: Option<Vec<u64>>,
    /// Records set aside in reject mode.
    pub rejected: Vec<Rejected>,
}

impl Decoded {
    /// The record number of row `row` of the batch.
    pub fn record_of(&self, row: usize) -> u64 {
        match &self.record_numbers {
            Some(numbers) => numbers.get(row).copied().unwrap_or(self.first_record),
            None => self.first_record + row as u64,
        }
    }
}

/// A record set aside by `--on-error reject`, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub record: u64,
    pub line: u64,
    pub reason: String,
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
}

/// Decodes records into batches for one target schema. See the module docs.
pub struct RecordDecoder {
    json: arrow_json::reader::Decoder,
    schema: SchemaRef,
    options: DecodeOptions,
    /// Records of the batch being built, kept to find the bad one if the batch fails.
    batch_bytes: Vec<u8>,
    batch_records: Vec<(usize, Position)>,
    /// Records handed out in earlier batches.
    records_done: u64,
}

fn json_decoder(
    schema: &SchemaRef,
    batch_size: usize,
    strict: bool,
) -> Result<arrow_json::reader::Decoder, ArrowError> {
    ReaderBuilder::new(schema.clone())
        .with_batch_size(batch_size)
        .with_strict_mode(strict)
        .with_decoder_factory(Arc::new(columns::PgDecoderFactory))
        .build_decoder()
}

impl RecordDecoder {
    /// # Panics
    /// If the schema has a type arrow-json cannot build a decoder for; every [`TableSchema`]
    /// type is covered by [`columns::PgDecoderFactory`].
    pub fn new(table: &TableSchema, options: DecodeOptions) -> RecordDecoder {
        let schema = table.arrow_schema();
        // One row of slack: a batch of exactly `batch_size` records must decode in one call
        // even when something in it is off, so that the count check catches it.
        let json = json_decoder(
            &schema,
            options.batch_size + 1,
            options.reject_unknown_fields,
        )
        .expect("every PgType has a column decoder");
        RecordDecoder {
            json,
            schema,
            options,
            batch_bytes: Vec::new(),
            batch_records: Vec::new(),
            records_done: 0,
        }
    }

    /// Takes one record (one complete JSON value), returning a batch when it fills up.
    ///
    /// # Errors
    /// When a batch completes: malformed JSON, a line that is not exactly one value, or a
    /// value that does not fit its column, for the first such record.
    pub fn push(&mut self, record: &[u8], at: Position) -> Result<Option<Decoded>, DecodeError> {
        self.batch_records.push((self.batch_bytes.len(), at));
        self.batch_bytes.extend_from_slice(record);
        // Ends a bare number and keeps two records from running into each other.
        self.batch_bytes.push(b'\n');
        if self.batch_records.len() >= self.options.batch_size {
            return self.flush();
        }
        Ok(None)
    }

    /// Returns the last, partly filled batch.
    ///
    /// # Errors
    /// As for [`RecordDecoder::push`].
    pub fn finish(&mut self) -> Result<Option<Decoded>, DecodeError> {
        self.flush()
    }

    /// Decodes the batch's records in one call: arrow-json is fastest on one long buffer.
    /// Anything unexpected sends the batch to [`RecordDecoder::locate`], which replays it
    /// record by record to say exactly what went wrong where.
    fn flush(&mut self) -> Result<Option<Decoded>, DecodeError> {
        let records = self.batch_records.len();
        if records == 0 {
            return Ok(None);
        }
        let json = &mut self.json;
        let decoded = json.decode(&self.batch_bytes).and_then(|consumed| {
            let whole = consumed == self.batch_bytes.len()
                && !json.has_partial_record()
                && json.len() == records;
            if whole { json.flush() } else { Ok(None) }
        });
        let (batch, record_numbers, rejected) = match decoded {
            Ok(Some(batch)) if batch.num_rows() == records => (batch, None, Vec::new()),
            _ if self.options.reject => {
                let (batch, numbers, rejected) = self.partition()?;
                (batch, Some(numbers), rejected)
            }
            Ok(_) => return Err(self.locate(None)),
            Err(e) => return Err(self.locate(Some(e))),
        };
        for (column, hint) in &self.options.must_stay_null {
            let array = batch.column(*column);
            if array.null_count() != array.len()
                && let Some(row) = (0..array.len()).find(|&r| array.is_valid(r))
            {
                return Err(DecodeError::UnknownField {
                    line: self.batch_records[row].1.line,
                    record: self.records_done + row as u64 + 1,
                    field: self.schema.field(*column).name().clone(),
                    hint: hint.clone(),
                });
            }
        }
        let first_record = self.records_done + 1;
        self.records_done += records as u64;
        self.batch_bytes.clear();
        self.batch_records.clear();
        Ok(Some(Decoded {
            batch,
            first_record,
            record_numbers,
            rejected,
        }))
    }

    /// The bytes of record `i` of the batch (with its trailing newline) and where it starts.
    fn batch_record(&self, i: usize) -> (&[u8], Position) {
        let (start, at) = self.batch_records[i];
        let end = self
            .batch_records
            .get(i + 1)
            .map_or(self.batch_bytes.len(), |(next, _)| *next);
        (&self.batch_bytes[start..end], at)
    }

    /// Decodes record `i` of the batch on its own: what, if anything, is wrong with it.
    fn check_record(&self, i: usize) -> Result<(), DecodeError> {
        let record_no = self.records_done + i as u64 + 1;
        let (with_newline, at) = self.batch_record(i);
        let record = &with_newline[..with_newline.len() - 1];
        // Room for two rows, so a line holding two values shows as two.
        let mut single = json_decoder(&self.schema, 2, self.options.reject_unknown_fields)
            .map_err(|e| self.value_error(e, record_no, at))?;
        single
            .decode(with_newline)
            .map_err(|e| syntax_error(e, record, at, record_no))?;
        if single.has_partial_record() {
            return Err(DecodeError::NotOneRecord {
                line: at.line,
                record: record_no,
                message: "the JSON value does not end with its line; NDJSON needs one complete value per line",
            });
        }
        if single.len() != 1 {
            return Err(DecodeError::NotOneRecord {
                line: at.line,
                record: record_no,
                message: "more than one JSON value on one line",
            });
        }
        single
            .flush()
            .map(|_| ())
            .map_err(|e| self.value_error(e, record_no, at))
    }

    /// Finds the first record of the failed batch that fails on its own, and says why.
    fn locate(&self, batch_error: Option<ArrowError>) -> DecodeError {
        if let Some(error) = (0..self.batch_records.len()).find_map(|i| self.check_record(i).err())
        {
            return error;
        }
        let at = self
            .batch_records
            .first()
            .map_or(Position { line: 0, column: 0 }, |r| r.1);
        let error = batch_error.unwrap_or_else(|| {
            ArrowError::JsonError("the batch did not decode as its records did".into())
        });
        self.value_error(error, self.records_done + 1, at)
    }

    /// Reject mode: sets the bad records of the failed batch aside and decodes the rest.
    fn partition(&mut self) -> Result<(RecordBatch, Vec<u64>, Vec<Rejected>), DecodeError> {
        let mut rejected = Vec::new();
        let mut good_bytes = Vec::with_capacity(self.batch_bytes.len());
        let mut good_numbers = Vec::new();
        for i in 0..self.batch_records.len() {
            let (bytes, at) = self.batch_record(i);
            let record = self.records_done + i as u64 + 1;
            match self.check_record(i) {
                Ok(()) => {
                    good_bytes.extend_from_slice(bytes);
                    good_numbers.push(record);
                }
                Err(error) => rejected.push(Rejected {
                    record,
                    line: at.line,
                    reason: error.to_string(),
                    text: String::from_utf8_lossy(&bytes[..bytes.len() - 1]).into_owned(),
                }),
            }
        }
        // The failed decoder's state is spoilt; the good records get a fresh one.
        self.json = json_decoder(
            &self.schema,
            self.options.batch_size + 1,
            self.options.reject_unknown_fields,
        )
        .map_err(|e| self.value_error(e, self.records_done + 1, Position { line: 0, column: 0 }))?;
        let batch = self
            .json
            .decode(&good_bytes)
            .and_then(|_| self.json.flush())
            .map_err(|e| {
                self.value_error(e, self.records_done + 1, Position { line: 0, column: 0 })
            })?
            .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()));
        Ok((batch, good_numbers, rejected))
    }

    /// Turns arrow-json's message into a structured error for one record.
    fn value_error(&self, error: ArrowError, record: u64, at: Position) -> DecodeError {
        let message = match error {
            ArrowError::JsonError(m) => m,
            other => other.to_string(),
        };
        if let Some(field) = message
            .strip_prefix("column '")
            .and_then(|m| m.strip_suffix("' missing from schema"))
        {
            return DecodeError::UnknownField {
                line: at.line,
                record,
                field: field.to_string(),
                hint: self.options.unknown_field_hint.clone(),
            };
        }
        if let Some((column, reason)) = message
            .strip_prefix("whilst decoding field '")
            .and_then(|m| m.split_once("': "))
        {
            return DecodeError::Value {
                line: at.line,
                record,
                column: column.to_string(),
                reason: reason.to_string(),
            };
        }
        let reason = if message.starts_with("expected {") || message.contains("expected {") {
            "the record is not a JSON object".to_string()
        } else {
            message
        };
        DecodeError::Record {
            line: at.line,
            record,
            reason,
        }
    }
}

/// serde_json pinpoints the line and column of a syntax error, which arrow-json does not; it
/// runs only on the failing record.
fn syntax_error(error: ArrowError, record: &[u8], at: Position, record_no: u64) -> DecodeError {
    let (line, column, message) = match serde_json::from_slice::<serde_json::Value>(record) {
        Err(e) => {
            let (line, column) = if e.line() <= 1 {
                (at.line, at.column + e.column().saturating_sub(1) as u64)
            } else {
                (at.line + e.line() as u64 - 1, e.column() as u64)
            };
            let message = e.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m)
                .to_string();
            (line, column, message)
        }
        Ok(_) => (at.line, at.column, error.to_string()),
    };
    DecodeError::Syntax {
        line,
        column,
        record: record_no,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, PgType};
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    fn table(cols: &[(&str, PgType)]) -> TableSchema {
        TableSchema {
            columns: cols
                .iter()
                .map(|(n, t)| Column {
                    name: n.to_string(),
                    pg_type: *t,
                })
                .collect(),
        }
    }

    fn options(batch_size: usize) -> DecodeOptions {
        DecodeOptions {
            batch_size,
            reject_unknown_fields: true,
            unknown_field_hint: "has no column".into(),
            must_stay_null: vec![],
            reject: false,
        }
    }

    fn decode_lines(
        table: &TableSchema,
        options: DecodeOptions,
        input: &str,
    ) -> Result<Vec<Decoded>, DecodeError> {
        let mut decoder = RecordDecoder::new(table, options);
        let mut framer = Framer::new(None, 1 << 20);
        let mut out = Vec::new();
        framer.push(input.as_bytes(), &mut |r, at| {
            if let Some(d) = decoder.push(r, at)? {
                out.push(d);
            }
            Ok(())
        })?;
        framer.finish(&mut |r, at| {
            if let Some(d) = decoder.push(r, at)? {
                out.push(d);
            }
            Ok(())
        })?;
        out.extend(decoder.finish()?);
        Ok(out)
    }

    #[test]
    fn batches_carry_their_first_record_number() {
        let t = table(&[("id", PgType::Int8)]);
        let input: String = (1..=5).map(|i| format!("{{\"id\":{i}}}\n")).collect();
        let out = decode_lines(&t, options(2), &input).unwrap();
        assert_eq!(
            out.iter()
                .map(|d| (d.first_record, d.batch.num_rows()))
                .collect::<Vec<_>>(),
            vec![(1, 2), (3, 2), (5, 1)]
        );
        assert_eq!(
            out[2].batch.column(0).as_primitive::<Int64Type>().value(0),
            5
        );
    }

    #[test]
    fn a_bad_value_names_record_line_column_and_value() {
        let t = table(&[("id", PgType::Int8), ("n", PgType::Int2)]);
        let input = "{\"id\":1,\"n\":1}\n\n{\"id\":2,\"n\":1.5}\n{\"id\":3,\"n\":99999}\n";
        let err = decode_lines(&t, options(10), input).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3 (record 2): column \"n\": 1.5 is not an integer (smallint)"
        );
        let input = "{\"id\":1,\"n\":99999}\n";
        let err = decode_lines(&t, options(10), input).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1 (record 1): column \"n\": 99999 is out of range for smallint"
        );
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let t = table(&[("id", PgType::Int8)]);
        let err = decode_lines(&t, options(10), "{\"id\":1}\n{\"id\" 2}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2, column 7 (record 2): malformed JSON: expected `:`"
        );
        let err = decode_lines(&t, options(10), "{\"id\":1}\n{\"id\":").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2 (record 2): the JSON value does not end with its line; NDJSON needs one complete value per line"
        );
    }

    #[test]
    fn unknown_and_late_fields_are_never_dropped_silently() {
        let t = table(&[("id", PgType::Int8), ("extra", PgType::Text)]);
        let err =
            decode_lines(&t, options(10), "{\"id\":1}\n{\"id\":2,\"new\":true}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2 (record 2): field \"new\" has no column"
        );
        let mut o = options(10);
        o.must_stay_null = vec![(1, "was left out".into())];
        let err = decode_lines(&t, o, "{\"id\":1}\n{\"id\":2,\"extra\":\"x\"}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2 (record 2): field \"extra\" was left out"
        );
        let mut o = options(10);
        o.reject_unknown_fields = false;
        assert_eq!(
            decode_lines(&t, o, "{\"id\":1,\"new\":2}\n").unwrap()[0]
                .batch
                .num_rows(),
            1
        );
    }

    #[test]
    fn nested_values_keep_their_json_text() {
        let t = table(&[
            ("j", PgType::Json),
            ("t", PgType::Text),
            ("s", PgType::Jsonb),
        ]);
        let input =
            r#"{"j": {"a": [1, "x\"\n\u0001"], "b": {}, "c": []}, "t": [true, null], "s": "é"}"#;
        let out = decode_lines(&t, options(10), input).unwrap();
        let column = |i: usize| {
            out[0]
                .batch
                .column(i)
                .as_string::<i32>()
                .value(0)
                .to_string()
        };
        assert_eq!(column(0), r#"{"a":[1,"x\"\n\u0001"],"b":{},"c":[]}"#);
        assert_eq!(column(1), "[true,null]");
        assert_eq!(column(2), r#""é""#);
    }

    #[test]
    fn a_record_that_is_not_an_object_is_named() {
        let t = table(&[("id", PgType::Int8)]);
        let err = decode_lines(&t, options(10), "[{\"id\":1}, 5]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1 (record 2): the record is not a JSON object"
        );
    }
}
