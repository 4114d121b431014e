//! Input built to break a loader: deep nesting, records at and past the size limit, bytes
//! that are not UTF-8, raw control characters, text that is almost JSON. None may crash the
//! process: each fails the load with one clear line (the table unchanged), or with
//! `--on-error reject` is set aside by name while every other record loads. Each is tried on
//! one thread and on three, where NDJSON past the (one-record) sample reaches the decode
//! workers as text and they find its lines.

use crate::common::*;

/// Records that must each be refused with `reason` (a part of the message), built around the
/// good record `{"id": N, "name": "ok"}`.
fn hostile_lines() -> Vec<(Vec<u8>, &'static str)> {
    let deep_array = format!("{{\"id\": 2, \"name\": {}}}", "[".repeat(200_000));
    let deep_closed = format!(
        "{{\"id\": 3, \"name\": {}{}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let deep_objects = format!("{{\"id\": 4, \"name\": {}", "{\"a\":".repeat(100_000));
    let too_long = format!("{{\"id\": 5, \"name\": \"{}\"}}", "x".repeat(2_000_000));
    vec![
        (deep_array.into_bytes(), "nested deeper than 10000 levels"),
        (deep_closed.into_bytes(), "nested deeper than 10000 levels"),
        (deep_objects.into_bytes(), "nested deeper than 10000 levels"),
        (too_long.into_bytes(), "longer than"),
        (
            b"{\"id\": 6, \"name\": \"\xff\xfe\"}".to_vec(),
            "invalid UTF-8",
        ),
        (
            b"{\"id\": 7, \"name\": \"a\x00b\"}".to_vec(),
            "control character (U+0000)",
        ),
        (
            b"{\"id\": 8, \"name\": \"tab\there\"}".to_vec(),
            "control character (U+0009)",
        ),
        (
            b"{\"id\": 9, \"name\": 01}".to_vec(),
            "a number must not start with 0",
        ),
        (
            b"{\"id\": 10 \"name\": \"x\"}".to_vec(),
            "expected ',' or '}'",
        ),
        (b"{\"id\": 11, \"name\": \"\\ud800\"}".to_vec(), "surrogate"),
        (b"{\"id\": 12, \"name\": \"\\u0000\"}".to_vec(), "\\u0000"),
    ]
}

fn good(id: u32) -> Vec<u8> {
    format!("{{\"id\": {id}, \"name\": \"ok\"}}").into_bytes()
}

/// Good records with ids from 1,000 on, more than the fetch stage's first chunk holds: what
/// follows them reaches the decode workers as text (on more than one thread).
fn padding() -> Vec<Vec<u8>> {
    (1_000..1_000 + PADDING as u32).map(good).collect()
}

const PADDING: usize = 12_000;

/// `--decode-threads` and a sample of one record: one thread, or three finding lines.
const THREADS: [[&str; 4]; 2] = [
    ["--decode-threads", "1", "--sample", "1"],
    ["--decode-threads", "3", "--sample", "1"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_fail_the_load_cleanly() {
    let db = client().await;
    let schema = fresh_schema(&db, "hostile_fail").await;
    let table = guarded_table(&db, &schema).await;
    for ((line, reason), threads) in hostile_lines()
        .into_iter()
        .flat_map(|hostile| THREADS.map(|threads| (hostile.clone(), threads)))
    {
        let mut input = good(100);
        input.push(b'\n');
        for good in padding() {
            input.extend_from_slice(&good);
            input.push(b'\n');
        }
        input.extend_from_slice(&line);
        input.push(b'\n');
        let mut args = vec![
            "load",
            "-",
            "--table",
            &table,
            "--max-record-bytes",
            "1000000",
        ];
        args.extend(threads);
        let run = apitap(&args, Some(input)).await;
        assert_fails(&run, reason);
        let at = format!("line {}", PADDING + 2);
        assert!(run.stderr.contains(&at), "{threads:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
        assert!(run.stderr.len() < 1000, "a short message: {}", run.stderr);
        assert_unchanged(&db, &table).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_are_set_aside_and_the_rest_loads() {
    let db = client().await;
    let schema = fresh_schema(&db, "hostile_reject").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.ndjson");
    for (format, threads) in ["ndjson", "json"]
        .into_iter()
        .flat_map(|format| THREADS.map(|threads| (format, threads)))
    {
        db.batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint, name text)"
        ))
        .await
        .unwrap();
        let mut hostile = hostile_lines();
        if format == "json" {
            // An array element whose brackets never close runs to the end of the input: no
            // framer can find where the next element starts. Those fail the load instead.
            hostile.retain(|(line, _)| {
                let open = line.iter().filter(|&&b| b == b'[' || b == b'{').count();
                let closed = line.iter().filter(|&&b| b == b']' || b == b'}').count();
                open == closed
            });
        }
        let mut records = vec![good(1)];
        records.extend(padding());
        records.extend(hostile.iter().map(|(line, _)| line.clone()));
        records.push(good(13));
        let input = match format {
            "ndjson" => records.join(&b'\n'),
            _ => [b"[".to_vec(), records.join(&b','), b"]".to_vec()].concat(),
        };
        let mut args = vec![
            "load",
            "-",
            "--table",
            &table,
            "--format",
            format,
            "--max-record-bytes",
            "1000000",
            "--batch-size",
            "3",
            "--on-error",
            "reject",
            "--reject-file",
            rejects.to_str().unwrap(),
        ];
        args.extend(threads);
        let run = apitap(&args, Some(input)).await;
        assert_eq!(run.code, 0, "{format} {threads:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        let ids: Vec<i64> = db
            .query(
                &format!("SELECT id FROM {table} WHERE id < 1000 ORDER BY id"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, vec![1, 13], "{format} {threads:?}");
        assert_eq!(
            count(&db, &table).await,
            2 + PADDING as i64,
            "{format} {threads:?}"
        );
        let rejected: Vec<serde_json::Value> = std::fs::read_to_string(&rejects)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rejected.len(), hostile.len(), "{format} {threads:?}");
        for (entry, (_, reason)) in rejected.iter().zip(&hostile) {
            let got = entry["reason"].as_str().unwrap();
            assert!(
                got.contains(reason),
                "{format} {threads:?}: {got:?} lacks {reason:?}"
            );
        }
        assert_eq!(
            rejected
                .iter()
                .map(|r| r["record"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            (2 + PADDING as u64..2 + (PADDING + hostile.len()) as u64).collect::<Vec<u64>>(),
            "{format} {threads:?}"
        );
        if format == "ndjson" {
            // One record per line: each set-aside record names its own line.
            for entry in &rejected {
                assert_eq!(entry["line"], entry["record"], "{threads:?}: {entry}");
            }
        }
    }
}
