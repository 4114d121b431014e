//! Arrow columns → PostgreSQL text values, for the INSERT fallback.
//!
//! Where COPY is unavailable (some proxies and poolers), rows go as
//! `INSERT … SELECT … FROM unnest($1::text[], …)`: one array parameter per column, whatever
//! the row count, so the 65,535-parameter limit never applies. Each value is written in the
//! text form PostgreSQL's input functions read back exactly.

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType};

use crate::schema::PgType;

fn each<T: ArrowPrimitiveType>(
    array: &ArrayRef,
    mut text: impl FnMut(T::Native) -> String,
) -> Vec<Option<String>> {
    array
        .as_primitive::<T>()
        .iter()
        .map(|v| v.map(&mut text))
        .collect()
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        v.to_string()
    }
}

fn timestamp(micros: i64, zone: &str) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        _ => chrono::DateTime::from_timestamp_micros(micros)
            .map(|t| format!("{}{zone}", t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f")))
            .unwrap_or_default(),
    }
}

/// The column's values as PostgreSQL text, `None` for NULL.
pub fn column_text(array: &ArrayRef, pg_type: PgType) -> Vec<Option<String>> {
    match pg_type {
        PgType::Int2 => each::<Int16Type>(array, |v| v.to_string()),
        PgType::Int4 => each::<Int32Type>(array, |v| v.to_string()),
        PgType::Int8 => each::<Int64Type>(array, |v| v.to_string()),
        PgType::Float4 => each::<Float32Type>(array, |v| float(v.into())),
        PgType::Float8 => each::<Float64Type>(array, float),
        PgType::Bool => array
            .as_boolean()
            .iter()
            .map(|v| v.map(|b| if b { "t" } else { "f" }.to_string()))
            .collect(),
        PgType::Text | PgType::Json | PgType::Jsonb | PgType::Numeric => array
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
        PgType::Timestamptz => each::<TimestampMicrosecondType>(array, |v| timestamp(v, "+00")),
        PgType::Timestamp => each::<TimestampMicrosecondType>(array, |v| timestamp(v, "")),
        PgType::Date => each::<Date32Type>(array, |days| match days {
            i32::MAX => "infinity".into(),
            i32::MIN => "-infinity".into(),
            _ => (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
                + chrono::Duration::days(days.into()))
            .format("%Y-%m-%d")
            .to_string(),
        }),
        PgType::Time => each::<Time64MicrosecondType>(array, |micros| {
            let (s, us) = (micros / 1_000_000, micros % 1_000_000);
            format!("{:02}:{:02}:{:02}.{us:06}", s / 3600, s / 60 % 60, s % 60)
        }),
        PgType::Uuid => {
            let a = array.as_fixed_size_binary();
            (0..a.len())
                .map(|i| {
                    a.is_valid(i).then(|| {
                        uuid::Uuid::from_slice(a.value(i))
                            .map(|u| u.hyphenated().to_string())
                            .unwrap_or_default()
                    })
                })
                .collect()
        }
        PgType::Bytea => array
            .as_binary::<i32>()
            .iter()
            .map(|v| {
                v.map(|bytes| {
                    let mut hex = String::with_capacity(2 + 2 * bytes.len());
                    hex.push_str("\\x");
                    for b in bytes {
                        let _ = write!(hex, "{b:02x}");
                    }
                    hex
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{
        BinaryArray, Float64Array, Time64MicrosecondArray, TimestampMicrosecondArray,
    };

    #[test]
    fn values_read_back_exactly() {
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(1_709_231_399_123_456),
                Some(i64::MAX),
                None,
            ])
            .with_timezone("UTC"),
        );
        assert_eq!(
            column_text(&ts, PgType::Timestamptz),
            vec![
                Some("2024-02-29 18:29:59.123456+00".into()),
                Some("infinity".into()),
                None
            ]
        );
        let f: ArrayRef = Arc::new(Float64Array::from(vec![0.1, f64::NEG_INFINITY, f64::NAN]));
        assert_eq!(
            column_text(&f, PgType::Float8),
            vec![
                Some("0.1".into()),
                Some("-Infinity".into()),
                Some("NaN".into())
            ]
        );
        let t: ArrayRef = Arc::new(Time64MicrosecondArray::from(vec![86_399_999_999]));
        assert_eq!(
            column_text(&t, PgType::Time),
            vec![Some("23:59:59.999999".into())]
        );
        let b: ArrayRef = Arc::new(BinaryArray::from(vec![&b"\x00\xff"[..]]));
        assert_eq!(column_text(&b, PgType::Bytea), vec![Some("\\x00ff".into())]);
    }
}
