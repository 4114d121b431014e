//! Shared input for the decode and encode benches: demo API rows as NDJSON, and the table
//! apitap infers for them.

use apitap::decode::{DecodeOptions, Decoded, Decoder, Framer, Sample};
use apitap::schema::TableSchema;
use bytes::Bytes;

pub const ROWS: u64 = 100_000;

/// The rows as one buffer, which the decoders take in slices as a load takes the fetch
/// stage's chunks.
pub fn ndjson() -> Bytes {
    let mut out = Vec::new();
    for i in 1..=ROWS {
        apitap::demo::write_row(i, &mut out);
        out.push(b'\n');
    }
    Bytes::from(out)
}

pub fn table(input: &[u8]) -> TableSchema {
    table_flattened(input, 0)
}

/// The table `--nested flatten --max-nesting DEPTH` infers (0: `--nested keep`).
pub fn table_flattened(input: &[u8], depth: usize) -> TableSchema {
    let mut sample = Sample::new(depth);
    for line in input.split(|&b| b == b'\n').take(1000) {
        sample.add(line);
    }
    sample.infer()
}

/// Frames and decodes `input` the way a load does, in the fetch stage's 256 KiB chunks, on
/// `threads` threads (1: the caller's alone), handing each batch to `take` as it is ready.
pub fn decode_into(
    input: &Bytes,
    table: &TableSchema,
    threads: usize,
    mut take: impl FnMut(Vec<Decoded>),
) {
    let options = DecodeOptions {
        batch_size: 8192,
        reject_unknown_fields: true,
        unknown_field_hint: String::new(),
        must_stay_null: Vec::new(),
        reject: false,
        zone: None,
        max_batch_bytes: apitap::decode::LOAD_BATCH_BYTES,
        plus_infinity: true,
        family: None,
    };
    let mut decoder = Decoder::new(table, options, threads).expect("decode threads start");
    let mut framer = Framer::new(None, 1 << 26);
    let mut out = Vec::new();
    for start in (0..input.len()).step_by(256 * 1024) {
        let chunk = input.slice(start..input.len().min(start + 256 * 1024));
        decoder
            .push_bytes(&mut framer, chunk, &mut out)
            .expect("demo rows decode");
        take(std::mem::take(&mut out));
    }
    framer
        .finish(&mut |record, at| decoder.push(record, at, &mut out))
        .expect("demo rows decode");
    decoder.finish(&mut out).expect("demo rows decode");
    take(out);
}

/// Decodes `input` as a load does, dropping each batch once it is ready (a load hands it to
/// the encoder and does not keep it), and counts the rows.
#[allow(
    dead_code,
    reason = "the decode bench's; the encode bench keeps its batches"
)]
pub fn decode_rows(input: &Bytes, table: &TableSchema, threads: usize) -> usize {
    let mut rows = 0;
    decode_into(input, table, threads, |batches| {
        rows += batches.iter().map(|d| d.batch.num_rows()).sum::<usize>();
    });
    rows
}

/// Every batch of `input`, decoded on the caller's thread.
#[allow(
    dead_code,
    reason = "the encode bench's input; the decode bench drops its batches"
)]
pub fn decode(input: &Bytes, table: &TableSchema) -> Vec<Decoded> {
    let mut all = Vec::new();
    decode_into(input, table, 1, |batches| all.extend(batches));
    all
}
