//! `--nested tables` in every write mode: a record is one unit across the family (it
//! fails or is set aside with all its rows), replace swaps the family together, merge gives
//! each merged parent exactly its last record's children, commit points carry the children.

use super::tables::{input, tables};
use crate::common::*;

/// Every table of the family `schema.t` and its row count.
async fn family_counts(db: &tokio_postgres::Client, schema: &str) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for table in ["t", "t__items", "t__items__tags"] {
        let name = format!("{schema}.{table}");
        if table_exists(db, &name).await {
            counts.push((table.to_string(), count(db, &name).await));
        }
    }
    counts
}

/// The rows of `table` as text, ordered by their columns.
async fn rows_of(db: &tokio_postgres::Client, table: &str, columns: &str) -> Vec<String> {
    db.query(
        &format!("SELECT concat_ws('|', {columns}) FROM {table} ORDER BY 1"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_fails_anywhere_leaves_every_table_unchanged_or_is_set_aside_whole() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_units").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let good = input(
        &dir,
        "good.ndjson",
        &[
            r#"{"id": 1, "items": [{"n": 1, "tags": ["a", "b"]}, {"n": 2, "tags": []}]}"#,
            r#"{"id": 2, "items": []}"#,
        ],
    );
    let run = tables(&good, &table, &["--key", "id"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let before = family_counts(&db, &schema).await;
    assert_eq!(
        before,
        [
            ("t".to_string(), 2),
            ("t__items".to_string(), 2),
            ("t__items__tags".to_string(), 2)
        ]
    );
    let bad = input(
        &dir,
        "bad.ndjson",
        &[
            r#"{"id": 3, "items": [{"n": 3, "tags": ["c"]}]}"#,
            r#"{"id": 4, "items": [{"n": "four", "tags": ["d"]}]}"#,
            r#"{"id": 5, "items": [{"n": 5, "tags": ["e"]}]}"#,
        ],
    );
    let run = tables(&bad, &table, &["--key", "id"]).await;
    assert_fails(
        &run,
        &format!(
            "{bad}: line 2 (record 2): column \"items[].n\": \"four\" is not an integer (bigint)"
        ),
    );
    assert_eq!(family_counts(&db, &schema).await, before);
    let rejects = dir.path().join("rejects.ndjson");
    let run = tables(
        &bad,
        &table,
        &[
            "--key",
            "id",
            "--on-error",
            "reject",
            "--reject-file",
            rejects.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        family_counts(&db, &schema).await,
        [
            ("t".to_string(), 4),
            ("t__items".to_string(), 4),
            ("t__items__tags".to_string(), 4)
        ]
    );
    let parents: Vec<i64> = db
        .query(
            &format!("SELECT DISTINCT _parent_id FROM {table}__items__tags ORDER BY 1"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(parents, [1, 3, 5]);
    let set_aside = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(set_aside.lines().count(), 1, "{set_aside}");
    assert!(set_aside.contains(r#"\"n\": \"four\""#), "{set_aside}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_swaps_the_whole_family_together_or_leaves_it() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_replace").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let first = input(
        &dir,
        "first.ndjson",
        &[
            r#"{"id": 1, "items": [{"n": 1, "tags": ["a"]}]}"#,
            r#"{"id": 2, "items": [{"n": 2, "tags": ["b", "c"]}]}"#,
        ],
    );
    let run = tables(&first, &table, &["--key", "id"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let second = input(
        &dir,
        "second.ndjson",
        &[r#"{"id": 7, "items": [{"n": 7, "tags": ["z"], "new": true}]}"#],
    );
    let replace = ["--key", "id", "--mode", "replace"];
    let run = tables(&second, &table, &replace).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "{table}__items: 1 rows, added column(s) new; {table}__items__tags: 1 rows"
        )),
        "{}",
        run.stderr
    );
    let tags: Vec<(i64, String)> = db
        .query(
            &format!("SELECT _parent_id, value FROM {table}__items__tags"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(tags, [(7, "z".to_string())]);
    // A replace that fails at its last record leaves the whole family as it was.
    let broken = input(
        &dir,
        "broken.ndjson",
        &[
            r#"{"id": 8, "items": [{"n": 8, "tags": ["y"]}]}"#,
            r#"{"id": 9, "items": [{"n": 9"#,
        ],
    );
    let run = tables(&broken, &table, &replace).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        family_counts(&db, &schema).await,
        [
            ("t".to_string(), 1),
            ("t__items".to_string(), 1),
            ("t__items__tags".to_string(), 1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_gives_each_merged_parent_the_children_of_its_last_record_and_leaves_the_same_alone()
{
    let db = client().await;
    let schema = fresh_schema(&db, "tables_merge").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let first = input(
        &dir,
        "first.ndjson",
        &[
            r#"{"id": 1, "items": [{"n": 1, "tags": ["a"]}, {"n": 2, "tags": ["b", "c"]}]}"#,
            r#"{"id": 2, "items": [{"n": 3, "tags": []}]}"#,
            r#"{"id": 4, "items": [{"n": 9, "tags": ["kept"]}]}"#,
        ],
    );
    let merge = ["--key", "id", "--mode", "merge"];
    let run = tables(&first, &table, &merge).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let version = |n: i32| {
        let db = &db;
        let table = table.clone();
        async move {
            db.query_one(
                &format!("SELECT xmin::text FROM {table}__items WHERE n = $1"),
                &[&(n as i64)],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        }
    };
    let (unchanged, untouched) = (version(1).await, version(9).await);
    let second = input(
        &dir,
        "second.ndjson",
        &[
            r#"{"id": 1, "items": [{"n": 0, "tags": ["x"]}, {"n": 0}, {"n": 0}]}"#,
            r#"{"id": 2, "items": []}"#,
            r#"{"id": 3, "items": [{"n": 5, "tags": ["d"]}]}"#,
            r#"{"id": 1, "items": [{"n": 1, "tags": ["a"]}, {"n": 20, "tags": ["b"]}]}"#,
        ],
    );
    let run = tables(&second, &table, &merge).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(rows_of(&db, &table, "id").await, ["1", "2", "3", "4"]);
    assert_eq!(
        rows_of(&db, &format!("{table}__items"), "_parent_id, _idx, n").await,
        ["1|0|1", "1|1|20", "3|0|5", "4|0|9"]
    );
    assert_eq!(
        rows_of(
            &db,
            &format!("{table}__items__tags"),
            "_parent_id, _parent_idx, _idx, value"
        )
        .await,
        ["1|0|0|a", "1|1|0|b", "3|0|0|d", "4|0|0|kept"]
    );
    // A child row the merge gives again as it was is left alone, as is a parent's not merged.
    assert_eq!(version(1).await, unchanged);
    assert_eq!(version(9).await, untouched);
}

/// `/pages?page=P`: NDJSON pages of 10 records (50 in all), record `id` holding `id % 3`
/// items of one tag each; page 4 answers 503 while `broken` is set.
fn paged_records(broken: std::sync::Arc<std::sync::atomic::AtomicBool>) -> axum::Router {
    use axum::extract::Query;
    use std::sync::atomic::Ordering;
    axum::Router::new().route(
        "/pages",
        axum::routing::get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| {
                let broken = broken.load(Ordering::SeqCst);
                async move {
                    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                    if broken && page == 4 {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                    }
                    let first = (page - 1) * 10 + 1;
                    let body: String = (first..first + 10)
                        .filter(|id| *id <= 50)
                        .map(|id| {
                            let items: Vec<String> = (0..id % 3)
                                .map(|i| format!("{{\"n\": {i}, \"tags\": [\"t{id}\"]}}"))
                                .collect();
                            format!("{{\"id\": {id}, \"items\": [{}]}}\n", items.join(", "))
                        })
                        .collect();
                    (axum::http::StatusCode::OK, body)
                }
            },
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commit_point_commits_the_children_of_its_pages() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let db = client().await;
    let schema = fresh_schema(&db, "tables_commits").await;
    let table = format!("{schema}.t");
    let broken = std::sync::Arc::new(AtomicBool::new(true));
    let addr = serve(paged_records(broken.clone())).await;
    let source = format!("http://{addr}/pages");
    let args = [
        "--key",
        "id",
        "--pagination",
        "{kind: page_number, page_size: 10}",
        "--commit-every",
        "2",
        "--retry",
        "{max_attempts: 1}",
    ];
    let run = tables(&source, &table, &args).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("20 rows in 1 commits are in the table"),
        "{}",
        run.stderr
    );
    // Records 1–20 are in, each with its items (id % 3 of them) and their tags.
    let items: i64 = (1..=20).map(|id| id % 3).sum();
    assert_eq!(
        family_counts(&db, &schema).await,
        [
            ("t".to_string(), 20),
            ("t__items".to_string(), items),
            ("t__items__tags".to_string(), items)
        ]
    );
    broken.store(false, Ordering::SeqCst);
    let run = tables(&source, &table, &args).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let items: i64 = (1..=50).map(|id| id % 3).sum();
    assert_eq!(
        family_counts(&db, &schema).await,
        [
            ("t".to_string(), 50),
            ("t__items".to_string(), items),
            ("t__items__tags".to_string(), items)
        ]
    );
    let orphans: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM {table}__items__tags g WHERE NOT EXISTS \
                 (SELECT 1 FROM {table}__items c WHERE c._parent_id = g._parent_id AND c._idx = g._parent_idx)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);
}

/// More child rows than one part of the spool holds (32 MiB of COPY data): the writer COPYs
/// the family part by part while the rest is decoded, every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_larger_than_a_part_lands_whole() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_parts").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let elements: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    let elements = elements.join(",");
    let lines: Vec<String> = (1..=20_000)
        .map(|id| format!(r#"{{"id": {id}, "a": [{elements}]}}"#))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let source = input(&dir, "parts.ndjson", &lines);
    let run = tables(&source, &table, &["--key", "id", "--mode", "replace"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let facts: (i64, i64, i64, i64) = db
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT _parent_id), sum(value)::bigint, \
                 count(*) FILTER (WHERE value = _idx) FROM {table}__a"
            ),
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .unwrap();
    assert_eq!(
        facts,
        (1_200_000, 20_000, 20_000 * (59 * 60 / 2), 1_200_000)
    );
    assert_eq!(count(&db, &table).await, 20_000);
}
