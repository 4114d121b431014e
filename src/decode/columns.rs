//! arrow-json column decoders that produce exactly the target column's type.
//!
//! arrow-json's own decoders are built for analytics and coerce quietly: `1.5` becomes `1` in
//! an integer column, and nested values cannot land in a string column. A loader must instead
//! keep every value exact or refuse it, so each PostgreSQL type gets a decoder here, selected
//! through arrow-json's [`DecoderFactory`] by the field's [`PG_TYPE_KEY`] tag. Each decoder is
//! one loop over the batch's tape positions with no per-value allocation.
//!
//! Error messages name the value and the expected type; arrow-json prefixes the field name,
//! and the record decoder adds the record number.

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, FixedSizeBinaryBuilder, StringBuilder};
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{ArrayRef, ArrowPrimitiveType, BooleanArray, PrimitiveArray};
use arrow_buffer::{BooleanBufferBuilder, NullBufferBuilder};
use arrow_json::reader::{ArrayDecoder, DecoderContext, DecoderFactory, Tape, TapeElement};
use arrow_schema::{ArrowError, FieldRef};
use base64::Engine as _;

use super::values::{parse_date, parse_time, parse_timestamp};
use crate::encode::encode_numeric;
use crate::schema::PgType;

/// Picks our decoder for every field tagged with a PostgreSQL type.
#[derive(Debug)]
pub struct PgDecoderFactory;

impl DecoderFactory for PgDecoderFactory {
    fn make_default_decoder(
        &self,
        _ctx: &DecoderContext,
        field: &FieldRef,
        _is_nullable: bool,
    ) -> Result<Option<Box<dyn ArrayDecoder>>, ArrowError> {
        let Some(pg_type) = PgType::of_field(field) else {
            return Ok(None);
        };
        Ok(Some(match pg_type {
            PgType::Int2 => Box::new(IntDecoder::<Int16Type>::new(pg_type)),
            PgType::Int4 => Box::new(IntDecoder::<Int32Type>::new(pg_type)),
            PgType::Int8 => Box::new(IntDecoder::<Int64Type>::new(pg_type)),
            PgType::Float4 => Box::new(FloatDecoder::<Float32Type>::new(pg_type)),
            PgType::Float8 => Box::new(FloatDecoder::<Float64Type>::new(pg_type)),
            PgType::Bool => Box::new(BoolDecoder),
            PgType::Text | PgType::Json | PgType::Jsonb | PgType::Numeric => {
                Box::new(TextDecoder::new(pg_type))
            }
            PgType::Timestamptz | PgType::Timestamp | PgType::Date | PgType::Time => {
                Box::new(TemporalDecoder { pg_type })
            }
            PgType::Uuid => Box::new(UuidDecoder),
            PgType::Bytea => Box::new(ByteaDecoder::default()),
        }))
    }
}

/// Longest value text quoted in an error message.
const MAX_SHOWN: usize = 80;

/// The value at `p` as JSON text, shortened for messages.
fn show(tape: &Tape<'_>, p: u32) -> String {
    let mut out = String::new();
    write_json(tape, p, &mut out);
    if out.len() > MAX_SHOWN {
        let mut cut = MAX_SHOWN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

fn invalid(tape: &Tape<'_>, p: u32, what: &str) -> ArrowError {
    ArrowError::JsonError(format!("{} is not {what}", show(tape, p)))
}

/// The text of a number literal, or of a string holding one (APIs often quote big numbers).
/// Only strings can carry surrounding spaces, so only they are trimmed.
fn numeric_text<'t>(tape: &Tape<'t>, p: u32) -> Option<&'t str> {
    match tape.get(p) {
        TapeElement::Number(i) => Some(tape.get_string(i)),
        TapeElement::String(i) => Some(tape.get_string(i).trim()),
        _ => None,
    }
}

/// Writes the value at `p` as JSON text and returns the position after it.
pub fn write_json(tape: &Tape<'_>, p: u32, out: &mut String) -> u32 {
    match tape.get(p) {
        element @ (TapeElement::StartObject(end) | TapeElement::StartList(end)) => {
            let object = matches!(element, TapeElement::StartObject(_));
            out.push(if object { '{' } else { '[' });
            let mut cur = p + 1;
            while cur < end {
                if cur > p + 1 {
                    out.push(',');
                }
                cur = write_json(tape, cur, out);
                if object {
                    out.push(':');
                    cur = write_json(tape, cur, out);
                }
            }
            out.push(if object { '}' } else { ']' });
            end + 1
        }
        TapeElement::String(i) => {
            write_json_string(tape.get_string(i), out);
            p + 1
        }
        TapeElement::Number(i) => {
            out.push_str(tape.get_string(i));
            p + 1
        }
        TapeElement::True => {
            out.push_str("true");
            p + 1
        }
        TapeElement::False => {
            out.push_str("false");
            p + 1
        }
        TapeElement::Null => {
            out.push_str("null");
            p + 1
        }
        // The remaining elements only come from serde input, which apitap never uses; their
        // Display is still correct JSON.
        TapeElement::I64(high) => {
            if let TapeElement::I32(low) = tape.get(p + 1) {
                let _ = write!(out, "{}", (i64::from(high) << 32) | i64::from(low as u32));
            }
            p + 2
        }
        TapeElement::F64(high) => {
            if let TapeElement::F32(low) = tape.get(p + 1) {
                let _ = write!(
                    out,
                    "{}",
                    f64::from_bits((u64::from(high) << 32) | u64::from(low))
                );
            }
            p + 2
        }
        TapeElement::I32(v) => {
            let _ = write!(out, "{v}");
            p + 1
        }
        TapeElement::F32(v) => {
            let _ = write!(out, "{}", f32::from_bits(v));
            p + 1
        }
        // End markers are skipped by their start's arm; TapeElement is non-exhaustive.
        _ => p + 1,
    }
}

/// JSON-escapes `s`: quotes, backslashes and control characters.
fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn primitive<T: ArrowPrimitiveType>(
    pos: &[u32],
    tape: &Tape<'_>,
    mut parse: impl FnMut(u32) -> Result<T::Native, ArrowError>,
) -> Result<PrimitiveArray<T>, ArrowError> {
    let mut values = Vec::with_capacity(pos.len());
    let mut nulls = NullBufferBuilder::new(pos.len());
    for &p in pos {
        if let TapeElement::Null = tape.get(p) {
            values.push(T::Native::default());
            nulls.append_null();
        } else {
            values.push(parse(p)?);
            nulls.append_non_null();
        }
    }
    Ok(PrimitiveArray::new(values.into(), nulls.finish()))
}

struct IntDecoder<T> {
    pg_type: PgType,
    _type: PhantomData<fn() -> T>,
}

impl<T> IntDecoder<T> {
    fn new(pg_type: PgType) -> Self {
        IntDecoder {
            pg_type,
            _type: PhantomData,
        }
    }
}

impl<T> ArrayDecoder for IntDecoder<T>
where
    T: ArrowPrimitiveType,
    T::Native: TryFrom<i64>,
{
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let pg_type = self.pg_type;
        let array = primitive::<T>(pos, tape, |p| {
            let text = numeric_text(tape, p)
                .ok_or_else(|| invalid(tape, p, &format!("an integer ({pg_type})")))?;
            match text.parse::<i64>() {
                Ok(v) => T::Native::try_from(v).map_err(|_| {
                    ArrowError::JsonError(format!(
                        "{} is out of range for {pg_type}",
                        show(tape, p)
                    ))
                }),
                Err(_) if looks_like_integer(text) => Err(ArrowError::JsonError(format!(
                    "{} is out of range for {pg_type}",
                    show(tape, p)
                ))),
                Err(_) => Err(invalid(tape, p, &format!("an integer ({pg_type})"))),
            }
        })?;
        Ok(Arc::new(array))
    }
}

fn looks_like_integer(text: &str) -> bool {
    let digits = text.trim_start_matches(['-', '+']);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

struct FloatDecoder<T> {
    pg_type: PgType,
    _type: PhantomData<fn() -> T>,
}

impl<T> FloatDecoder<T> {
    fn new(pg_type: PgType) -> Self {
        FloatDecoder {
            pg_type,
            _type: PhantomData,
        }
    }
}

trait FromText: Sized {
    fn from_text(text: &str) -> Option<Self>;
}

/// "1e999" parses to infinity; only a spelled-out `Infinity` or `NaN` may mean a non-finite value.
fn is_spelled_non_finite(text: &str) -> bool {
    !text
        .trim_start_matches(['-', '+'])
        .starts_with(|c: char| c.is_ascii_digit() || c == '.')
}

impl FromText for f32 {
    fn from_text(text: &str) -> Option<f32> {
        let v = text.parse::<f32>().ok()?;
        (v.is_finite() || is_spelled_non_finite(text)).then_some(v)
    }
}

impl FromText for f64 {
    fn from_text(text: &str) -> Option<f64> {
        let v = text.parse::<f64>().ok()?;
        (v.is_finite() || is_spelled_non_finite(text)).then_some(v)
    }
}

impl<T> ArrayDecoder for FloatDecoder<T>
where
    T: ArrowPrimitiveType,
    T::Native: FromText,
{
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let pg_type = self.pg_type;
        let array = primitive::<T>(pos, tape, |p| {
            numeric_text(tape, p)
                .and_then(T::Native::from_text)
                .ok_or_else(|| invalid(tape, p, &format!("a number ({pg_type})")))
        })?;
        Ok(Arc::new(array))
    }
}

struct BoolDecoder;

impl ArrayDecoder for BoolDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut values = BooleanBufferBuilder::new(pos.len());
        let mut nulls = NullBufferBuilder::new(pos.len());
        for &p in pos {
            let value = match tape.get(p) {
                TapeElement::Null => None,
                TapeElement::True => Some(true),
                TapeElement::False => Some(false),
                TapeElement::String(i) => match tape.get_string(i).to_ascii_lowercase().as_str() {
                    "true" | "t" => Some(true),
                    "false" | "f" => Some(false),
                    _ => return Err(invalid(tape, p, "a boolean")),
                },
                _ => return Err(invalid(tape, p, "a boolean")),
            };
            values.append(value.unwrap_or(false));
            match value {
                Some(_) => nulls.append_non_null(),
                None => nulls.append_null(),
            }
        }
        Ok(Arc::new(BooleanArray::new(values.finish(), nulls.finish())))
    }
}

/// text, json, jsonb and numeric: all decoded to UTF-8 text.
///
/// - text takes strings as they are, numbers and booleans as written, and nested values as
///   JSON text (what a `::text` cast of json gives);
/// - json/jsonb take any value as JSON text (a string keeps its quotes);
/// - numeric takes numbers exactly as written, or strings holding a decimal number.
///
/// JSON `null` is SQL NULL in every case.
struct TextDecoder {
    pg_type: PgType,
    scratch: String,
    numeric_scratch: Vec<u8>,
}

impl TextDecoder {
    fn new(pg_type: PgType) -> Self {
        TextDecoder {
            pg_type,
            scratch: String::new(),
            numeric_scratch: Vec::new(),
        }
    }
}

impl ArrayDecoder for TextDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut builder = StringBuilder::with_capacity(pos.len(), pos.len() * 16);
        for &p in pos {
            let element = tape.get(p);
            if let TapeElement::Null = element {
                builder.append_null();
                continue;
            }
            match (self.pg_type, element) {
                (PgType::Text, TapeElement::String(i) | TapeElement::Number(i)) => {
                    builder.append_value(tape.get_string(i))
                }
                (PgType::Text, TapeElement::True) => builder.append_value("true"),
                (PgType::Text, TapeElement::False) => builder.append_value("false"),
                (PgType::Numeric, TapeElement::Number(i)) => {
                    builder.append_value(tape.get_string(i))
                }
                (PgType::Numeric, TapeElement::String(i)) => {
                    let text = tape.get_string(i).trim();
                    self.numeric_scratch.clear();
                    encode_numeric(text, &mut self.numeric_scratch)
                        .map_err(|_| invalid(tape, p, "a number (numeric)"))?;
                    builder.append_value(text);
                }
                (PgType::Numeric, _) => return Err(invalid(tape, p, "a number (numeric)")),
                _ => {
                    self.scratch.clear();
                    write_json(tape, p, &mut self.scratch);
                    builder.append_value(&self.scratch);
                }
            }
        }
        Ok(Arc::new(builder.finish()))
    }
}

struct TemporalDecoder {
    pg_type: PgType,
}

impl ArrayDecoder for TemporalDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let string = |p: u32| match tape.get(p) {
            TapeElement::String(i) => Some(tape.get_string(i)),
            _ => None,
        };
        Ok(match self.pg_type {
            PgType::Timestamptz => Arc::new(
                primitive::<TimestampMicrosecondType>(pos, tape, |p| {
                    string(p)
                        .and_then(parse_timestamp)
                        .map(|t| t.utc_micros())
                        .ok_or_else(|| invalid(tape, p, "a timestamp (timestamptz)"))
                })?
                .with_timezone("UTC"),
            ),
            // Like PostgreSQL, a timestamp without time zone keeps the wall-clock time and
            // ignores any offset written with it.
            PgType::Timestamp => Arc::new(primitive::<TimestampMicrosecondType>(pos, tape, |p| {
                string(p)
                    .and_then(parse_timestamp)
                    .map(|t| t.wall_micros)
                    .ok_or_else(|| invalid(tape, p, "a timestamp (timestamp)"))
            })?),
            PgType::Date => Arc::new(primitive::<Date32Type>(pos, tape, |p| {
                string(p)
                    .and_then(parse_date)
                    .ok_or_else(|| invalid(tape, p, "a date (YYYY-MM-DD)"))
            })?),
            PgType::Time => Arc::new(primitive::<Time64MicrosecondType>(pos, tape, |p| {
                string(p)
                    .and_then(parse_time)
                    .ok_or_else(|| invalid(tape, p, "a time of day (HH:MM:SS)"))
            })?),
            other => unreachable!("TemporalDecoder built for {other}"),
        })
    }
}

struct UuidDecoder;

impl ArrayDecoder for UuidDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut builder = FixedSizeBinaryBuilder::with_capacity(pos.len(), 16);
        for &p in pos {
            match tape.get(p) {
                TapeElement::Null => builder.append_null(),
                TapeElement::String(i) => {
                    let uuid = uuid::Uuid::try_parse(tape.get_string(i).trim())
                        .map_err(|_| invalid(tape, p, "a UUID"))?;
                    builder.append_value(uuid.as_bytes())?;
                }
                _ => return Err(invalid(tape, p, "a UUID")),
            }
        }
        Ok(Arc::new(builder.finish()))
    }
}

/// bytea from base64 (standard or URL-safe alphabet, padding optional) or PostgreSQL's own
/// `\x` hex form.
#[derive(Default)]
struct ByteaDecoder {
    scratch: Vec<u8>,
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
const BASE64_URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

fn decode_hex(hex: &str, out: &mut Vec<u8>) -> bool {
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = hex.as_bytes();
    if bytes.len() % 2 != 0 {
        return false;
    }
    for pair in bytes.chunks_exact(2) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => return false,
        }
    }
    true
}

impl ArrayDecoder for ByteaDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut builder = BinaryBuilder::with_capacity(pos.len(), pos.len() * 16);
        for &p in pos {
            match tape.get(p) {
                TapeElement::Null => builder.append_null(),
                TapeElement::String(i) => {
                    let text = tape.get_string(i);
                    self.scratch.clear();
                    let ok = match text.strip_prefix("\\x") {
                        Some(hex) => decode_hex(hex, &mut self.scratch),
                        None => {
                            BASE64.decode_vec(text, &mut self.scratch).is_ok() || {
                                self.scratch.clear();
                                BASE64_URL.decode_vec(text, &mut self.scratch).is_ok()
                            }
                        }
                    };
                    if !ok {
                        return Err(invalid(tape, p, "base64 or \\x-hex bytes (bytea)"));
                    }
                    builder.append_value(&self.scratch);
                }
                _ => return Err(invalid(tape, p, "base64 or \\x-hex bytes (bytea)")),
            }
        }
        Ok(Arc::new(builder.finish()))
    }
}
