//! Property tests: random values of every column type go through apitap's binary COPY
//! encoder and through the INSERT fallback's text form, and must land exactly as PostgreSQL's
//! own input reads their text. PostgreSQL is the oracle: each value's text is also inserted
//! with `$1::text::type`, and the three tables must hold the same values.

use std::sync::Arc;

use apitap::encode::{COPY_HEADER, COPY_TRAILER, CopyEncoder};
use apitap::schema::PgType;
use arrow_array::builder::{BinaryBuilder, FixedSizeBinaryBuilder, StringBuilder};
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{ArrayRef, BooleanArray, PrimitiveArray, RecordBatch};
use futures_util::SinkExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::common::*;

/// One column of random values: the Arrow array, and each value's text as PostgreSQL's input
/// function reads it (`None` for NULL).
#[derive(Debug, Clone)]
struct Column {
    array: ArrayRef,
    texts: Vec<Option<String>>,
}

fn nullable<T: std::fmt::Debug + Clone>(
    value: impl Strategy<Value = T>,
) -> impl Strategy<Value = Vec<Option<T>>> {
    prop::collection::vec(prop::option::weighted(0.9, value), 1..60)
}

fn primitive<T: arrow_array::ArrowPrimitiveType>(
    values: Vec<Option<T::Native>>,
    text: impl Fn(T::Native) -> String,
) -> Column {
    let texts = values.iter().map(|v| v.map(&text)).collect();
    Column {
        array: Arc::new(values.into_iter().collect::<PrimitiveArray<T>>()),
        texts,
    }
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v:e}")
    }
}

/// A timestamp's text, from microseconds since 1970, in years 1 to 9999.
fn timestamp_text(micros: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(micros).unwrap();
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// The JSON text of a random value (a small document).
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        "[a-zé日\\\\\"\\n ]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z]{1,4}", inner), 0..4).prop_map(|v| {
                let fields: Vec<String> = v
                    .into_iter()
                    .map(|(k, v)| format!("{}: {v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }),
        ]
    })
}

/// Random values for `pg_type`.
fn column(pg_type: PgType) -> BoxedStrategy<Column> {
    // PostgreSQL's timestamps, in the years 0001–9999 apitap parses.
    let micros = -62_135_596_800_000_000i64..253_402_300_799_999_999i64;
    match pg_type {
        PgType::Int2 => nullable(any::<i16>())
            .prop_map(|v| primitive::<Int16Type>(v, |x| x.to_string()))
            .boxed(),
        PgType::Int4 => nullable(any::<i32>())
            .prop_map(|v| primitive::<Int32Type>(v, |x| x.to_string()))
            .boxed(),
        PgType::Int8 => nullable(any::<i64>())
            .prop_map(|v| primitive::<Int64Type>(v, |x| x.to_string()))
            .boxed(),
        PgType::Float4 => nullable(any::<f32>())
            .prop_map(|v| primitive::<Float32Type>(v, |x| float_text(f64::from(x))))
            .boxed(),
        PgType::Float8 => nullable(any::<f64>())
            .prop_map(|v| primitive::<Float64Type>(v, float_text))
            .boxed(),
        PgType::Bool => nullable(any::<bool>())
            .prop_map(|v| Column {
                texts: v.iter().map(|b| b.map(|b| b.to_string())).collect(),
                array: Arc::new(BooleanArray::from(v)),
            })
            .boxed(),
        PgType::Timestamp | PgType::Timestamptz => nullable(micros)
            .prop_map(move |v| timestamps(v, pg_type))
            .boxed(),
        PgType::Date => nullable(-719_162i32..2_932_896)
            .prop_map(|v| {
                primitive::<Date32Type>(v, |d| {
                    timestamp_text(i64::from(d) * 86_400_000_000)[..10].to_string()
                })
            })
            .boxed(),
        PgType::Time => nullable(0i64..=86_400_000_000)
            .prop_map(|v| {
                primitive::<Time64MicrosecondType>(v, |m| {
                    if m == 86_400_000_000 {
                        "24:00:00".into()
                    } else {
                        timestamp_text(m)[11..].to_string()
                    }
                })
            })
            .boxed(),
        PgType::Numeric => nullable(prop_oneof![
            "-?[0-9]{1,30}(\\.[0-9]{1,20})?",
            "-?[0-9]\\.[0-9]{0,10}e-?[0-9]{1,3}",
            Just("NaN".to_string()),
            Just("Infinity".to_string()),
            Just("-Infinity".to_string()),
        ])
        .prop_map(|v| strings(v, PgType::Numeric))
        .boxed(),
        PgType::Text => nullable("[^\u{0}]{0,20}")
            .prop_map(|v| strings(v, PgType::Text))
            .boxed(),
        PgType::Json | PgType::Jsonb => nullable(json_value())
            .prop_map(move |v| strings(v, pg_type))
            .boxed(),
        PgType::Uuid => nullable(any::<[u8; 16]>()).prop_map(uuids).boxed(),
        PgType::Bytea => nullable(prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(byteas)
            .boxed(),
    }
}

/// Timestamps (with `+00` and a UTC Arrow zone for timestamptz) as PostgreSQL prints them.
fn timestamps(v: Vec<Option<i64>>, pg_type: PgType) -> Column {
    let zone = if pg_type == PgType::Timestamptz {
        "+00"
    } else {
        ""
    };
    let mut c =
        primitive::<TimestampMicrosecondType>(v, |m| format!("{}{zone}", timestamp_text(m)));
    if pg_type == PgType::Timestamptz {
        c.array = Arc::new(
            c.array
                .as_any()
                .downcast_ref::<PrimitiveArray<TimestampMicrosecondType>>()
                .unwrap()
                .clone()
                .with_timezone("UTC"),
        );
    }
    c
}

fn uuids(v: Vec<Option<[u8; 16]>>) -> Column {
    let mut builder = FixedSizeBinaryBuilder::new(16);
    for value in &v {
        match value {
            Some(bytes) => builder.append_value(bytes).unwrap(),
            None => builder.append_null(),
        }
    }
    Column {
        texts: v
            .iter()
            .map(|b| b.map(|b| uuid::Uuid::from_bytes(b).to_string()))
            .collect(),
        array: Arc::new(builder.finish()),
    }
}

/// Bytes, and their `\x` hex text.
fn byteas(v: Vec<Option<Vec<u8>>>) -> Column {
    let mut builder = BinaryBuilder::new();
    for value in &v {
        match value {
            Some(bytes) => builder.append_value(bytes),
            None => builder.append_null(),
        }
    }
    Column {
        texts: v
            .iter()
            .map(|b| {
                b.as_ref().map(|b| {
                    format!(
                        "\\x{}",
                        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                    )
                })
            })
            .collect(),
        array: Arc::new(builder.finish()),
    }
}

fn strings(values: Vec<Option<String>>, _: PgType) -> Column {
    let mut builder = StringBuilder::new();
    for value in &values {
        builder.append_option(value.as_deref());
    }
    Column {
        array: Arc::new(builder.finish()),
        texts: values,
    }
}

const TYPES: [PgType; 16] = [
    PgType::Int2,
    PgType::Int4,
    PgType::Int8,
    PgType::Float4,
    PgType::Float8,
    PgType::Numeric,
    PgType::Bool,
    PgType::Text,
    PgType::Timestamptz,
    PgType::Timestamp,
    PgType::Date,
    PgType::Time,
    PgType::Uuid,
    PgType::Json,
    PgType::Jsonb,
    PgType::Bytea,
];

/// Loads one random column three ways and returns what differs (empty when exact).
async fn differences(
    db: &tokio_postgres::Client,
    schema: &str,
    pg_type: PgType,
    column: Column,
) -> Vec<String> {
    let sql_type = pg_type.sql_name();
    let rows = column.texts.len();
    let ids: Vec<i64> = (0..rows as i64).collect();
    let (oracle, copied, inserted) = (
        format!("{schema}.oracle"),
        format!("{schema}.copied"),
        format!("{schema}.inserted"),
    );
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS {oracle}, {copied}, {inserted};
         CREATE TABLE {oracle} (id bigint, v {sql_type});
         CREATE TABLE {copied} (id bigint, v {sql_type});
         CREATE TABLE {inserted} (id bigint, v {sql_type})"
    ))
    .await
    .unwrap();
    db.execute(
        &format!(
            "INSERT INTO {oracle} SELECT * FROM unnest($1::bigint[], $2::text[]::{sql_type}[])"
        ),
        &[&ids, &column.texts],
    )
    .await
    .unwrap();
    // Binary COPY through apitap's encoder.
    let id_array: ArrayRef = Arc::new(PrimitiveArray::<Int64Type>::from(ids.clone()));
    let batch =
        RecordBatch::try_from_iter([("id", id_array), ("v", column.array.clone())]).unwrap();
    let mut encoder = CopyEncoder::new(vec!["id".into(), "v".into()], vec![PgType::Int8, pg_type]);
    let mut out = bytes::BytesMut::new();
    encoder.encode(&batch, 1, &mut out).unwrap();
    let sink = db
        .copy_in::<_, bytes::Bytes>(&format!("COPY {copied} FROM STDIN (FORMAT binary)"))
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(COPY_HEADER))
        .await
        .unwrap();
    sink.send(out.freeze()).await.unwrap();
    sink.send(bytes::Bytes::from_static(COPY_TRAILER))
        .await
        .unwrap();
    sink.finish().await.unwrap();
    // The INSERT fallback's text form.
    let texts = apitap::encode::text::column_text(&column.array, pg_type);
    db.execute(
        &format!("INSERT INTO {inserted} SELECT u.id, u.v::{sql_type} FROM unnest($1::bigint[], $2::text[]) AS u(id, v)"),
        &[&ids, &texts],
    )
    .await
    .unwrap();
    let mut found = Vec::new();
    for table in [&copied, &inserted] {
        let rows = db
            .query(
                &format!(
                    "SELECT o.id, o.v::text, t.v::text FROM {oracle} o JOIN {table} t USING (id)
                     WHERE o.v::text IS DISTINCT FROM t.v::text"
                ),
                &[],
            )
            .await
            .unwrap();
        for row in rows {
            let (id, want, got): (i64, Option<String>, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            found.push(format!(
                "{sql_type} via {table}: row {id}: {want:?} landed as {got:?}"
            ));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_values_of_every_type_round_trip_exactly() {
    let db = client().await;
    let schema = fresh_schema(&db, "roundtrip").await;
    for pg_type in TYPES {
        let mut runner = TestRunner::new(Config {
            cases: 12,
            failure_persistence: None,
            ..Config::default()
        });
        // Generate the cases first: the runner is synchronous, the checks are not.
        let strategy = column(pg_type);
        let mut cases = Vec::new();
        for _ in 0..12 {
            cases.push(strategy.new_tree(&mut runner).unwrap().current());
        }
        for column in cases {
            let found = differences(&db, &schema, pg_type, column).await;
            assert!(found.is_empty(), "{}", found.join("\n"));
        }
    }
}
