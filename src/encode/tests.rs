//! Unit tests of `encode`.

use super::*;
use std::sync::Arc;

use arrow_array::{
    BinaryArray, BooleanArray, Date32Array, FixedSizeBinaryArray, Float64Array, Int16Array,
    Int32Array, Int64Array, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};

fn numeric(text: &str) -> (u16, i16, u16, u16, Vec<i16>) {
    let mut out = Vec::new();
    encode_numeric(text, &mut out).unwrap();
    let word = |i: usize| u16::from_be_bytes([out[2 * i], out[2 * i + 1]]);
    let n = word(0);
    let digits = (0..n as usize).map(|i| word(4 + i) as i16).collect();
    (n, word(1) as i16, word(2), word(3), digits)
}

#[test]
fn numeric_matches_postgres_send_format() {
    // Expected values are what `SELECT numeric_send('…')` returns on PostgreSQL 15.
    assert_eq!(numeric("0"), (0, 0, 0, 0, vec![]));
    assert_eq!(numeric("0.00"), (0, 0, 0, 2, vec![]));
    assert_eq!(numeric("12345.678"), (3, 1, 0, 3, vec![1, 2345, 6780]));
    assert_eq!(numeric("-1.5"), (2, 0, 0x4000, 1, vec![1, 5000]));
    assert_eq!(numeric("0.0001"), (1, -1, 0, 4, vec![1]));
    assert_eq!(numeric("1e3"), (1, 0, 0, 0, vec![1000]));
    assert_eq!(numeric("1.5e-3"), (1, -1, 0, 4, vec![15]));
    assert_eq!(numeric("10000"), (1, 1, 0, 0, vec![1]));
    assert_eq!(
        numeric("123456789012345678901234567890"),
        (
            8,
            7,
            0,
            0,
            vec![12, 3456, 7890, 1234, 5678, 9012, 3456, 7890]
        )
    );
    assert_eq!(numeric("NaN"), (0, 0, 0xC000, 0, vec![]));
    assert_eq!(numeric("-Infinity"), (0, 0, 0xF000, 0, vec![]));
    for bad in ["", "-", ".", "1.2.3", "1e", "abc", "1 ", "0x10"] {
        assert!(encode_numeric(bad, &mut Vec::new()).is_err(), "{bad:?}");
    }
}

fn encode_one(types: Vec<PgType>, columns: Vec<ArrayRef>) -> Result<Vec<u8>, EncodeError> {
    let names = (0..types.len()).map(|i| format!("c{i}")).collect();
    let batch = RecordBatch::try_from_iter(
        columns
            .into_iter()
            .enumerate()
            .map(|(i, a)| (format!("c{i}"), a)),
    )
    .unwrap();
    let mut out = BytesMut::new();
    CopyEncoder::new(names, types).encode(&batch, 1, &mut out)?;
    Ok(out.to_vec())
}

#[test]
fn row_ends_split_the_output_into_whole_rows() {
    let batch = RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        (
            "b",
            Arc::new(StringArray::from(vec![Some("x"), None, Some("long text")])),
        ),
    ])
    .unwrap();
    let mut encoder = CopyEncoder::new(
        vec!["a".into(), "b".into()],
        vec![PgType::Int8, PgType::Text],
    );
    let mut out = BytesMut::from(&b"earlier"[..]);
    encoder.encode(&batch, 1, &mut out).unwrap();
    // Each row: field count (2) + int8 (4 + 8) + text (4 + len, or 4 for NULL).
    let start = b"earlier".len();
    assert_eq!(
        encoder.row_ends(),
        &[
            start + 2 + 12 + 5,
            start + 2 + 12 + 5 + 2 + 12 + 4,
            out.len()
        ]
    );
    let second = &out[encoder.row_ends()[0]..encoder.row_ends()[1]];
    assert_eq!(&second[..2], &2i16.to_be_bytes());
    assert_eq!(&second[6..14], &2i64.to_be_bytes());
}

#[test]
fn snapshot_of_every_fixed_width_type() {
    let bytes = encode_one(
        vec![
            PgType::Bool,
            PgType::Int2,
            PgType::Int4,
            PgType::Int8,
            PgType::Float8,
            PgType::Date,
            PgType::Timestamptz,
            PgType::Time,
            PgType::Uuid,
        ],
        vec![
            Arc::new(BooleanArray::from(vec![Some(true), None])),
            Arc::new(Int16Array::from(vec![Some(-2), None])),
            Arc::new(Int32Array::from(vec![Some(7), None])),
            Arc::new(Int64Array::from(vec![Some(9_007_199_254_740_993), None])),
            Arc::new(Float64Array::from(vec![Some(1.5), None])),
            Arc::new(Date32Array::from(vec![Some(10_958), None])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(946_684_800_000_001), None])
                    .with_timezone("UTC"),
            ),
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(3_600_000_000),
                None,
            ])),
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    vec![Some([0xabu8; 16]), None].into_iter(),
                    16,
                )
                .unwrap(),
            ),
        ],
    )
    .unwrap();
    let mut expected: Vec<u8> = vec![0, 9];
    expected.extend([0, 0, 0, 1, 1]);
    expected.extend([0, 0, 0, 2, 0xff, 0xfe]);
    expected.extend([0, 0, 0, 4, 0, 0, 0, 7]);
    expected.extend([0, 0, 0, 8, 0, 0x20, 0, 0, 0, 0, 0, 1]);
    expected.extend([0, 0, 0, 8, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    expected.extend([0, 0, 0, 4, 0, 0, 0, 1]);
    expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
    expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0xd6, 0x93, 0xa4, 0]);
    expected.extend([0, 0, 0, 16]);
    expected.extend([0xab; 16]);
    expected.extend([0, 9]);
    for _ in 0..9 {
        expected.extend([0xff, 0xff, 0xff, 0xff]);
    }
    assert_eq!(bytes, expected);
}

#[test]
fn snapshot_of_variable_width_types() {
    let bytes = encode_one(
        vec![PgType::Text, PgType::Jsonb, PgType::Bytea, PgType::Numeric],
        vec![
            Arc::new(StringArray::from(vec![Some("é\\N"), Some("")])),
            Arc::new(StringArray::from(vec![Some("{}"), None])),
            Arc::new(BinaryArray::from(vec![Some(&b"\x00\x01"[..]), None])),
            Arc::new(StringArray::from(vec![Some("-1.5"), None])),
        ],
    )
    .unwrap();
    let mut expected: Vec<u8> = vec![0, 4];
    expected.extend([0, 0, 0, 4, 0xc3, 0xa9, b'\\', b'N']);
    expected.extend([0, 0, 0, 3, 1, b'{', b'}']);
    expected.extend([0, 0, 0, 2, 0, 1]);
    expected.extend([0, 0, 0, 12, 0, 2, 0, 0, 0x40, 0, 0, 1, 0, 1, 0x13, 0x88]);
    expected.extend([0, 4]);
    expected.extend([0, 0, 0, 0]);
    for _ in 0..3 {
        expected.extend([0xff, 0xff, 0xff, 0xff]);
    }
    assert_eq!(bytes, expected);
}

#[test]
fn two_numeric_columns_encode_independently() {
    let bytes = encode_one(
        vec![PgType::Numeric, PgType::Numeric],
        vec![
            Arc::new(StringArray::from(vec!["1", "2"])),
            Arc::new(StringArray::from(vec!["10000", "3"])),
        ],
    )
    .unwrap();
    let row = |a: i16, b_weight: i16, b: i16| {
        let mut r = vec![0u8, 2, 0, 0, 0, 10, 0, 1, 0, 0, 0, 0, 0, 0];
        r.extend(a.to_be_bytes());
        r.extend([0, 0, 0, 10, 0, 1]);
        r.extend(b_weight.to_be_bytes());
        r.extend([0, 0, 0, 0]);
        r.extend(b.to_be_bytes());
        r
    };
    let mut expected = row(1, 1, 1);
    expected.extend(row(2, 0, 3));
    assert_eq!(bytes, expected);
}

#[test]
fn nul_in_text_names_the_record() {
    let err = encode_one(
        vec![PgType::Text],
        vec![Arc::new(StringArray::from(vec!["ok", "ok", "a\0b"]))],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 3: column \"c0\": text contains a NUL character (\\u0000), which PostgreSQL cannot store"
    );
}

#[test]
fn sliced_batches_encode_their_own_rows() {
    let array: ArrayRef = Arc::new(StringArray::from(vec!["skip", "keep"]));
    let batch = RecordBatch::try_from_iter([("c0", array)])
        .unwrap()
        .slice(1, 1);
    let mut out = BytesMut::new();
    CopyEncoder::new(vec!["c0".into()], vec![PgType::Text])
        .encode(&batch, 1, &mut out)
        .unwrap();
    assert_eq!(&out[..], &[0, 1, 0, 0, 0, 4, b'k', b'e', b'e', b'p']);
}
