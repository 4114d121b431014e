//! Infers column types from a sample of records, for tables apitap creates.
//!
//! Only the first `--sample` records are looked at, so this may build a `serde_json::Value`
//! per record; the stream itself never does. Column order is the order fields first appear.

use serde_json::Value;

use super::values::{StringShape, string_shape};
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

/// What the sample showed of each field, in order of first appearance.
#[derive(Debug, Default)]
pub struct Sample {
    fields: Vec<(String, u16)>,
    records: usize,
}

impl Sample {
    /// Adds one record. Records that are not JSON objects are skipped here: the decoder
    /// reports them with their line when they are loaded.
    pub fn add(&mut self, record: &[u8]) {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(record) else {
            return;
        };
        self.records += 1;
        for (name, value) in map {
            let kind = kind_of(&value);
            match self.fields.iter_mut().find(|(n, _)| *n == name) {
                Some((_, kinds)) => *kinds |= kind,
                None => self.fields.push((name, kind)),
            }
        }
    }

    /// Names of the fields seen, in order of first appearance.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    /// How many records (JSON objects) were sampled.
    pub fn records(&self) -> usize {
        self.records
    }

    pub fn contains(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == name)
    }

    /// The table that would hold every sampled record without losing anything.
    pub fn infer(&self) -> TableSchema {
        TableSchema {
            columns: self
                .fields
                .iter()
                .map(|(name, kinds)| Column {
                    name: name.clone(),
                    pg_type: resolve(*kinds & !NULL),
                })
                .collect(),
        }
    }
}

fn kind_of(value: &Value) -> u16 {
    match value {
        Value::Null => NULL,
        Value::Bool(_) => BOOL,
        Value::Number(n) if n.is_i64() => INT,
        Value::Number(n) if n.is_u64() => BIG_INT,
        Value::Number(_) => FLOAT,
        Value::String(s) => match string_shape(s) {
            StringShape::TimestampTz => TIMESTAMPTZ,
            StringShape::Timestamp => TIMESTAMP,
            StringShape::Date => DATE,
            StringShape::Other => STRING,
        },
        Value::Array(_) | Value::Object(_) => NESTED,
    }
}

/// The narrowest type that holds every kind seen. Mixed scalars fall back to text, which
/// keeps each value as written; anything nested makes the column jsonb.
fn resolve(kinds: u16) -> PgType {
    if kinds & NESTED != 0 {
        return PgType::Jsonb;
    }
    match kinds {
        0 => PgType::Text,
        BOOL => PgType::Bool,
        INT => PgType::Int8,
        k if k & !(INT | FLOAT) == 0 => PgType::Float8,
        k if k & !(INT | BIG_INT | FLOAT) == 0 => PgType::Numeric,
        TIMESTAMPTZ => PgType::Timestamptz,
        TIMESTAMP => PgType::Timestamp,
        DATE => PgType::Date,
        _ => PgType::Text,
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
}
