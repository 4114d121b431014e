//! `--decode-threads`: decoding spread over threads lands the same rows in the same order,
//! fails on the same record with the same message, and sets aside the same records.

use crate::common::*;

/// `n` varied records: multi-byte text, nulls, nested values, timestamps; record `bad`
/// (1-based), if any, has an amount no number column takes.
fn records(n: u64, bad: Option<u64>) -> Vec<u8> {
    let mut out = String::new();
    for i in 1..=n {
        let amount = if Some(i) == bad {
            "\"lots\"".to_string()
        } else {
            format!("{}.{}", i * 7, i % 100)
        };
        let note = match i % 3 {
            0 => "null".to_string(),
            1 => format!("\"naïve 日本 {i}\""),
            _ => format!("{{\"k\":[{i},\"x\"]}}"),
        };
        out.push_str(&format!(
            "{{\"id\":{i},\"amount\":{amount},\"note\":{note},\"at\":\"2024-02-{:02}T10:{:02}:00Z\"}}\n",
            i % 28 + 1,
            i % 60
        ));
    }
    out.into_bytes()
}

async fn load(table: &str, threads: &str, input: Vec<u8>, extra: &[&str]) -> Run {
    let mut args = vec![
        "load",
        "-",
        "--table",
        table,
        "--decode-threads",
        threads,
        "--batch-size",
        "1000",
    ];
    args.extend_from_slice(extra);
    apitap(&args, Some(input)).await
}

/// Loads `input` as [`load`] does with `--on-error reject`, into a reject file of its own in
/// `dir`; returns the reject file's text.
async fn load_rejecting(
    table: &str,
    threads: &str,
    input: Vec<u8>,
    extra: &[&str],
    dir: &std::path::Path,
) -> String {
    let file = dir.join(format!("rejects-{threads}.ndjson"));
    let mut args = extra.to_vec();
    args.extend([
        "--on-error",
        "reject",
        "--reject-file",
        file.to_str().unwrap(),
    ]);
    let run = load(table, threads, input, &args).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::read_to_string(&file).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_land_the_same_rows_in_the_same_order() {
    let db = client().await;
    let schema = fresh_schema(&db, "decode_threads").await;
    let (one, three) = (format!("{schema}.one"), format!("{schema}.three"));
    for (table, threads) in [(&one, "1"), (&three, "3")] {
        let run = load(table, threads, records(30_000, None), &[]).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let same: bool = db
        .query_one(
            &format!(
                "SELECT (SELECT array_agg(t ORDER BY ctid)::text FROM {one} t)
                      = (SELECT array_agg(t ORDER BY ctid)::text FROM {three} t)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same, "the tables differ");
    assert_eq!(count(&db, &three).await, 30_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_fail_on_the_same_record_and_set_aside_the_same_ones() {
    let db = client().await;
    let schema = fresh_schema(&db, "decode_threads_bad").await;
    let table = format!("{schema}.items");
    // The table exists with a numeric amount, so the bad record is refused by its column.
    let run = load(&table, "1", records(10, None), &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut messages = Vec::new();
    for threads in ["1", "3"] {
        let run = load(&table, threads, records(20_000, Some(17_777)), &[]).await;
        assert_fails(&run, "record 17777");
        messages.push(run.stderr);
    }
    assert_eq!(messages[0], messages[1]);
    assert_eq!(count(&db, &table).await, 10);

    let dir = tempfile::tempdir().unwrap();
    let mut rejects = Vec::new();
    for threads in ["1", "3"] {
        let input = records(20_000, Some(17_777));
        rejects.push(load_rejecting(&table, threads, input, &[], dir.path()).await);
    }
    assert_eq!(rejects[0], rejects[1]);
    assert!(rejects[0].contains("\"record\":17777"), "{}", rejects[0]);
    assert_eq!(count(&db, &table).await, 10 + 2 * 19_999);
}

/// Regression: a value its column refuses was checked only when its batch was built, so a
/// later line the framer refuses (too long) or the scanner refuses (malformed) was reported
/// instead, on one thread as on several. The earliest bad line is the one named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_earliest_bad_line_is_named_whatever_comes_after_it() {
    let db = client().await;
    let schema = fresh_schema(&db, "decode_threads_earliest").await;
    let table = format!("{schema}.items");
    let run = load(&table, "1", records(10, None), &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let too_long = format!("{{\"id\":1,\"note\":\"{}\"}}\n", "x".repeat(600));
    for later in [too_long.as_str(), "{\"id\":\n"] {
        for threads in ["1", "3"] {
            let mut input = records(4, Some(3));
            input.extend_from_slice(later.as_bytes());
            let run = load(&table, threads, input, &["--max-record-bytes", "500"]).await;
            assert_fails(
                &run,
                "line 3 (record 3): column \"amount\": \"lots\" is not a number",
            );
            assert!(!run.stderr.contains("line 5"), "{}", run.stderr);
        }
    }
    assert_eq!(count(&db, &table).await, 10);
}

/// `records(n, bad)` with a blank line after every 1,000th record, and record `long` made
/// longer than 2,000 bytes: record r is then on line r + (r - 1) / 1000.
fn records_with_blanks(n: u64, bad: u64, long: u64) -> Vec<u8> {
    let text = String::from_utf8(records(n, Some(bad))).unwrap();
    let mut out = String::new();
    for (i, line) in (1..).zip(text.lines()) {
        if i == long {
            out.push_str(&format!("{{\"id\":{i},\"note\":\"{}\"}}", "x".repeat(3000)));
        } else {
            out.push_str(line);
        }
        out.push('\n');
        if i % 1000 == 0 {
            out.push_str(if i % 2000 == 0 { "\n" } else { " \t\r\n" });
        }
    }
    out.into_bytes()
}

/// NDJSON past the planner's sample goes to the decode workers as text, and each numbers the
/// lines of its job from 1: errors and set-aside records must still name the line and record
/// one thread names, across blank lines and a line too long to keep far into the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_found_by_the_workers_are_numbered_as_on_one_thread() {
    let db = client().await;
    let schema = fresh_schema(&db, "decode_threads_lines").await;
    let table = format!("{schema}.items");
    let run = load(&table, "1", records(10, None), &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let input = || records_with_blanks(20_000, 17_777, 15_000);
    for threads in ["1", "3"] {
        let run = load(&table, threads, input(), &["--max-record-bytes", "2000"]).await;
        assert_fails(
            &run,
            "line 15014: a record is longer than the limit of 2000 bytes",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for threads in ["1", "3"] {
        let limit = ["--max-record-bytes", "2000"];
        let rejects: Vec<serde_json::Value> =
            load_rejecting(&table, threads, input(), &limit, dir.path())
                .await
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
        let seen: Vec<(u64, u64, &str)> = rejects
            .iter()
            .map(|r| {
                (
                    r["record"].as_u64().unwrap(),
                    r["line"].as_u64().unwrap(),
                    r["reason"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    15_000,
                    15_014,
                    "line 15014 (record 15000): the record is longer than --max-record-bytes allows"
                ),
                (
                    17_777,
                    17_794,
                    "line 17794 (record 17777): column \"amount\": \"lots\" is not a number (double precision)"
                ),
            ],
            "{threads} threads"
        );
    }
    assert_eq!(count(&db, &table).await, 10 + 2 * 19_998);
}
