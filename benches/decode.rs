//! NDJSON → Arrow record batches typed for PostgreSQL, on demo API rows.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;

fn decode(c: &mut Criterion) {
    let input = common::ndjson();
    let table = common::table(&input);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(20);
    group.bench_function("ndjson_demo_rows_100k", |b| {
        b.iter(|| common::decode_rows(&input, &table, 1))
    });
    // The same on N worker threads, which find the lines of the jobs the caller's thread
    // cuts at newlines, and decode them.
    for threads in [2, 3] {
        group.bench_function(format!("ndjson_demo_rows_100k_{threads}_threads"), |b| {
            b.iter(|| common::decode_rows(&input, &table, threads))
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
