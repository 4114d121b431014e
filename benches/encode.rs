//! Arrow record batches → PostgreSQL binary COPY bytes, on demo API rows.

use std::sync::Arc;

use apitap::encode::CopyEncoder;
use apitap::encode::repeats::RepeatedKeys;
use apitap::schema::PgType;
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;

fn encode(c: &mut Criterion) {
    let input = common::ndjson();
    let table = common::table(&input);
    let batches = common::decode(&input, &table);
    let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let mut out = BytesMut::new();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(common::ROWS));
    group.sample_size(30);
    group.bench_function("copy_binary_demo_rows_100k", |b| {
        let mut encoder = CopyEncoder::new(names.clone(), table.pg_types());
        b.iter(|| {
            out.clear();
            for d in &batches {
                encoder.encode(&d.batch, d.first_record, &mut out).unwrap();
            }
            out.len()
        })
    });
    group.finish();
}

/// Marking the repeated merge keys of a million rows (one bigint key, 2,000-row batches),
/// from a fresh filter each time, as a load starts with one: what a merge into an empty
/// table pays for COPYing its rows into it.
fn repeated_keys(c: &mut Criterion) {
    const ROWS: i64 = 1_000_000;
    const BATCH: i64 = 2_000;
    let batches: Vec<RecordBatch> = (0..ROWS / BATCH)
        .map(|b| {
            // Ids in a scattered order, as an API's keys may come.
            let ids: Int64Array = (0..BATCH)
                .map(|i| ((b * BATCH + i) * 7_919) % ROWS)
                .collect();
            RecordBatch::try_from_iter([("id", Arc::new(ids) as ArrayRef)]).unwrap()
        })
        .collect();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    group.bench_function("repeated_keys_1m_bigint", |b| {
        b.iter(|| {
            let mut keys = RepeatedKeys::new(vec![0], &[PgType::Int8]).unwrap();
            batches
                .iter()
                .filter(|batch| keys.mark(batch).is_some())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, encode, repeated_keys);
criterion_main!(benches);
