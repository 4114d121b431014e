//! Infers column types from a sample of records, for tables apitap creates.
//!
//! The sample is read with the same strict scanner as the load ([`super::scan`]), so it
//! understands exactly the records the decoder accepts, and skips only records the decoder
//! will refuse. Numbers are classified by their text, not by a parsed double, so that no
//! value loses digits: integers past 64 bits and numbers a double cannot hold exactly make
//! the column `numeric`. Column order is the order fields first appear.

use super::scan::{Kind, SyntaxError, Value, scan_record, unescape};
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
const NESTED: u16 = 1 << 9;
/// With INT: an integer outside smallint's range, or outside integer's. They only matter
/// when an existing column is too narrow; a new table's integers are bigint.
const BEYOND_INT2: u16 = 1 << 10;
const BEYOND_INT4: u16 = 1 << 11;
/// A number a double cannot hold exactly: its shortest double does not read back as the
/// same decimal value (`1234567890.123456789`, `9007199254740993`, `1e400`).
const NOT_DOUBLE: u16 = 1 << 12;

/// What the sample showed of each field, in order of first appearance.
#[derive(Debug, Default)]
pub struct Sample {
    fields: Vec<(String, u16)>,
    records: usize,
    /// The sampled records, one per line, to try an existing column's decoder on.
    text: Vec<u8>,
}

impl Sample {
    /// Adds one record. Records the decoder will refuse (not JSON, not an object) are
    /// skipped here: the decoder reports them, or sets them aside, when they are loaded.
    pub fn add(&mut self, record: &[u8]) {
        let Ok(record) = std::str::from_utf8(record) else {
            return;
        };
        let mut seen: Vec<(String, u16)> = Vec::new();
        let scanned = scan_record::<SyntaxError>(record, |key, escaped, value| {
            let mut name = String::new();
            if escaped {
                unescape(key, &mut name);
            } else {
                name.push_str(key);
            }
            seen.push((name, kind_of(record, &value)));
            Ok(())
        });
        if scanned.is_err() {
            return;
        }
        self.records += 1;
        self.text.extend_from_slice(record.as_bytes());
        self.text.push(b'\n');
        for (name, kind) in seen {
            match self.fields.iter_mut().find(|(n, _)| *n == name) {
                Some((_, kinds)) => *kinds |= kind,
                None => self.fields.push((name, kind)),
            }
        }
    }

    /// Names of the fields seen, in order of first appearance.
    pub(crate) fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    /// How many records (JSON objects) were sampled.
    pub(crate) fn records(&self) -> usize {
        self.records
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == name)
    }

    /// The wider type an existing column of type `current` needs to hold every sampled
    /// value of `name`, or `None` if it holds them already. Integer columns widen as far as
    /// the values need (int → bigint → numeric); with `to_text`, any other column whose
    /// decoder refuses a sampled value becomes text (otherwise that value fails the load).
    pub(crate) fn widening(&self, name: &str, current: PgType, to_text: bool) -> Option<PgType> {
        self.widening_number(name, current).or_else(|| {
            (to_text && self.contains(name) && self.refused_by(name, current))
                .then_some(PgType::Text)
        })
    }

    /// Whether a column `name` of type `current` refuses a sampled value: the column's own
    /// decoder is run over the sample, so the answer follows exactly the rules a load uses.
    fn refused_by(&self, name: &str, current: PgType) -> bool {
        let table = TableSchema {
            columns: vec![Column::new(name, current)],
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

    /// The integer ladder of [`Sample::widening`].
    fn widening_number(&self, name: &str, current: PgType) -> Option<PgType> {
        let rank = |t: PgType| match t {
            PgType::Int2 => Some(0),
            PgType::Int4 => Some(1),
            PgType::Int8 => Some(2),
            PgType::Numeric => Some(3),
            _ => None,
        };
        let (_, kinds) = self.fields.iter().find(|(n, _)| n == name)?;
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

    /// The table that would hold every sampled record without losing anything.
    pub fn infer(&self) -> TableSchema {
        TableSchema {
            columns: self
                .fields
                .iter()
                .map(|(name, kinds)| Column::new(name.clone(), resolve(*kinds & !NULL).0))
                .collect(),
        }
    }

    /// Why [`Sample::infer`] gave field `name` its type, in words (`--preview`).
    pub(crate) fn rule(&self, name: &str) -> Option<&'static str> {
        let (_, kinds) = self.fields.iter().find(|(n, _)| n == name)?;
        Some(resolve(*kinds & !NULL).1)
    }
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
        Kind::Object | Kind::Array => NESTED,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(records: &[&str]) -> Vec<(String, PgType)> {
        let mut sample = Sample::default();
        for r in records {
            sample.add(r.as_bytes());
        }
        sample
            .infer()
            .columns
            .into_iter()
            .map(|c| (c.name, c.pg_type))
            .collect()
    }

    #[test]
    fn infers_the_documented_mapping_in_field_order() {
        let got = infer(&[
            r#"{"id": 1, "amount": 2, "flag": true, "at": "2024-01-01T00:00:00Z", "day": "2024-01-01", "name": "x", "obj": {"a": 1}, "list": [1], "none": null, "big": 18446744073709551615, "local": "2024-01-01 10:00:00"}"#,
            r#"{"id": 9007199254740993, "amount": 2.5, "flag": null, "at": null, "day": "2024-02-03", "name": "2024-01-01", "obj": null, "list": null, "none": null, "big": 1, "local": null}"#,
        ]);
        assert_eq!(
            got,
            vec![
                ("id".into(), PgType::Int8),
                ("amount".into(), PgType::Float8),
                ("flag".into(), PgType::Bool),
                ("at".into(), PgType::Timestamptz),
                ("day".into(), PgType::Date),
                ("name".into(), PgType::Text),
                ("obj".into(), PgType::Jsonb),
                ("list".into(), PgType::Jsonb),
                ("none".into(), PgType::Text),
                ("big".into(), PgType::Numeric),
                ("local".into(), PgType::Timestamp),
            ]
        );
    }

    #[test]
    fn integer_columns_widen_only_as_far_as_the_values_need() {
        let mut sample = Sample::default();
        for r in [
            r#"{"small": 5, "mid": 40000, "big": 3000000000, "frac": 1.5, "huge": 18446744073709551615, "text": "x", "none": null}"#,
            r#"{"small": -7, "mid": 1, "big": 2, "frac": 2, "huge": 1, "text": 1, "none": null}"#,
        ] {
            sample.add(r.as_bytes());
        }
        let w = |name: &str, t: PgType| sample.widening(name, t, false);
        assert_eq!(w("small", PgType::Int2), None);
        assert_eq!(w("mid", PgType::Int2), Some(PgType::Int4));
        assert_eq!(w("mid", PgType::Int4), None);
        assert_eq!(w("big", PgType::Int4), Some(PgType::Int8));
        assert_eq!(w("big", PgType::Int8), None);
        assert_eq!(w("frac", PgType::Int8), Some(PgType::Numeric));
        assert_eq!(w("huge", PgType::Int8), Some(PgType::Numeric));
        assert_eq!(w("huge", PgType::Numeric), None);
        assert_eq!(w("big", PgType::Float8), None);
        assert_eq!(w("text", PgType::Int4), None);
        assert_eq!(w("none", PgType::Int2), None);
        assert_eq!(w("absent", PgType::Int2), None);
    }

    #[test]
    fn columns_become_text_when_asked_only_for_values_they_refuse() {
        let mut sample = Sample::default();
        for r in [
            r#"{"code": 5, "at": "2024-01-01T00:00:00Z", "ok": "t", "n": "12.5", "id": "A-1", "tag": {"a": 1}}"#,
            r#"{"code": "B-7", "at": "yesterday", "ok": true, "n": 3, "id": "b9c1e2d4-0000-4000-8000-000000000000", "tag": "x"}"#,
        ] {
            sample.add(r.as_bytes());
        }
        let w = |name: &str, t: PgType| sample.widening(name, t, true);
        assert_eq!(w("code", PgType::Int4), Some(PgType::Text));
        assert_eq!(w("at", PgType::Timestamptz), Some(PgType::Text));
        assert_eq!(w("ok", PgType::Bool), None);
        assert_eq!(w("n", PgType::Numeric), None);
        assert_eq!(w("id", PgType::Uuid), Some(PgType::Text));
        assert_eq!(w("tag", PgType::Jsonb), None);
        assert_eq!(w("tag", PgType::Text), None);
        assert_eq!(w("absent", PgType::Int4), None);
        assert_eq!(sample.widening("code", PgType::Int4, false), None);
    }

    #[test]
    fn mixed_kinds_widen_safely() {
        let got = infer(&[
            r#"{"a": 1, "b": true, "c": {"x": 1}, "d": "2024-01-01"}"#,
            r#"{"a": "one", "b": 1, "c": 2, "d": "2024-01-01T00:00:00Z"}"#,
            r#"{"e": 1}"#,
        ]);
        assert_eq!(
            got,
            vec![
                ("a".into(), PgType::Text),
                ("b".into(), PgType::Text),
                ("c".into(), PgType::Jsonb),
                ("d".into(), PgType::Text),
                ("e".into(), PgType::Int8),
            ]
        );
    }

    #[test]
    fn inference_keeps_every_value_exact() {
        let got = infer(&[
            r#"{"wei": 123456789012345678901234567890, "mixed": 0.5, "neg0": -0, "digits": 1.5, "f": 0.1, "ints": 1}"#,
            r#"{"wei": 1, "mixed": 9007199254740993, "neg0": 3, "digits": 1234567890.123456789, "f": 2.5e3, "ints": 9007199254740993}"#,
            r#"{"huge": 1e400, "tiny": 5e-324, "big_int_float": 1.5, "u64": 18446744073709551615}"#,
            r#"{"big_int_float": 9007199254740992}"#,
        ]);
        assert_eq!(
            got,
            vec![
                ("wei".into(), PgType::Numeric),
                ("mixed".into(), PgType::Numeric),
                ("neg0".into(), PgType::Int8),
                ("digits".into(), PgType::Numeric),
                ("f".into(), PgType::Float8),
                ("ints".into(), PgType::Int8),
                ("huge".into(), PgType::Numeric),
                ("tiny".into(), PgType::Float8),
                // 2^53 itself is a double exactly.
                ("big_int_float".into(), PgType::Float8),
                ("u64".into(), PgType::Numeric),
            ]
        );
    }

    #[test]
    fn the_sample_skips_only_records_the_decoder_refuses() {
        let mut sample = Sample::default();
        for r in [
            r#"{"id": 1, "c": 1e400}"#,
            r#"{"id": 2, "c": 01}"#,
            r#"[1, 2]"#,
            r#"{"id": 3, "kéy": "x", "c": 2}"#,
        ] {
            sample.add(r.as_bytes());
        }
        assert_eq!(sample.records(), 2);
        assert_eq!(
            sample.field_names().collect::<Vec<_>>(),
            vec!["id", "c", "kéy"]
        );
        assert_eq!(
            sample
                .infer()
                .columns
                .iter()
                .map(|c| c.pg_type)
                .collect::<Vec<_>>(),
            vec![PgType::Int8, PgType::Numeric, PgType::Text]
        );
    }
}
