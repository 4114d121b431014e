//! Column decoders: one batch of scanned records → one Arrow array typed for the target
//! column, one column at a time.
//!
//! A loader must keep every value exact or refuse it, and must read JSON text the way
//! PostgreSQL's own JSON → row conversion (`json_populate_record`) does: a JSON string is
//! the text it holds, handed to the type's input function; a number is its text as written;
//! an object or array is its JSON text. So each PostgreSQL type gets a decoder here that
//! accepts what that type's input function accepts (for the forms APIs send) and refuses the
//! rest by name; nothing is coerced (`1.5` is not an integer, `1e-400` is not a double).
//!
//! A value a column cannot take becomes NULL in the array and its row goes to `errors` with
//! the reason; the record decoder then fails the load or sets the record aside.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, FixedSizeBinaryBuilder, StringBuilder};
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{ArrayRef, ArrowPrimitiveType, BooleanArray, PrimitiveArray};
use arrow_buffer::{BooleanBufferBuilder, NullBufferBuilder};
use base64::Engine as _;

use super::scan::{Kind, Value, unescape};
use super::values::{SessionZone, parse_bool, parse_date, parse_time, parse_timestamp, parse_uuid};
use crate::encode::encode_numeric;
use crate::schema::PgType;

/// One batch of scanned records: their bytes, and each row's value for each column.
pub(crate) struct Batch<'a> {
    /// The records' text, one after another.
    pub input: &'a str,
    /// Row-major: the value of row `r`, column `c` is `values[r * columns + c]`.
    pub values: &'a [Value],
    pub columns: usize,
    pub rows: usize,
}

impl Batch<'_> {
    fn value(&self, row: usize, column: usize) -> Value {
        self.values[row * self.columns + column]
    }
}

/// Why a row's value does not fit: the row, and the reason.
pub(crate) type ValueError = (usize, String);

/// Longest value text quoted in an error message.
const MAX_SHOWN: usize = 80;

/// The value as JSON text, shortened for messages.
fn show(input: &str, value: &Value) -> String {
    let text = value.json(input);
    if text.len() <= MAX_SHOWN {
        return text.to_string();
    }
    let mut cut = MAX_SHOWN;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// How the target session reads dates and times (see `sink::plan::catalog::SessionDates`).
pub(crate) struct DateRules<'a> {
    /// The `TimeZone` of timestamps without an offset (`None`: UTC).
    pub zone: Option<&'a SessionZone>,
    /// `+infinity` is a date and a timestamp.
    pub plus_infinity: bool,
}

/// Decodes column `column` of `batch` into an array of `pg_type`'s Arrow type.
pub(crate) fn decode_column(
    pg_type: PgType,
    batch: &Batch<'_>,
    column: usize,
    dates: &DateRules<'_>,
    errors: &mut Vec<ValueError>,
) -> ArrayRef {
    let zone = dates.zone;
    // PostgreSQL 15 refuses the spelling `+infinity` where 16 takes it as `infinity`.
    let refused = |text: &str| !dates.plus_infinity && text.eq_ignore_ascii_case("+infinity");
    let timestamp = |text: &str| parse_timestamp(text).filter(|_| !refused(text));
    let date = |text: &str| parse_date(text).filter(|_| !refused(text));
    let mut d = Decoding {
        batch,
        column,
        pg_type,
        errors,
        scratch: String::new(),
    };
    match pg_type {
        PgType::Int2 => Arc::new(d.primitive::<Int16Type>(|d, v| d.integer(v))),
        PgType::Int4 => Arc::new(d.primitive::<Int32Type>(|d, v| d.integer(v))),
        PgType::Int8 => Arc::new(d.primitive::<Int64Type>(|d, v| d.integer(v))),
        PgType::Float4 => Arc::new(d.primitive::<Float32Type>(|d, v| d.float(v))),
        PgType::Float8 => Arc::new(d.primitive::<Float64Type>(|d, v| d.float(v))),
        PgType::Bool => d.boolean(),
        PgType::Text | PgType::Json | PgType::Jsonb | PgType::Numeric => d.text(),
        PgType::Timestamptz => Arc::new(
            d.primitive::<TimestampMicrosecondType>(|d, v| {
                let stamp = d.string(v, timestamp)?;
                stamp.utc_micros(zone).ok_or_else(|| {
                    format!(
                        "{} has no UTC offset, and the session's TimeZone ({}) is not one apitap can apply; \
                         write the offset, or set TimeZone to a zone name such as UTC",
                        show(d.input(), v),
                        match zone {
                            Some(SessionZone::Unsupported(setting)) => setting.as_str(),
                            _ => "?",
                        }
                    )
                })
            })
            .with_timezone("UTC"),
        ),
        // Like PostgreSQL, a timestamp without time zone keeps the wall-clock time and
        // ignores any offset written with it.
        PgType::Timestamp => Arc::new(d.primitive::<TimestampMicrosecondType>(|d, v| {
            d.string(v, timestamp).map(|t| t.wall_micros)
        })),
        PgType::Date => Arc::new(d.primitive::<Date32Type>(|d, v| d.string(v, date))),
        PgType::Time => {
            Arc::new(d.primitive::<Time64MicrosecondType>(|d, v| d.string(v, parse_time)))
        }
        PgType::Uuid => d.uuid(),
        PgType::Bytea => d.bytea(),
    }
}

/// One column being decoded.
struct Decoding<'a, 'b> {
    batch: &'a Batch<'a>,
    column: usize,
    pg_type: PgType,
    errors: &'b mut Vec<ValueError>,
    /// A string's unescaped text.
    scratch: String,
}

/// Why a value does not fit, before the row is known.
type Refusal = String;

impl Decoding<'_, '_> {
    fn input(&self) -> &str {
        self.batch.input
    }

    fn not(&self, value: &Value, what: &str) -> Refusal {
        format!("{} is not {what}", show(self.input(), value))
    }

    fn out_of_range(&self, value: &Value) -> Refusal {
        format!(
            "{} is out of range for {}",
            show(self.input(), value),
            self.pg_type
        )
    }

    /// What the type's name is in "is not …" messages.
    fn expected(&self) -> &'static str {
        match self.pg_type {
            PgType::Int2 => "an integer (smallint)",
            PgType::Int4 => "an integer (integer)",
            PgType::Int8 => "an integer (bigint)",
            PgType::Float4 => "a number (real)",
            PgType::Float8 => "a number (double precision)",
            PgType::Numeric => "a number (numeric)",
            PgType::Bool => "a boolean",
            PgType::Timestamptz => "a timestamp (timestamptz)",
            PgType::Timestamp => "a timestamp (timestamp)",
            PgType::Date => "a date (YYYY-MM-DD)",
            PgType::Time => "a time of day (HH:MM:SS)",
            PgType::Uuid => "a UUID",
            PgType::Bytea => "base64 or \\x-hex bytes (bytea)",
            PgType::Text | PgType::Json | PgType::Jsonb => "text",
        }
    }

    /// The text a string holds, escapes resolved (in `scratch` when it has any).
    fn string_text(&mut self, value: &Value) -> &str {
        let raw = value.text(self.batch.input);
        if !value.escaped {
            return raw;
        }
        self.scratch.clear();
        unescape(raw, &mut self.scratch);
        &self.scratch
    }

    /// The text a type's input function would get for a number or a string (trimmed of the
    /// whitespace input functions skip), or a refusal for any other value.
    fn scalar_text(&mut self, value: &Value) -> Result<&str, Refusal> {
        match value.kind {
            Kind::Number => Ok(value.text(self.batch.input)),
            Kind::String => {
                if value.nul {
                    return Err(nul_refusal());
                }
                Ok(self
                    .string_text(value)
                    .trim_matches(|c: char| c.is_ascii_whitespace()))
            }
            _ => Err(self.not(value, self.expected())),
        }
    }

    /// A string's (or a number's) text parsed by `parse`, or a refusal naming the expected
    /// type.
    fn string<T>(
        &mut self,
        value: &Value,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, Refusal> {
        let parsed = match value.kind {
            Kind::String | Kind::Number => self.scalar_text(value).ok().and_then(&parse),
            _ => None,
        };
        parsed.ok_or_else(|| self.not(value, self.expected()))
    }

    /// A primitive array, with `parse` for each present, non-null value.
    fn primitive<T: ArrowPrimitiveType>(
        &mut self,
        mut parse: impl FnMut(&mut Self, &Value) -> Result<T::Native, Refusal>,
    ) -> PrimitiveArray<T> {
        let rows = self.batch.rows;
        let mut values = Vec::with_capacity(rows);
        let mut nulls = NullBufferBuilder::new(rows);
        for row in 0..rows {
            let value = self.batch.value(row, self.column);
            if matches!(value.kind, Kind::Absent | Kind::Null) {
                values.push(T::Native::default());
                nulls.append_null();
                continue;
            }
            match parse(self, &value) {
                Ok(v) => {
                    values.push(v);
                    nulls.append_non_null();
                }
                Err(reason) => {
                    self.errors.push((row, reason));
                    values.push(T::Native::default());
                    nulls.append_null();
                }
            }
        }
        PrimitiveArray::new(values.into(), nulls.finish())
    }

    /// An integer of the column's width: digits with an optional sign, as `int4in` takes
    /// them (no fraction or exponent, even `1.0`).
    fn integer<N: TryFrom<i64>>(&mut self, value: &Value) -> Result<N, Refusal> {
        let text = self.scalar_text(value)?;
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.not(value, self.expected()));
        }
        text.parse::<i64>()
            .ok()
            .and_then(|v| N::try_from(v).ok())
            .ok_or_else(|| self.out_of_range(value))
    }

    /// A float as `float8in`/`float4in` read it: correctly rounded, the spelled-out special
    /// values, and nothing that overflows to infinity or underflows to zero.
    fn float<F: Float>(&mut self, value: &Value) -> Result<F, Refusal> {
        let text = self.scalar_text(value)?;
        if let Some(special) = F::special(text) {
            return Ok(special);
        }
        let looks_numeric = text
            .trim_start_matches(['-', '+'])
            .starts_with(|c: char| c.is_ascii_digit() || c == '.');
        let parsed = looks_numeric.then(|| text.parse::<F>().ok()).flatten();
        let Some(v) = parsed else {
            return Err(self.not(value, self.expected()));
        };
        let underflow = v.is_zero()
            && text
                .bytes()
                .take_while(|b| !matches!(b, b'e' | b'E'))
                .any(|b| (b'1'..=b'9').contains(&b));
        if !v.is_finite() || underflow {
            return Err(self.out_of_range(value));
        }
        Ok(v)
    }

    fn boolean(&mut self) -> ArrayRef {
        let rows = self.batch.rows;
        let mut values = BooleanBufferBuilder::new(rows);
        let mut nulls = NullBufferBuilder::new(rows);
        for row in 0..rows {
            let value = self.batch.value(row, self.column);
            let parsed = match value.kind {
                Kind::Absent | Kind::Null => None,
                Kind::True => Some(Ok(true)),
                Kind::False => Some(Ok(false)),
                // boolin of the number's or the string's text.
                Kind::Number | Kind::String => Some(
                    self.scalar_text(&value)
                        .ok()
                        .and_then(parse_bool)
                        .ok_or_else(|| self.not(&value, "a boolean")),
                ),
                _ => Some(Err(self.not(&value, "a boolean"))),
            };
            match parsed {
                Some(Ok(v)) => {
                    values.append(v);
                    nulls.append_non_null();
                }
                None => {
                    values.append(false);
                    nulls.append_null();
                }
                Some(Err(reason)) => {
                    self.errors.push((row, reason));
                    values.append(false);
                    nulls.append_null();
                }
            }
        }
        Arc::new(BooleanArray::new(values.finish(), nulls.finish()))
    }

    /// text, json, jsonb and numeric, all UTF-8 text:
    ///
    /// - text takes a string's text, a number as written, `true`/`false`, and an object's
    ///   or array's JSON text exactly as written (what `json_populate_record` gives);
    /// - json and jsonb take any value's JSON text as written (a string keeps its quotes);
    /// - numeric takes a number as written, or a string holding a decimal number, checked
    ///   against numeric's range here so that a bad one is named with its record.
    ///
    /// JSON `null` is SQL NULL in every case.
    fn text(&mut self) -> ArrayRef {
        let rows = self.batch.rows;
        let input = self.batch.input;
        // The text is at most the values' JSON text (with a string's quotes), bar json's
        // re-escaped strings: reserving that once spares the builder its doublings, each a
        // copy of the column so far.
        let capacity: usize = (0..rows)
            .map(|row| {
                let value = self.batch.value(row, self.column);
                (value.end - value.start) as usize + 2
            })
            .sum();
        let mut builder = StringBuilder::with_capacity(rows, capacity);
        let mut numeric = Vec::new();
        for row in 0..rows {
            let value = self.batch.value(row, self.column);
            if matches!(value.kind, Kind::Absent | Kind::Null) {
                builder.append_null();
                continue;
            }
            let text: Result<&str, Refusal> = match (self.pg_type, value.kind) {
                // PostgreSQL's JSON conversion refuses the escape \u0000 anywhere in a value
                // it turns into text, json or jsonb.
                (PgType::Text | PgType::Json | PgType::Jsonb, _) if value.nul => Err(nul_refusal()),
                (PgType::Text, Kind::String) => Ok(self.string_text(&value)),
                (PgType::Text, Kind::True) => Ok("true"),
                (PgType::Text, Kind::False) => Ok("false"),
                (PgType::Text, _) => Ok(value.text(input)),
                (PgType::Numeric, _) => match self.scalar_text(&value) {
                    Ok(text) => {
                        numeric.clear();
                        match encode_numeric(text, &mut numeric) {
                            Ok(()) => Ok(text),
                            Err(e) => Err(format!(
                                "{} ({e})",
                                self.not(&value, "a number numeric can hold")
                            )),
                        }
                    }
                    Err(e) => Err(e),
                },
                // A string into json is its text quoted again, as PostgreSQL's escape_json
                // writes it; jsonb stores the same whatever the escapes.
                (PgType::Json, Kind::String) if value.escaped => {
                    let text = self.string_text(&value).to_string();
                    self.scratch.clear();
                    escape_json(&text, &mut self.scratch);
                    Ok(self.scratch.as_str())
                }
                _ => Ok(value.json(input)),
            };
            match text {
                Ok(text) => builder.append_value(text),
                Err(reason) => {
                    self.errors.push((row, reason));
                    builder.append_null();
                }
            }
        }
        Arc::new(builder.finish())
    }

    fn uuid(&mut self) -> ArrayRef {
        let rows = self.batch.rows;
        let mut builder = FixedSizeBinaryBuilder::with_capacity(rows, 16);
        for row in 0..rows {
            let value = self.batch.value(row, self.column);
            if matches!(value.kind, Kind::Absent | Kind::Null) {
                builder.append_null();
                continue;
            }
            // uuid_in takes no surrounding whitespace.
            let parsed = match value.kind {
                Kind::String if !value.nul => parse_uuid(self.string_text(&value)),
                _ => None,
            };
            match parsed {
                Some(bytes) => {
                    let _ = builder.append_value(bytes);
                }
                None => {
                    let reason = self.not(&value, "a UUID");
                    self.errors.push((row, reason));
                    builder.append_null();
                }
            }
        }
        Arc::new(builder.finish())
    }

    /// bytea from PostgreSQL's `\x` hex form, or base64 (standard or URL-safe alphabet,
    /// padding optional), which APIs use for bytes and PostgreSQL does not read.
    fn bytea(&mut self) -> ArrayRef {
        let rows = self.batch.rows;
        let mut builder = BinaryBuilder::with_capacity(rows, rows * 16);
        let mut bytes = Vec::new();
        for row in 0..rows {
            let value = self.batch.value(row, self.column);
            if matches!(value.kind, Kind::Absent | Kind::Null) {
                builder.append_null();
                continue;
            }
            bytes.clear();
            let ok = match value.kind {
                Kind::String if !value.nul => {
                    let text = self.string_text(&value);
                    match text.strip_prefix("\\x") {
                        Some(hex) => decode_hex(hex, &mut bytes),
                        None => {
                            BASE64.decode_vec(text, &mut bytes).is_ok() || {
                                bytes.clear();
                                BASE64_URL.decode_vec(text, &mut bytes).is_ok()
                            }
                        }
                    }
                }
                _ => false,
            };
            if ok {
                builder.append_value(&bytes);
            } else {
                let reason = self.not(&value, "base64 or \\x-hex bytes (bytea)");
                self.errors.push((row, reason));
                builder.append_null();
            }
        }
        Arc::new(builder.finish())
    }
}

/// A JSON string of `text`, escaped as PostgreSQL's `escape_json` does: quotes, backslashes
/// and control characters only (`\b \f \n \r \t`, others as `\u00XX`).
fn escape_json(text: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn nul_refusal() -> Refusal {
    "the escape \\u0000 (a NUL character), which PostgreSQL cannot store in text".into()
}

/// f32 and f64, read as PostgreSQL's `float4in` and `float8in` do.
trait Float: std::str::FromStr + Copy {
    fn special(text: &str) -> Option<Self>;
    fn is_zero(self) -> bool;
    fn is_finite(self) -> bool;
}

/// The special values float input takes, in any case: NaN, [+-]Infinity, [+-]inf.
fn float_special(text: &str) -> Option<f64> {
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

impl Float for f64 {
    fn special(text: &str) -> Option<f64> {
        float_special(text)
    }
    fn is_zero(self) -> bool {
        self == 0.0
    }
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
}

impl Float for f32 {
    fn special(text: &str) -> Option<f32> {
        float_special(text).map(|v| v as f32)
    }
    fn is_zero(self) -> bool {
        self == 0.0
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
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

/// PostgreSQL's hex bytea input: pairs of hex digits, whitespace allowed between pairs (not
/// inside one).
fn decode_hex(hex: &str, out: &mut Vec<u8>) -> bool {
    let nibble = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16)).map(|d| d as u8);
    let bytes = hex.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
            at += 1;
            continue;
        }
        match (nibble(bytes.get(at)), nibble(bytes.get(at + 1))) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => return false,
        }
        at += 2;
    }
    true
}
