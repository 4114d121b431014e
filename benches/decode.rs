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
    // The same rows with `metadata` flattened into three columns: each record's object is
    // scanned a second time, into its fields.
    let flattened = common::table_flattened(&input, 10);
    group.bench_function("ndjson_demo_rows_100k_flatten", |b| {
        b.iter(|| common::decode_rows(&input, &flattened, 1))
    });
    // The same on N worker threads, which find the lines of the jobs the caller's thread
    // cuts at newlines, and decode them.
    for threads in [2, 3] {
        group.bench_function(format!("ndjson_demo_rows_100k_{threads}_threads"), |b| {
            b.iter(|| common::decode_rows(&input, &table, threads))
        });
    }
    // What this machine gives two threads with nothing to coordinate: each decodes half the
    // input on its own. Shared and virtual machines often give two busy threads far less
    // than twice one's speed, which no decoder can make up; read the 2-thread figure against
    // this one as well as against one thread's. (A halved input has nothing to even out
    // either: a thread its core slows holds up the whole, where the workers' queue does not.)
    let middle = input.len() / 2;
    let cut = middle + memchr::memchr(b'\n', &input[middle..]).map_or(0, |n| n + 1);
    let halves = [input.slice(..cut), input.slice(cut..)];
    group.bench_function("ndjson_demo_rows_100k_2_halves_alone", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                let decoding = halves
                    .iter()
                    .map(|half| scope.spawn(|| common::decode_rows(half, &table, 1)))
                    .collect::<Vec<_>>();
                decoding
                    .into_iter()
                    .map(|thread| thread.join().expect("decode thread"))
                    .sum::<usize>()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
