//! Arrow record batches → PostgreSQL binary COPY bytes, on demo API rows.

use apitap::encode::CopyEncoder;
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

criterion_group!(benches, encode);
criterion_main!(benches);
