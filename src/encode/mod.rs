//! Arrow record batches → PostgreSQL binary COPY bytes. Pure: no IO, no connection.
//!
//! Binary COPY is row-major (each tuple is a field count followed by length-prefixed values),
//! while Arrow is column-major. Instead of walking rows and dispatching on each value's type,
//! the encoder first sums every row's encoded length column by column, lays the rows out in
//! one buffer, and then writes each column in a single typed loop that scatters values to
//! their row's cursor. The only per-value branch left is the null check.
//!
//! The format is PostgreSQL's own (`COPY … FROM STDIN (FORMAT binary)`): an 11-byte
//! signature, flags and header extension, then per tuple a 16-bit field count and per field
//! a 32-bit length (-1 for NULL) and the bytes the type's `*_send` function writes (integers
//! and floats big-endian, timestamps as microseconds and dates as days since 2000-01-01,
//! jsonb with a version byte, numeric as in `numeric.rs`), then a -1 trailer.

mod numeric;
pub mod repeats;
pub mod text;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::NullBuffer;
use bytes::BytesMut;

pub(crate) use numeric::encode_numeric;

use crate::schema::PgType;

/// The 11-byte signature, flags and header-extension length that open every binary COPY stream.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The field count -1 that ends the stream.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// Days between the Unix epoch and PostgreSQL's epoch.
const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;

/// A value the encoder cannot put into its column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("record {record}: column {column:?}: {reason}")]
    Value {
        record: u64,
        column: String,
        reason: String,
    },
    /// The batch does not have the layout the encoder was built for: a bug in the caller.
    #[error("batch does not match the target columns: {0}")]
    Layout(String),
}

/// Encodes batches for one fixed list of target column types.
#[derive(Debug)]
pub struct CopyEncoder {
    types: Vec<PgType>,
    names: Vec<String>,
    /// Per-row write positions, reused across batches.
    cursors: Vec<usize>,
    /// numeric values are converted to their send format before layout, since their size
    /// depends on the digits; one scratch per column, reused across batches.
    numeric: Vec<NumericScratch>,
}

#[derive(Debug, Default)]
struct NumericScratch {
    bytes: Vec<u8>,
    offsets: Vec<usize>,
}

impl CopyEncoder {
    /// `names` are used only in error messages; `types` fix each column's send format.
    pub fn new(names: Vec<String>, types: Vec<PgType>) -> CopyEncoder {
        let numeric = types.iter().map(|_| NumericScratch::default()).collect();
        CopyEncoder {
            types,
            names,
            cursors: Vec::new(),
            numeric,
        }
    }

    /// Appends the tuples of `batch` to `out`. `first_record` is the 1-based number of the
    /// batch's first record in the whole load, for error messages.
    ///
    /// # Errors
    /// A value the column cannot hold (a NUL character in text, an unrepresentable numeric),
    /// or a batch whose columns do not match the encoder's types.
    pub fn encode(
        &mut self,
        batch: &RecordBatch,
        first_record: u64,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if batch.num_columns() != self.types.len() {
            return Err(EncodeError::Layout(format!(
                "{} columns, expected {}",
                batch.num_columns(),
                self.types.len()
            )));
        }
        let rows = batch.num_rows();
        self.cursors.clear();
        if rows == 0 {
            return Ok(());
        }
        let field_count = i16::try_from(self.types.len())
            .map_err(|_| EncodeError::Layout("more than 32767 columns".into()))?;

        // Pass 1: every row's encoded length, one column at a time.
        self.cursors.resize(rows, 2 + 4 * self.types.len());
        for (col, (array, &pg_type)) in batch.columns().iter().zip(&self.types).enumerate() {
            if array.data_type() != &pg_type.arrow_type() {
                return Err(EncodeError::Layout(format!(
                    "column {:?} is {}, expected {} for {pg_type}",
                    self.names[col],
                    array.data_type(),
                    pg_type.arrow_type()
                )));
            }
            add_lengths(array, pg_type, &mut self.cursors, &mut self.numeric[col]).map_err(
                |(row, reason)| EncodeError::Value {
                    record: first_record + row as u64,
                    column: self.names[col].clone(),
                    reason,
                },
            )?;
        }

        // Lay out rows: turn lengths into absolute start positions.
        let mut pos = out.len();
        for cursor in self.cursors.iter_mut() {
            let len = *cursor;
            *cursor = pos;
            pos += len;
        }
        out.resize(pos, 0);
        let buf = &mut out[..];
        for cursor in self.cursors.iter_mut() {
            buf[*cursor..*cursor + 2].copy_from_slice(&field_count.to_be_bytes());
            *cursor += 2;
        }

        // Pass 2: write each column with one typed loop.
        for ((array, &pg_type), numeric) in
            batch.columns().iter().zip(&self.types).zip(&self.numeric)
        {
            write_column(array, pg_type, buf, &mut self.cursors, numeric);
        }
        Ok(())
    }

    /// Where each row of the last encoded batch ends in `out`: row `i` is
    /// `out[row_ends[i - 1]..row_ends[i]]` (the first starts where `out` ended before). A
    /// batch the server refuses can be split along these without encoding it again.
    pub(crate) fn row_ends(&self) -> &[usize] {
        &self.cursors
    }
}

fn fixed_width(pg_type: PgType) -> Option<usize> {
    Some(match pg_type {
        PgType::Bool => 1,
        PgType::Int2 => 2,
        PgType::Int4 | PgType::Float4 | PgType::Date => 4,
        PgType::Int8 | PgType::Float8 | PgType::Timestamp | PgType::Timestamptz | PgType::Time => 8,
        PgType::Uuid => 16,
        _ => return None,
    })
}

/// Adds each row's value length to `lens`. Errors carry the failing row index and reason.
fn add_lengths(
    array: &ArrayRef,
    pg_type: PgType,
    lens: &mut [usize],
    numeric: &mut NumericScratch,
) -> Result<(), (usize, String)> {
    let nulls = array.logical_nulls();
    if let Some(width) = fixed_width(pg_type) {
        match &nulls {
            None => lens.iter_mut().for_each(|l| *l += width),
            Some(n) => {
                for (l, valid) in lens.iter_mut().zip(n.iter()) {
                    *l += if valid { width } else { 0 };
                }
            }
        }
        return Ok(());
    }
    match pg_type {
        PgType::Text | PgType::Json | PgType::Jsonb => {
            let strings = array.as_string::<i32>();
            let offsets = strings.value_offsets();
            let values = strings.value_data();
            let start = offsets[0] as usize;
            let end = offsets[offsets.len() - 1] as usize;
            if let Some(at) = memchr::memchr(0, &values[start..end]) {
                let at = (start + at) as i32;
                let row = offsets.partition_point(|&o| o <= at) - 1;
                return Err((
                    row,
                    "text contains a NUL character (\\u0000), which PostgreSQL cannot store".into(),
                ));
            }
            let extra = usize::from(pg_type == PgType::Jsonb);
            add_var_lengths(offsets, nulls.as_ref(), extra, lens);
        }
        PgType::Bytea => {
            let binary = array.as_binary::<i32>();
            add_var_lengths(binary.value_offsets(), nulls.as_ref(), 0, lens);
        }
        PgType::Numeric => {
            let strings = array.as_string::<i32>();
            numeric.bytes.clear();
            numeric.offsets.clear();
            numeric.offsets.push(0);
            for (row, value) in strings.iter().enumerate() {
                if let Some(text) = value {
                    encode_numeric(text, &mut numeric.bytes)
                        .map_err(|error| (row, error.to_string()))?;
                    lens[row] += numeric.bytes.len() - numeric.offsets[numeric.offsets.len() - 1];
                }
                numeric.offsets.push(numeric.bytes.len());
            }
        }
        _ => unreachable!("fixed-width types handled above"),
    }
    Ok(())
}

fn add_var_lengths(offsets: &[i32], nulls: Option<&NullBuffer>, extra: usize, lens: &mut [usize]) {
    let sizes = offsets.windows(2).map(|w| (w[1] - w[0]) as usize + extra);
    match nulls {
        None => lens.iter_mut().zip(sizes).for_each(|(l, s)| *l += s),
        Some(n) => {
            for ((l, s), valid) in lens.iter_mut().zip(sizes).zip(n.iter()) {
                *l += if valid { s } else { 0 };
            }
        }
    }
}

const NULL_LENGTH: [u8; 4] = (-1i32).to_be_bytes();

/// Writes a fixed-width column: `value(row)` yields the send-format bytes of a non-null row.
#[inline(always)]
fn write_fixed<const W: usize>(
    buf: &mut [u8],
    cursors: &mut [usize],
    nulls: Option<&NullBuffer>,
    value: impl Fn(usize) -> [u8; W],
) {
    let len = (W as i32).to_be_bytes();
    for (row, cursor) in cursors.iter_mut().enumerate() {
        let at = *cursor;
        if nulls.is_some_and(|n| n.is_null(row)) {
            buf[at..at + 4].copy_from_slice(&NULL_LENGTH);
            *cursor = at + 4;
        } else {
            buf[at..at + 4].copy_from_slice(&len);
            buf[at + 4..at + 4 + W].copy_from_slice(&value(row));
            *cursor = at + 4 + W;
        }
    }
}

/// Writes a variable-width column from Arrow-style offsets into `values`, with an optional
/// one-byte prefix (jsonb's format version).
fn write_var<O: Copy + TryInto<usize>>(
    buf: &mut [u8],
    cursors: &mut [usize],
    nulls: Option<&NullBuffer>,
    offsets: &[O],
    values: &[u8],
    prefix: Option<u8>,
) {
    // Offsets are non-negative by Arrow's invariants, so the conversion never fails.
    let index = |o: O| o.try_into().unwrap_or(0);
    let extra = usize::from(prefix.is_some());
    for (row, cursor) in cursors.iter_mut().enumerate() {
        let mut at = *cursor;
        if nulls.is_some_and(|n| n.is_null(row)) {
            buf[at..at + 4].copy_from_slice(&NULL_LENGTH);
            *cursor = at + 4;
            continue;
        }
        let value = &values[index(offsets[row])..index(offsets[row + 1])];
        buf[at..at + 4].copy_from_slice(&((value.len() + extra) as i32).to_be_bytes());
        at += 4;
        if let Some(p) = prefix {
            buf[at] = p;
            at += 1;
        }
        buf[at..at + value.len()].copy_from_slice(value);
        *cursor = at + value.len();
    }
}

fn write_column(
    array: &ArrayRef,
    pg_type: PgType,
    buf: &mut [u8],
    cursors: &mut [usize],
    numeric: &NumericScratch,
) {
    let nulls = array.logical_nulls();
    let nulls = nulls.as_ref();
    match pg_type {
        PgType::Bool => {
            let a = array.as_boolean();
            write_fixed::<1>(buf, cursors, nulls, |i| [u8::from(a.value(i))]);
        }
        PgType::Int2 => {
            let v = array.as_primitive::<Int16Type>().values();
            write_fixed(buf, cursors, nulls, |i| v[i].to_be_bytes());
        }
        PgType::Int4 => {
            let v = array.as_primitive::<Int32Type>().values();
            write_fixed(buf, cursors, nulls, |i| v[i].to_be_bytes());
        }
        PgType::Int8 => {
            let v = array.as_primitive::<Int64Type>().values();
            write_fixed(buf, cursors, nulls, |i| v[i].to_be_bytes());
        }
        PgType::Float4 => {
            let v = array.as_primitive::<Float32Type>().values();
            write_fixed(buf, cursors, nulls, |i| v[i].to_be_bytes());
        }
        PgType::Float8 => {
            let v = array.as_primitive::<Float64Type>().values();
            write_fixed(buf, cursors, nulls, |i| v[i].to_be_bytes());
        }
        PgType::Timestamp | PgType::Timestamptz => {
            let v = array.as_primitive::<TimestampMicrosecondType>().values();
            write_fixed(buf, cursors, nulls, |i| {
                pg_timestamp_from_unix_micros(v[i]).to_be_bytes()
            });
        }
        PgType::Date => {
            let v = array.as_primitive::<Date32Type>().values();
            write_fixed(buf, cursors, nulls, |i| {
                pg_date_from_unix_days(v[i]).to_be_bytes()
            });
        }
        PgType::Time => {
            let v = array.as_primitive::<Time64MicrosecondType>().values();
            write_fixed(buf, cursors, nulls, |i| v[i].to_be_bytes());
        }
        PgType::Uuid => {
            let a = array.as_fixed_size_binary();
            write_fixed::<16>(buf, cursors, nulls, |i| {
                a.value(i).try_into().unwrap_or([0; 16])
            });
        }
        PgType::Text | PgType::Json | PgType::Jsonb => {
            let a = array.as_string::<i32>();
            let prefix = (pg_type == PgType::Jsonb).then_some(1u8);
            write_var(
                buf,
                cursors,
                nulls,
                a.value_offsets(),
                a.value_data(),
                prefix,
            );
        }
        PgType::Bytea => {
            let a = array.as_binary::<i32>();
            write_var(buf, cursors, nulls, a.value_offsets(), a.value_data(), None);
        }
        PgType::Numeric => {
            write_var(buf, cursors, nulls, &numeric.offsets, &numeric.bytes, None);
        }
    }
}

/// PostgreSQL's ±infinity are the extreme int64 values; they must not be shifted.
fn pg_timestamp_from_unix_micros(micros: i64) -> i64 {
    match micros {
        i64::MAX | i64::MIN => micros,
        _ => micros - PG_EPOCH_OFFSET_MICROS,
    }
}

fn pg_date_from_unix_days(days: i32) -> i32 {
    match days {
        i32::MAX | i32::MIN => days,
        _ => days - PG_EPOCH_OFFSET_DAYS,
    }
}

#[cfg(test)]
mod tests;
