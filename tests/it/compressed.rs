//! Compressed input, recognised by its magic bytes: gzip, zstd and bzip2, from a file,
//! stdin or HTTP; a damaged or hostile stream is a clear error that leaves the table
//! unchanged.

use std::io::Write as _;

use axum::Router;
use axum::routing::get;

use crate::common::*;

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(data).unwrap();
    bz.finish().unwrap()
}

/// Compresses a whole input in one format.
type Compress = fn(&[u8]) -> Vec<u8>;

/// Each format, by its usual file ending, and how to make it.
const FORMATS: [(&str, Compress); 3] = [("gz", gzip), ("zst", zstd), ("bz2", bzip2)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_loads_from_a_file_members_concatenated_and_cut_short_is_named() {
    let db = client().await;
    let schema = fresh_schema(&db, "compressed").await;
    let n = 2000;
    let rows = demo_ndjson(n);
    let half = rows.len() / 2
        + rows[rows.len() / 2..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap()
        + 1;
    let dir = tempfile::tempdir().unwrap();
    for (ending, compress) in FORMATS {
        // Two members, as `cat a.EXT b.EXT` makes them: one file.
        let mut members = compress(&rows[..half]);
        members.extend(compress(&rows[half..]));
        let file = dir.path().join(format!("rows.ndjson.{ending}"));
        std::fs::write(&file, &members).unwrap();
        let table = format!("{schema}.from_{ending}");
        let run = apitap(&["load", file.to_str().unwrap(), "--table", &table], None).await;
        assert_eq!(run.code, 0, "{ending}: {}", run.stderr);
        // Every row once: as many distinct ids as rows, and their sum.
        let whole = (n as i64, n as i64, (n * (n + 1) / 2) as i64);
        assert_eq!(id_facts(&db, &table).await, whole, "{ending}");

        let whole = compress(&rows);
        let cut = dir.path().join(format!("cut.ndjson.{ending}"));
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        let table = format!("{schema}.cut_{ending}");
        let run = apitap(&["load", cut.to_str().unwrap(), "--table", &table], None).await;
        assert_eq!(run.code, 1, "{ending}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("(the input ends inside its compressed data: a file cut short, or a download that stopped)"),
            "{ending}: {}",
            run.stderr
        );
        assert!(!table_exists(&db, &table).await, "{ending}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_loads_from_stdin_and_http() {
    let db = client().await;
    let schema = fresh_schema(&db, "zstd").await;
    let n = 3000;
    let rows = demo_ndjson(n);
    let served = zstd(&rows);
    let addr = serve(Router::new().route(
        "/rows.zst",
        get(move || {
            let body = served.clone();
            async move { body }
        }),
    ))
    .await;
    let url = format!("http://{addr}/rows.zst");
    for (table, source, stdin) in [
        ("from_stdin", "-", Some(zstd(&rows))),
        ("from_http", url.as_str(), None),
    ] {
        let table = format!("{schema}.{table}");
        let run = apitap(&["load", source, "--table", &table], stdin).await;
        assert_eq!(run.code, 0, "{table}: {}", run.stderr);
        // Every row once: as many distinct ids as rows, and their sum.
        let whole = (n as i64, n as i64, (n * (n + 1) / 2) as i64);
        assert_eq!(id_facts(&db, &table).await, whole, "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_hostile_zstd_is_a_clear_error_and_loads_nothing() {
    let db = client().await;
    let schema = fresh_schema(&db, "zstd_bad").await;
    let dir = tempfile::tempdir().unwrap();
    let rows = demo_ndjson(2000);

    let whole = zstd(&rows);
    let truncated = dir.path().join("truncated.zst");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();

    // A frame that asks for a 2 GiB window: zstd refuses it rather than take the memory.
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    encoder.window_log(31).unwrap();
    encoder.long_distance_matching(true).unwrap();
    encoder.write_all(&rows).unwrap();
    let wide = dir.path().join("wide-window.zst");
    std::fs::write(&wide, encoder.finish().unwrap()).unwrap();

    // A record of 256 MiB in a few KiB: streamed, never held whole; the record limit stops it.
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    encoder.write_all(b"{\"id\": 1, \"text\": \"").unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..256 {
        encoder.write_all(&chunk).unwrap();
    }
    let bomb = dir.path().join("bomb.zst");
    std::fs::write(&bomb, encoder.finish().unwrap()).unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 100_000);

    for (name, path, expected) in [
        (
            "truncated",
            &truncated,
            "zstd stream did not finish (the input ends inside its compressed data",
        ),
        ("wide", &wide, "Frame requires too much memory"),
        (
            "bomb",
            &bomb,
            "a record is longer than the limit of 1048576 bytes",
        ),
    ] {
        let table = format!("{schema}.{name}");
        let path = path.to_str().unwrap();
        let run = apitap(
            &[
                "load",
                path,
                "--table",
                &table,
                "--max-record-bytes",
                "1048576",
            ],
            None,
        )
        .await;
        assert_eq!(run.code, 1, "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains(path) && run.stderr.contains(expected),
            "{name}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(!table_exists(&db, &table).await, "{name}");
    }
}
