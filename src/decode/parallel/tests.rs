//! Unit tests of `parallel`: on any input, spreading the decoding over threads changes
//! nothing a load can see.

use super::*;
use crate::decode::{Framer, Rejected};
use crate::schema::{Column, PgType};
use proptest::prelude::*;

fn table() -> TableSchema {
    TableSchema {
        columns: [
            ("a", PgType::Int8),
            ("b", PgType::Text),
            ("c", PgType::Jsonb),
            ("d", PgType::Timestamptz),
            ("e", PgType::Numeric),
        ]
        .iter()
        .map(|(n, t)| Column::new(*n, *t))
        .collect(),
    }
}

fn options(batch_size: usize, reject: bool) -> DecodeOptions {
    DecodeOptions {
        batch_size,
        reject_unknown_fields: true,
        unknown_field_hint: "has no column".into(),
        must_stay_null: vec![],
        reject,
        zone: None,
        max_batch_bytes: 300,
        plus_infinity: true,
        family: None,
    }
}

/// What a load sees of a decoding: every row (as one batch), each row's record number, the
/// records set aside; or the error.
type Seen = Result<(Option<arrow_array::RecordBatch>, Vec<u64>, Vec<Rejected>), DecodeError>;

/// How the decode stage is handed the input: the first `sampled` bytes framed on its
/// thread and pushed record by record (the planner's sample), the rest in chunks of
/// `chunk` bytes through [`Decoder::push_bytes`].
#[derive(Debug, Clone, Copy)]
struct Feeding {
    sampled: usize,
    chunk: usize,
}

fn decode(input: &[u8], options: DecodeOptions, threads: usize, feeding: Feeding) -> Seen {
    let table = table();
    let reject = options.reject;
    let mut decoder = Decoder::new(&table, options, threads).unwrap();
    let mut out = Vec::new();
    // Lines past 150 bytes are too long: skipped in reject mode (the framer hands on an
    // empty stand-in), an error otherwise.
    let mut framer = Framer::new(None, 150);
    if reject {
        framer = framer.skipping_oversized();
    }
    let (sampled, rest) = input.split_at(feeding.sampled.min(input.len()));
    let mut pushed = framer.push(sampled, &mut |record, at| {
        decoder.push(record, at, &mut out)
    });
    for chunk in rest.chunks(feeding.chunk.max(1)) {
        let chunk = bytes::Bytes::copy_from_slice(chunk);
        pushed = pushed.and_then(|()| decoder.push_bytes(&mut framer, chunk, &mut out));
    }
    // As the decode stage does: a stop reports the error on the earliest line.
    let decoded = pushed
        .and_then(|()| framer.finish(&mut |record, at| decoder.push(record, at, &mut out)))
        .and_then(|()| decoder.finish(&mut out));
    if let Err(error) = decoded {
        return Err(decoder.earliest_error(error));
    }
    let numbers = out
        .iter()
        .flat_map(|d| (0..d.batch.num_rows()).map(|row| d.record_of(row)))
        .collect();
    let rejected = out.iter().flat_map(|d| d.rejected.clone()).collect();
    let batches: Vec<_> = out.into_iter().map(|d| d.batch).collect();
    let rows = batches
        .first()
        .map(|first| arrow_select::concat::concat_batches(&first.schema(), &batches).unwrap());
    Ok((rows, numbers, rejected))
}

/// One NDJSON line: a good record, one with a value its column refuses, one that is not
/// JSON, one with a field no column has, one that is not UTF-8, one too long to keep
/// (blank or not), a blank one, or one padded with blanks up to the limit or past it.
/// (A job holding a line that is not UTF-8 is decoded record by record; others in place.)
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (any::<i32>(), "[a-zé日 ]{0,12}").prop_map(|(a, b)| format!(
            "{{\"a\":{a},\"b\":{},\"c\":{{\"k\":[{a}]}},\"d\":\"2024-01-0{}T10:00:00Z\",\"e\":{a}.5}}",
            serde_json::Value::String(b),
            (a.rem_euclid(9)) + 1
        ).into_bytes()),
        1 => Just(b"{\"a\":\"twelve\"}".to_vec()),
        1 => Just(b"{\"a\":1,\"d\":\"yesterday\"}".to_vec()),
        1 => Just(b"{\"a\":".to_vec()),
        1 => Just(b"{\"z\":1}".to_vec()),
        1 => Just(b"{\"a\":2,\"b\":\"caf\xe9\"}".to_vec()),
        1 => Just(format!("{{\"a\":3,\"b\":\"{}\"}}", "x".repeat(160)).into_bytes()),
        1 => Just(format!("{{\"a\":4,\"b\":\"{}\"}}", "y".repeat(400)).into_bytes()),
        1 => Just(" ".repeat(151).into_bytes()),
        1 => Just(b" \t\r".to_vec()),
        1 => (0usize..12).prop_map(|pad| format!("{}{{\"a\":5}}\r", " ".repeat(140 + pad)).into_bytes()),
    ]
}

proptest! {
    #[test]
    fn threads_change_nothing(
        lines in prop::collection::vec(line(), 0..60),
        batch_size in 1usize..8,
        reject in any::<bool>(),
        threads in 2usize..5,
        sampled in 0usize..2000,
        chunk in prop_oneof![1usize..40, 40usize..700],
        end_with_newline in any::<bool>(),
    ) {
        let mut input = lines.join(&b'\n');
        if end_with_newline {
            input.push(b'\n');
        }
        // One thread, framed on the caller's thread as one piece: the reference.
        let whole = Feeding { sampled: input.len(), chunk: 1 };
        let alone = decode(&input, options(batch_size, reject), 1, whole);
        let feeding = Feeding { sampled, chunk };
        prop_assert_eq!(&alone, &decode(&input, options(batch_size, reject), 1, feeding));
        prop_assert_eq!(&alone, &decode(&input, options(batch_size, reject), threads, feeding));
    }
}

#[test]
fn a_parallel_decoder_dropped_midway_stops_its_threads() {
    let table = table();
    let mut decoder = ParallelDecoder::new(&table, &options(2, false), 3).unwrap();
    let mut out = Vec::new();
    for i in 0..9 {
        let record = format!("{{\"a\":{i}}}");
        decoder
            .push(
                record.as_bytes(),
                Position {
                    line: i + 1,
                    column: 1,
                },
                &mut out,
            )
            .unwrap();
    }
    // Jobs are in flight, results waiting: dropping must not hang.
    drop(decoder);
    assert!(out.len() <= 4, "{}", out.len());
}

#[test]
fn a_line_without_end_keeps_no_more_than_one_byte_past_the_limit() {
    let table = table();
    let mut decoder = ParallelDecoder::new(&table, &options(2, false), 2).unwrap();
    let mut out = Vec::new();
    let start = LineStart {
        line: 7,
        max_record_bytes: 100,
        skip_oversized: false,
    };
    decoder.start_lines(start, &mut out).unwrap();
    let endless = bytes::Bytes::from(vec![b'x'; 1000]);
    for _ in 0..1000 {
        decoder.push_lines(endless.clone(), &mut out).unwrap();
        let held: usize = decoder.job.pieces.iter().map(bytes::Bytes::len).sum();
        assert_eq!(held, 101);
    }
    decoder
        .push_lines(bytes::Bytes::from_static(b"xx\n{\"a\":1}\n"), &mut out)
        .unwrap();
    assert_eq!(
        decoder.finish(&mut out),
        Err(DecodeError::RecordTooLarge {
            line: 7,
            limit: 100
        })
    );
}
