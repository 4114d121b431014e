//! Compressed input, recognised by its magic bytes: gzip and zstd, from a file, stdin or
//! HTTP; a damaged or hostile stream is a clear error that leaves the table unchanged.

use std::io::Write as _;

use axum::Router;
use axum::routing::get;

use crate::common::*;

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_loads_from_a_file_stdin_and_http_frames_concatenated() {
    let db = client().await;
    let schema = fresh_schema(&db, "zstd").await;
    let n = 3000;
    let rows = demo_ndjson(n);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.ndjson.zst");
    std::fs::write(&file, zstd(&rows)).unwrap();
    // `zstd -c a >> all.zst`: two frames, one file.
    let half = rows.len() / 2
        + rows[rows.len() / 2..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap()
        + 1;
    let mut frames = zstd(&rows[..half]);
    frames.extend(zstd(&rows[half..]));
    let concatenated = dir.path().join("two-frames.zst");
    std::fs::write(&concatenated, &frames).unwrap();
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
        ("from_file", file.to_str().unwrap(), None),
        ("from_frames", concatenated.to_str().unwrap(), None),
        ("from_stdin", "-", Some(zstd(&rows))),
        ("from_http", url.as_str(), None),
    ] {
        let table = format!("{schema}.{table}");
        let run = apitap(&["load", source, "--table", &table], stdin).await;
        assert_eq!(run.code, 0, "{table}: {}", run.stderr);
        let (rows, sum): (i64, i64) = db
            .query_one(
                &format!("SELECT count(*), sum(id)::bigint FROM {table}"),
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((rows, sum), (n as i64, (n * (n + 1) / 2) as i64), "{table}");
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
